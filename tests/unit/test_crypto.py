"""broker._crypto: signatures, keyring, envelope encryption, pseudonyms (DESIGN §4.4, §4.5)."""

from __future__ import annotations

import dataclasses
import re
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker._crypto import (
    ENVELOPE_ALGORITHM,
    Keyring,
    SealedPayload,
    SigningIdentity,
    key_id,
    open_sealed,
    pseudonym,
    record_signing_input,
    seal,
    sign_record,
    verify_record,
)
from schemas import ConfigError, CryptoError, ReasonCode, SignatureError, ValidationError

SCHEMA_ID = 7
RECORD_ID = "concern-0001"
BODY = b"\x02avro body bytes \x00\xff"
DISCLOSURE_ID = "d-5f1c"
RECIPIENT_ID = "portsmouth-csc"
PLAINTEXT = b'{"child":"Test Child","nhs":"9990000018"}'
SECRET = bytes(range(32))


@pytest.fixture
def identity() -> SigningIdentity:
    return SigningIdentity("police-hampshire", Ed25519PrivateKey.generate())


@pytest.fixture
def recipient() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def _sign(identity: SigningIdentity) -> bytes:
    return sign_record(identity, schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY)


# --------------------------------------------------------------------------- key ids


def test_key_id_is_16_hex_of_sha256_of_the_raw_public_key(identity: SigningIdentity) -> None:
    raw = identity.public_key.public_bytes_raw()
    assert re.fullmatch(r"[0-9a-f]{16}", key_id(raw))
    assert identity.key_id == key_id(raw)
    assert key_id(raw) != key_id(Ed25519PrivateKey.generate().public_key().public_bytes_raw())


def test_signing_identity_repr_hides_the_private_key(identity: SigningIdentity) -> None:
    assert "private_key" not in repr(identity)
    assert "police-hampshire" in repr(identity)


# --------------------------------------------------------------------------- signatures


def test_signing_input_is_domain_separated_and_length_prefixed() -> None:
    data = record_signing_input(schema_id=0x01020304, record_id="ab", body=b"xyz")
    assert data == b"SAFER-SIG-v1\x00" + b"\x01\x02\x03\x04" + b"\x00\x02" + b"ab" + b"xyz"


def test_signing_input_moving_bytes_between_record_id_and_body_changes_it() -> None:
    one = record_signing_input(schema_id=1, record_id="ab", body=b"c")
    two = record_signing_input(schema_id=1, record_id="a", body=b"bc")
    assert one != two


@pytest.mark.parametrize("schema_id", [-1, 2**32, True])
def test_signing_input_rejects_a_schema_id_out_of_range(schema_id: int) -> None:
    with pytest.raises(SignatureError) as info:
        record_signing_input(schema_id=schema_id, record_id=RECORD_ID, body=BODY)
    assert info.value.hint


def test_signing_input_rejects_an_oversized_record_id() -> None:
    with pytest.raises(SignatureError) as info:
        record_signing_input(schema_id=1, record_id="x" * 70_000, body=b"")
    assert info.value.code is ReasonCode.TOO_LARGE
    assert info.value.hint


def test_sign_verify_round_trip(identity: SigningIdentity) -> None:
    signature = _sign(identity)
    assert len(signature) == 64
    # Returns None (no boolean to forget to check); failure raises.
    verify_record(
        identity.public_key, signature, schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY
    )


def test_sign_verify_with_empty_record_id_and_body(identity: SigningIdentity) -> None:
    signature = sign_record(identity, schema_id=0, record_id="", body=b"")
    verify_record(identity.public_key, signature, schema_id=0, record_id="", body=b"")


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    "change",
    [
        {"schema_id": SCHEMA_ID + 1},
        {"record_id": "concern-0002"},
        {"record_id": RECORD_ID + " "},
        {"body": _flip(BODY, 0)},
        {"body": _flip(BODY, len(BODY) - 1)},
        {"body": BODY + b"\x00"},
        {"body": BODY[:-1]},
    ],
    ids=["schema-id", "record-id", "record-id-suffix", "body-first", "body-last", "longer", "cut"],
)
def test_verification_fails_when_anything_signed_changes(
    identity: SigningIdentity, change: dict[str, object]
) -> None:
    signature = _sign(identity)
    kwargs: dict[str, object] = {"schema_id": SCHEMA_ID, "record_id": RECORD_ID, "body": BODY}
    kwargs.update(change)
    with pytest.raises(SignatureError) as info:
        verify_record(identity.public_key, signature, **kwargs)  # type: ignore[arg-type]
    assert info.value.code is ReasonCode.SIGNATURE_INVALID
    assert info.value.hint


def test_verification_fails_for_every_single_bit_flip_in_the_body(
    identity: SigningIdentity,
) -> None:
    signature = _sign(identity)
    for index in range(len(BODY)):
        with pytest.raises(SignatureError):
            verify_record(
                identity.public_key,
                signature,
                schema_id=SCHEMA_ID,
                record_id=RECORD_ID,
                body=_flip(BODY, index),
            )


def test_verification_fails_for_a_wrong_key(identity: SigningIdentity) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError) as info:
        verify_record(other, _sign(identity), schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY)
    assert info.value.code is ReasonCode.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "signature", [b"", b"\x00" * 63, b"\x00" * 64, b"\x00" * 65], ids=["empty", "63", "64", "65"]
)
def test_verification_fails_for_a_malformed_signature(
    identity: SigningIdentity, signature: bytes
) -> None:
    with pytest.raises(SignatureError) as info:
        verify_record(
            identity.public_key, signature, schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY
        )
    assert info.value.code is ReasonCode.SIGNATURE_INVALID


def test_signature_error_message_carries_no_record_content(identity: SigningIdentity) -> None:
    body = b"Jane Doe 9990000018"
    signature = sign_record(identity, schema_id=1, record_id="r", body=body)
    with pytest.raises(SignatureError) as info:
        verify_record(identity.public_key, signature, schema_id=1, record_id="r", body=body + b"!")
    assert "Jane" not in str(info.value)
    assert "9990000018" not in str(info.value)


# --------------------------------------------------------------------------- keyring


def test_keyring_verify_returns_the_agency(identity: SigningIdentity) -> None:
    ring = Keyring()
    assert ring.add(identity.agency_id, identity.public_key) == identity.key_id
    agency = ring.verify(
        identity.key_id, _sign(identity), schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY
    )
    assert agency == "police-hampshire"
    assert ring.lookup(identity.key_id) == (identity.agency_id, identity.public_key)
    assert ring.key_ids() == [identity.key_id]


def test_keyring_verify_raises_on_a_bad_signature(identity: SigningIdentity) -> None:
    ring = Keyring()
    ring.add(identity.agency_id, identity.public_key)
    with pytest.raises(SignatureError) as info:
        ring.verify(
            identity.key_id, _sign(identity), schema_id=SCHEMA_ID, record_id=RECORD_ID, body=b"x"
        )
    assert info.value.code is ReasonCode.SIGNATURE_INVALID


def test_keyring_unknown_key_is_unknown_publisher(identity: SigningIdentity) -> None:
    ring = Keyring()
    with pytest.raises(SignatureError) as info:
        ring.lookup(identity.key_id)
    assert info.value.code is ReasonCode.UNKNOWN_PUBLISHER
    assert info.value.hint
    with pytest.raises(SignatureError) as info:
        ring.verify(
            identity.key_id, _sign(identity), schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY
        )
    assert info.value.code is ReasonCode.UNKNOWN_PUBLISHER


def test_keyring_bounds_an_attacker_supplied_key_id_in_messages() -> None:
    with pytest.raises(SignatureError) as info:
        Keyring().lookup("A" * 10_000)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("key_id", ["Poppy Walker", "9992048719", "PO2 8RL", "0123456789abcdef0"])
def test_keyring_never_echoes_a_key_id_that_is_not_one(key_id: str) -> None:
    # The message becomes a quarantine's audit reason: a name put in the key id header
    # must not be written to the append-only log.
    with pytest.raises(SignatureError) as info:
        Keyring().lookup(key_id)
    assert key_id not in str(info.value) and "malformed" in info.value.message


def test_keyring_names_a_well_formed_unknown_key_id() -> None:
    with pytest.raises(SignatureError) as info:
        Keyring().lookup("0123456789abcdef")
    assert "0123456789abcdef" in info.value.message


def test_keyring_revoked_key_is_key_revoked(identity: SigningIdentity) -> None:
    ring = Keyring()
    ring.add(identity.agency_id, identity.public_key)
    ring.revoke(identity.key_id)
    for call in (
        lambda: ring.lookup(identity.key_id),
        lambda: ring.verify(
            identity.key_id, _sign(identity), schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY
        ),
    ):
        with pytest.raises(SignatureError) as info:
            call()
        assert info.value.code is ReasonCode.KEY_REVOKED
        assert info.value.hint
    assert ring.key_ids() == []


def test_keyring_revocation_survives_adding_the_key_again(identity: SigningIdentity) -> None:
    ring = Keyring()
    ring.revoke(identity.key_id)
    ring.add(identity.agency_id, identity.public_key)
    with pytest.raises(SignatureError) as info:
        ring.lookup(identity.key_id)
    assert info.value.code is ReasonCode.KEY_REVOKED


def test_keyring_rejects_one_key_for_two_agencies(identity: SigningIdentity) -> None:
    ring = Keyring()
    ring.add(identity.agency_id, identity.public_key)
    ring.add(identity.agency_id, identity.public_key)  # idempotent for the same agency
    with pytest.raises(ConfigError) as info:
        ring.add("police-thames-valley", identity.public_key)
    assert info.value.hint


def test_keyring_a_signature_by_another_trusted_agency_fails(identity: SigningIdentity) -> None:
    other = SigningIdentity("health-solent", Ed25519PrivateKey.generate())
    ring = Keyring()
    ring.add(identity.agency_id, identity.public_key)
    ring.add(other.agency_id, other.public_key)
    # A record signed by `other` but claiming `identity`'s key id.
    with pytest.raises(SignatureError) as info:
        ring.verify(
            identity.key_id, _sign(other), schema_id=SCHEMA_ID, record_id=RECORD_ID, body=BODY
        )
    assert info.value.code is ReasonCode.SIGNATURE_INVALID


# --------------------------------------------------------------------------- envelopes


def _seal(recipient: X25519PrivateKey, plaintext: bytes = PLAINTEXT) -> SealedPayload:
    return seal(
        plaintext, recipient.public_key(), disclosure_id=DISCLOSURE_ID, recipient_id=RECIPIENT_ID
    )


def _open(
    sealed: SealedPayload,
    key: X25519PrivateKey,
    *,
    disclosure_id: str = DISCLOSURE_ID,
    recipient_id: str = RECIPIENT_ID,
) -> bytes:
    return open_sealed(sealed, key, disclosure_id=disclosure_id, recipient_id=recipient_id)


def test_seal_open_round_trip(recipient: X25519PrivateKey) -> None:
    sealed = _seal(recipient)
    assert PLAINTEXT not in sealed.ciphertext
    assert sealed.algorithm == ENVELOPE_ALGORITHM == "X25519-HKDF-SHA256+A256GCM"
    assert len(sealed.nonce) == 12
    assert len(sealed.wrap_nonce) == 12
    assert len(sealed.ephemeral_public_key) == 32
    assert len(sealed.wrapped_key) == 48
    assert sealed.recipient_key_id == key_id(recipient.public_key().public_bytes_raw())
    assert _open(sealed, recipient) == PLAINTEXT


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_seal_open_round_trip_sizes(recipient: X25519PrivateKey, size: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    assert _open(_seal(recipient, plaintext), recipient) == plaintext


def test_sealed_payload_survives_a_dict_round_trip(recipient: X25519PrivateKey) -> None:
    # Recipients rebuild the envelope from the decoded Avro record: SealedPayload(**payload).
    sealed = SealedPayload(**dataclasses.asdict(_seal(recipient)))
    assert _open(sealed, recipient) == PLAINTEXT


def test_two_seals_of_the_same_plaintext_differ(recipient: X25519PrivateKey) -> None:
    one, two = _seal(recipient), _seal(recipient)
    assert one.ciphertext != two.ciphertext
    assert one.nonce != two.nonce
    assert one.wrapped_key != two.wrapped_key
    assert one.wrap_nonce != two.wrap_nonce
    assert one.ephemeral_public_key != two.ephemeral_public_key
    assert one.recipient_key_id == two.recipient_key_id


def test_another_recipients_key_cannot_open(recipient: X25519PrivateKey) -> None:
    with pytest.raises(CryptoError) as info:
        _open(_seal(recipient), X25519PrivateKey.generate())
    assert info.value.code is ReasonCode.NOT_ADDRESSEE
    assert info.value.hint


def test_another_key_fails_to_decrypt_even_if_the_key_id_is_forged(
    recipient: X25519PrivateKey,
) -> None:
    other = X25519PrivateKey.generate()
    sealed = dataclasses.replace(
        _seal(recipient), recipient_key_id=key_id(other.public_key().public_bytes_raw())
    )
    with pytest.raises(CryptoError) as info:
        _open(sealed, other)
    assert info.value.code is ReasonCode.DECRYPT_FAILED


@pytest.mark.parametrize(
    "ids",
    [
        {"disclosure_id": "d-other"},
        {"recipient_id": "southampton-csc"},
        {"disclosure_id": DISCLOSURE_ID + RECIPIENT_ID[:1], "recipient_id": RECIPIENT_ID[1:]},
    ],
    ids=["disclosure-id", "recipient-id", "shifted-boundary"],
)
def test_aad_binds_the_disclosure_and_recipient_ids(
    recipient: X25519PrivateKey, ids: dict[str, str]
) -> None:
    with pytest.raises(CryptoError) as info:
        _open(_seal(recipient), recipient, **ids)
    assert info.value.code is ReasonCode.DECRYPT_FAILED
    assert info.value.hint


@pytest.mark.parametrize(
    "field_name", ["ciphertext", "nonce", "wrapped_key", "wrap_nonce", "ephemeral_public_key"]
)
@pytest.mark.parametrize("where", ["first", "last"])
def test_tampering_with_any_envelope_byte_fails(
    recipient: X25519PrivateKey, field_name: str, where: str
) -> None:
    sealed = _seal(recipient)
    value: bytes = getattr(sealed, field_name)
    index = 0 if where == "first" else len(value) - 1
    tampered = dataclasses.replace(sealed, **{field_name: _flip(value, index)})  # type: ignore[arg-type]
    with pytest.raises(CryptoError) as info:
        _open(tampered, recipient)
    assert info.value.code is ReasonCode.DECRYPT_FAILED


@pytest.mark.parametrize(
    "change",
    [
        {"ciphertext": b""},
        {"nonce": b"\x00" * 11},
        {"wrapped_key": b"\x00" * 47},
        {"ephemeral_public_key": b"\x00" * 31},
        {"ephemeral_public_key": b"\x00" * 32},  # low-order point
        {"algorithm": "RSA-OAEP+A128CBC"},
    ],
    ids=["empty-ct", "short-nonce", "short-wrapped", "short-eph", "zero-eph", "algorithm"],
)
def test_malformed_envelopes_fail_cleanly(
    recipient: X25519PrivateKey, change: dict[str, object]
) -> None:
    tampered = dataclasses.replace(_seal(recipient), **change)  # type: ignore[arg-type]
    with pytest.raises(CryptoError) as info:
        _open(tampered, recipient)
    assert info.value.code is ReasonCode.DECRYPT_FAILED


def test_swapping_wrapped_keys_between_envelopes_fails(recipient: X25519PrivateKey) -> None:
    one, two = _seal(recipient), _seal(recipient)
    mixed = dataclasses.replace(one, wrapped_key=two.wrapped_key, wrap_nonce=two.wrap_nonce)
    with pytest.raises(CryptoError):
        _open(mixed, recipient)


def test_decrypt_error_message_carries_no_plaintext(recipient: X25519PrivateKey) -> None:
    with pytest.raises(CryptoError) as info:
        _open(_seal(recipient), recipient, disclosure_id="d-other")
    assert "Test Child" not in str(info.value)
    assert "9990000018" not in str(info.value)


def test_aad_is_length_prefixed() -> None:
    # The envelope AAD layout is part of the wire contract.
    from broker._crypto import _envelope_aad

    aad = _envelope_aad("d1", "r22")
    assert aad == b"SAFER-ENV-v1\x00" + struct.pack(">H", 2) + b"d1" + struct.pack(">H", 3) + b"r22"


# --------------------------------------------------------------------------- pseudonyms


def test_pseudonym_is_deterministic_128_bit_lowercase_hex() -> None:
    one = pseudonym(SECRET, "nhs:9990000018")
    assert one == pseudonym(SECRET, "nhs:9990000018")
    assert re.fullmatch(r"[0-9a-f]{32}", one)
    assert "9990000018" not in one


def test_pseudonym_matches_hmac_sha256_truncated() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET, b"nhs:9990000018", hashlib.sha256).hexdigest()[:32]
    assert pseudonym(SECRET, "nhs:9990000018") == expected


def test_pseudonym_differs_by_secret_and_identifier() -> None:
    base = pseudonym(SECRET, "nhs:9990000018")
    assert pseudonym(bytes(reversed(SECRET)), "nhs:9990000018") != base
    assert pseudonym(SECRET, "nhs:9990000026") != base


@pytest.mark.parametrize("length", [0, 16, 31])
def test_pseudonym_rejects_a_short_secret(length: int) -> None:
    with pytest.raises(ConfigError) as info:
        pseudonym(b"k" * length, "nhs:9990000018")
    assert info.value.hint
    assert "9990000018" not in str(info.value)


def test_pseudonym_rejects_an_empty_identifier() -> None:
    with pytest.raises(ValidationError) as info:
        pseudonym(SECRET, "")
    assert info.value.hint
