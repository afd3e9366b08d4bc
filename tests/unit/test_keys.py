"""broker._keys: the file-backed development key store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from broker._crypto import open_sealed, pseudonym, seal, sign_record
from broker._keys import KeyStore
from schemas import ConfigError, ReasonCode, SignatureError

AGENCY = "police-hampshire"
PRIVATE = ("signing.key", "encryption.key")
PUBLIC = ("signing.pub", "encryption.pub")


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "data" / "keys")


@pytest.fixture
def ready(store: KeyStore) -> KeyStore:
    assert store.init_pseudonym_secret()
    assert store.init_agency(AGENCY)
    return store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --------------------------------------------------------------------------- creation


def test_init_agency_creates_private_files_0600_and_dir_0700(ready: KeyStore) -> None:
    agency_dir = ready.root / AGENCY
    assert _mode(ready.root) == 0o700
    assert _mode(agency_dir) == 0o700
    for name in PRIVATE:
        assert _mode(agency_dir / name) == 0o600, name
    for name in PUBLIC:
        assert _mode(agency_dir / name) == 0o644, name
    assert sorted(p.name for p in agency_dir.iterdir()) == sorted(PRIVATE + PUBLIC)


def test_key_files_are_pem(ready: KeyStore) -> None:
    agency_dir = ready.root / AGENCY
    for name in PRIVATE:
        assert (agency_dir / name).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    for name in PUBLIC:
        assert (agency_dir / name).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_private_files_are_0600_even_with_a_permissive_umask(store: KeyStore) -> None:
    old = os.umask(0)
    try:
        store.init_pseudonym_secret()
        store.init_agency(AGENCY)
    finally:
        os.umask(old)
    for name in PRIVATE:
        assert _mode(store.root / AGENCY / name) == 0o600
    assert _mode(store.root / "pseudonym.secret") == 0o600
    assert _mode(store.root) == 0o700


def test_init_agency_refuses_to_overwrite(ready: KeyStore) -> None:
    agency_dir = ready.root / AGENCY
    before = _snapshot(agency_dir)
    assert ready.init_agency(AGENCY) is False
    assert _snapshot(agency_dir) == before


def test_init_agency_overwrite_replaces_keys_and_cache(ready: KeyStore) -> None:
    old_identity = ready.signing_identity(AGENCY)
    old_public = ready.encryption_public(AGENCY)
    assert ready.init_agency(AGENCY, overwrite=True) is True
    assert ready.signing_identity(AGENCY).key_id != old_identity.key_id
    assert ready.encryption_public(AGENCY) != old_public
    for name in PRIVATE:
        assert _mode(ready.root / AGENCY / name) == 0o600
    assert not [p for p in (ready.root / AGENCY).iterdir() if p.name.endswith(".tmp")]


def test_init_agency_refuses_to_complete_a_partial_directory(ready: KeyStore) -> None:
    (ready.root / AGENCY / "encryption.key").unlink()
    with pytest.raises(ConfigError) as info:
        ready.init_agency(AGENCY)
    assert info.value.code is ReasonCode.KEY_MISSING
    assert "--force" in info.value.hint


@pytest.mark.parametrize(
    "agency_id",
    [
        "",
        "-police",
        "Police",
        "police_hampshire",
        "../etc",
        "a/b",
        ".",
        "..",
        "police\n",
        "pólice",
        "a" * 64,
        " police",
    ],
)
def test_bad_agency_ids_are_rejected(store: KeyStore, agency_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        store.init_agency(agency_id)
    assert info.value.code is ReasonCode.CONFIG_INVALID
    assert info.value.hint
    with pytest.raises(ConfigError):
        store.signing_identity(agency_id)
    assert not store.root.exists()


@pytest.mark.parametrize("agency_id", ["a", "0", "safer-router", "a" * 63, "la-851"])
def test_good_agency_ids_are_accepted(store: KeyStore, agency_id: str) -> None:
    assert store.init_agency(agency_id)
    assert store.has_agency(agency_id)


def test_init_pseudonym_secret(store: KeyStore) -> None:
    assert store.init_pseudonym_secret() is True
    path = store.root / "pseudonym.secret"
    secret = path.read_bytes()
    assert len(secret) == 32
    assert _mode(path) == 0o600
    assert store.init_pseudonym_secret() is False
    assert path.read_bytes() == secret
    assert store.pseudonym_secret() == secret


def test_pseudonym_secrets_are_random(tmp_path: Path) -> None:
    one, two = KeyStore(tmp_path / "one"), KeyStore(tmp_path / "two")
    one.init_pseudonym_secret()
    two.init_pseudonym_secret()
    assert one.pseudonym_secret() != two.pseudonym_secret()


# --------------------------------------------------------------------------- loading


def test_loaded_keys_work_together(ready: KeyStore) -> None:
    identity = ready.signing_identity(AGENCY)
    assert identity.agency_id == AGENCY
    assert isinstance(ready.signing_public(AGENCY), Ed25519PublicKey)
    assert isinstance(ready.encryption_public(AGENCY), X25519PublicKey)
    assert identity.public_key == ready.signing_public(AGENCY)

    ring = ready.keyring([AGENCY])
    signature = sign_record(identity, schema_id=3, record_id="c-1", body=b"body")
    assert ring.verify(identity.key_id, signature, schema_id=3, record_id="c-1", body=b"body") == (
        AGENCY
    )

    sealed = seal(b"payload", ready.encryption_public(AGENCY), disclosure_id="d", recipient_id="r")
    opened = open_sealed(
        sealed, ready.encryption_private(AGENCY), disclosure_id="d", recipient_id="r"
    )
    assert opened == b"payload"
    assert len(pseudonym(ready.pseudonym_secret(), "nhs:9990000018")) == 32


def test_keyring_holds_only_the_named_agencies(ready: KeyStore) -> None:
    ready.init_agency("health-solent")
    ring = ready.keyring([AGENCY])
    other = ready.signing_identity("health-solent")
    with pytest.raises(SignatureError) as info:
        ring.lookup(other.key_id)
    assert info.value.code is ReasonCode.UNKNOWN_PUBLISHER


def test_loaded_keys_are_cached(ready: KeyStore) -> None:
    assert ready.signing_identity(AGENCY) is ready.signing_identity(AGENCY)
    assert ready.signing_public(AGENCY) is ready.signing_public(AGENCY)
    assert ready.encryption_private(AGENCY) is ready.encryption_private(AGENCY)
    assert ready.encryption_public(AGENCY) is ready.encryption_public(AGENCY)
    assert ready.pseudonym_secret() is ready.pseudonym_secret()


def test_has_agency_and_agencies(ready: KeyStore) -> None:
    ready.init_agency("safer-router")
    (ready.root / "not_an_agency").mkdir()
    (ready.root / "half-done").mkdir()
    assert ready.has_agency(AGENCY)
    assert not ready.has_agency("half-done")
    assert not ready.has_agency("education-hampshire")
    assert ready.agencies() == [AGENCY, "safer-router"]


def test_agencies_of_an_empty_store(store: KeyStore) -> None:
    assert store.agencies() == []


@pytest.mark.parametrize(
    "load",
    [
        lambda s: s.signing_identity(AGENCY),
        lambda s: s.signing_public(AGENCY),
        lambda s: s.encryption_private(AGENCY),
        lambda s: s.encryption_public(AGENCY),
        lambda s: s.pseudonym_secret(),
        lambda s: s.keyring([AGENCY]),
    ],
    ids=["signing", "signing-pub", "encryption", "encryption-pub", "secret", "keyring"],
)
def test_missing_keys_are_key_missing(store: KeyStore, load: object) -> None:
    with pytest.raises(ConfigError) as info:
        load(store)  # type: ignore[operator]
    assert info.value.code is ReasonCode.KEY_MISSING
    assert "safer keys init" in info.value.hint


def test_one_missing_file_is_key_missing(ready: KeyStore) -> None:
    (ready.root / AGENCY / "signing.pub").unlink()
    with pytest.raises(ConfigError) as info:
        ready.signing_public(AGENCY)
    assert info.value.code is ReasonCode.KEY_MISSING
    assert "signing.pub" in str(info.value)


@pytest.mark.parametrize("name", PRIVATE)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_private_key_readable_by_others_is_rejected(
    ready: KeyStore, name: str, mode: int
) -> None:
    path = ready.root / AGENCY / name
    path.chmod(mode)
    load = ready.signing_identity if name == "signing.key" else ready.encryption_private
    with pytest.raises(ConfigError) as info:
        load(AGENCY)
    assert info.value.code is ReasonCode.CONFIG_INVALID
    assert "chmod 600" in info.value.hint
    assert "PRIVATE KEY" not in str(info.value)
    path.chmod(0o600)
    load(AGENCY)


def test_a_0400_private_key_is_accepted(ready: KeyStore) -> None:
    (ready.root / AGENCY / "signing.key").chmod(0o400)
    ready.signing_identity(AGENCY)


def test_a_world_readable_pseudonym_secret_is_rejected(ready: KeyStore) -> None:
    (ready.root / "pseudonym.secret").chmod(0o644)
    with pytest.raises(ConfigError) as info:
        ready.pseudonym_secret()
    assert "chmod 600" in info.value.hint


def test_a_short_pseudonym_secret_is_rejected(ready: KeyStore) -> None:
    (ready.root / "pseudonym.secret").write_bytes(b"short")
    with pytest.raises(ConfigError) as info:
        ready.pseudonym_secret()
    assert info.value.code is ReasonCode.CONFIG_INVALID
    assert info.value.hint


def test_a_corrupt_private_key_is_config_invalid_without_its_content(ready: KeyStore) -> None:
    path = ready.root / AGENCY / "signing.key"
    path.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError) as info:
        ready.signing_identity(AGENCY)
    assert info.value.code is ReasonCode.CONFIG_INVALID
    assert info.value.hint
    assert "c2VjcmV0" not in str(info.value)
    assert info.value.__cause__ is None


def test_keys_of_the_wrong_type_are_rejected(ready: KeyStore) -> None:
    agency_dir = ready.root / AGENCY
    # Swap the signing and encryption private keys (both stay 0600).
    signing = (agency_dir / "signing.key").read_bytes()
    encryption = (agency_dir / "encryption.key").read_bytes()
    (agency_dir / "signing.key").write_bytes(encryption)
    (agency_dir / "encryption.key").write_bytes(signing)
    with pytest.raises(ConfigError) as info:
        ready.signing_identity(AGENCY)
    assert "Ed25519" in str(info.value)
    with pytest.raises(ConfigError):
        ready.encryption_private(AGENCY)


def test_a_private_key_not_matching_its_public_key_is_rejected(ready: KeyStore) -> None:
    ready.init_agency("health-solent")
    foreign = (ready.root / "health-solent" / "signing.key").read_bytes()
    (ready.root / AGENCY / "signing.key").write_bytes(foreign)
    with pytest.raises(ConfigError) as info:
        ready.signing_identity(AGENCY)
    assert "not a key pair" in str(info.value)
    assert info.value.hint
