"""The auditors' log status without a full verification on every page load.

``verify_store`` recomputes the whole log; on a large log that is seconds of
work per request. ``VerificationCache`` keeps the last result keyed by a
fingerprint of the log (``log_fingerprint``): the stored tree head (entry
count and RFC 9162 root), the latest signed checkpoint, and the size and
modification time of every segment file (the entries themselves). The log is
verified again, end to end, only when that fingerprint changes (the log grew,
a checkpoint was signed, or a segment file was touched) or the result is
older than ``max_age`` (ten minutes by default); ``force`` verifies now. The
audit package has no incremental verifier, so a re-verification is a full
one.

What this does not catch until the next verification (at most ``max_age``
later): an edit of the SQLite file alone (its size and time change on every
ordinary open, so they cannot be part of the key), or an edit of a segment
that leaves its size and modification time as they were. The page therefore
says when the log was last verified, and ``safer audit verify`` remains the
check to rely on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from audit import Checkpoint, LogSummary
from audit._format import segments_dir
from schemas import SaferError

__all__ = ["Verification", "VerificationCache", "log_fingerprint"]

Fingerprint = tuple[object, ...]


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        info = path.stat()
    except OSError:
        return (path.name, -1, -1)
    return (path.name, info.st_size, info.st_mtime_ns)


def log_fingerprint(db: Path, head: tuple[int, bytes], latest: Checkpoint | None) -> Fingerprint:
    """What must stay the same for an earlier verification to still stand.

    ``head`` is ``AuditStore.head()`` (size and root), ``latest`` the latest
    signed checkpoint.
    """
    segments = segments_dir(db)
    files = sorted(segments.iterdir()) if segments.is_dir() else []
    return (
        head[0],
        head[1].hex(),
        (latest.size, latest.at.isoformat(), latest.note) if latest is not None else None,
        tuple(_stat(f) for f in files),
    )


@dataclass(frozen=True)
class Verification:
    """One end-to-end verification and when it was made."""

    verified: bool
    problems: tuple[str, ...]
    checkpoints: str
    at: datetime
    size: int  # entries when verified
    cached: bool = False  # True when this page reused it


class VerificationCache:
    """The last verification, reused while the log's fingerprint is unchanged."""

    def __init__(self, max_age: timedelta = timedelta(minutes=10)) -> None:
        self.max_age = max_age
        self.runs = 0  # how many full verifications were made (for tests and metrics)
        self._lock = threading.Lock()
        self._last: tuple[Fingerprint, Verification] | None = None

    def status(
        self,
        fingerprint: Fingerprint,
        size: int,
        verify: Callable[[], LogSummary],
        now: datetime,
        *,
        force: bool = False,
    ) -> Verification:
        """The cached result if it still stands, else a fresh verification.

        ``verify`` raises ``StoreTamperedError`` (or another ``SaferError``)
        when the log does not verify; a failure is cached like a success, so a
        tampered log keeps showing as failed until its files change.
        """
        with self._lock:
            last = self._last
            if (
                not force
                and last is not None
                and last[0] == fingerprint
                and now - last[1].at < self.max_age
            ):
                return Verification(**{**last[1].__dict__, "cached": True})
            self.runs += 1
            try:
                summary = verify()
            except SaferError as exc:
                problems = tuple(getattr(exc, "problems", ())) or (str(exc),)
                result = Verification(False, problems, "-", now, size)
            else:
                result = Verification(
                    True,
                    (),
                    f"{summary.checkpoints_verified} of {summary.checkpoints} signed",
                    now,
                    size,
                )
            self._last = (fingerprint, result)
            return result
