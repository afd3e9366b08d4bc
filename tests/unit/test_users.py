"""`safer web` users: argon2 hashes, roles with scopes, disabling."""

from __future__ import annotations

from pathlib import Path

import pytest

from safer._users import Role, UserStore
from schemas import ValidationError

RECIPIENTS = frozenset({"portsmouth-csc", "southampton-health"})
PASSWORD = "correct horse battery staple"


def test_add_authenticate_and_disable(tmp_path: Path) -> None:
    with UserStore(tmp_path / "u.db") as store:
        store.add("sam", Role.PRACTITIONER, PASSWORD, scope="portsmouth-csc", recipients=RECIPIENTS)
        store.add("ana", Role.ANALYST, PASSWORD, scope="portsmouth")
        store.add("dee", Role.DPO, PASSWORD)
        sam = store.authenticate("sam", PASSWORD)
        assert sam is not None and sam.role is Role.PRACTITIONER and sam.scope == "portsmouth-csc"
        assert store.authenticate("sam", PASSWORD + "x") is None
        assert store.authenticate("nobody", PASSWORD) is None
        assert store.disable("sam") and not store.disable("sam")
        assert store.authenticate("sam", PASSWORD) is None
        assert [u.name for u in store.list()] == ["ana", "dee", "sam"]
    raw = (tmp_path / "u.db").read_bytes()
    assert PASSWORD.encode() not in raw and b"$argon2id$" in raw


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        (Role.PRACTITIONER, None),
        (Role.PRACTITIONER, "not-a-recipient"),
        (Role.ANALYST, "wessex"),
        (Role.AUDITOR, "portsmouth"),
    ],
)
def test_scopes_are_checked(tmp_path: Path, role: Role, scope: str | None) -> None:
    with UserStore(tmp_path / "u.db") as store, pytest.raises(ValidationError):
        store.add("x1", role, PASSWORD, scope=scope, recipients=RECIPIENTS)


def test_short_password_and_duplicate_name_refused(tmp_path: Path) -> None:
    with UserStore(tmp_path / "u.db") as store:
        with pytest.raises(ValidationError, match="too short"):
            store.add("x1", Role.AUDITOR, "short")
        store.add("x1", Role.AUDITOR, PASSWORD)
        with pytest.raises(ValidationError, match="already exists"):
            store.add("x1", Role.AUDITOR, PASSWORD)
