"""The auditors' log status reuses a verification while the log is unchanged (issue 14).

Real store files: the cache verifies once, reuses the result while nothing changed,
verifies again when the log grows or its files are edited (and then reports the
tampering), after its maximum age, and on demand.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from audit import AuditStore, verify_store
from safer.web._status import Verification, VerificationCache, log_fingerprint

from .test_audit_store import T0, fill, make_record, signer
from .test_audit_tamper import _edit

KEY = signer()


def _look(
    cache: VerificationCache, path: Path, minutes: int = 0, force: bool = False
) -> Verification:
    with AuditStore(path) as store:
        head = store.head()
        latest = store.latest_checkpoint(signed=True)
    return cache.status(
        log_fingerprint(path, head, latest),
        head[0],
        lambda: verify_store(path, key=KEY.key),
        T0 + timedelta(minutes=minutes),
        force=force,
    )


def test_verifies_again_only_when_the_log_changed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 12, key=KEY, checkpoint=True)
    cache = VerificationCache(max_age=timedelta(minutes=10))

    first = _look(cache, path)
    assert cache.runs == 1 and first.verified and not first.cached and first.size == 12
    again = _look(cache, path, minutes=1)
    assert cache.runs == 1 and again.cached and again.at == first.at  # says when

    with AuditStore(path, signer=KEY) as store:
        store.append([make_record(13)])
    grown = _look(cache, path, minutes=2)
    assert cache.runs == 2 and grown.verified and not grown.cached and grown.size == 13

    assert _look(cache, path, minutes=3).cached
    assert not _look(cache, path, minutes=3, force=True).cached and cache.runs == 3
    assert not _look(cache, path, minutes=20).cached and cache.runs == 4  # too old


def test_an_edit_of_the_same_size_is_verified_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 8, key=KEY, checkpoint=True)
    cache = VerificationCache()
    assert _look(cache, path).verified
    _edit(path, 3, b"police-hampshire", b"police-hampshirx")
    tampered = _look(cache, path, minutes=1)
    assert cache.runs == 2 and not tampered.verified and tampered.problems
    still = _look(cache, path, minutes=2)
    assert still.cached and not still.verified, "a failure stays shown"
