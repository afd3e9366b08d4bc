"""A recipient's local inbox: one SQLite file per recipient.

It stores each decrypted disclosure once (keyed by ``disclosure_id``), the
consumer position in the same transaction (so a crash neither loses nor
repeats a disclosure), records addressed to this recipient that could not be
verified or decrypted (never silently dropped), and an outbox of receipts
(RECEIVED, OPENED, ACTIONED) that stay pending until the broker acknowledges
them, so a receipt is never lost to a crash or a broker outage.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "STATUS_ORDER",
    "Inbox",
    "InboxItem",
    "PendingReceipt",
    "Rejection",
    "receipt_id_for",
]

#: Receipt statuses in the order a disclosure moves through them.
STATUS_ORDER = ("RECEIVED", "OPENED", "ACTIONED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS disclosures (
    disclosure_id TEXT PRIMARY KEY,
    concern_id TEXT NOT NULL,
    source_agency TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    lscp TEXT NOT NULL,
    lawful_basis TEXT,
    purpose TEXT NOT NULL,
    profile TEXT NOT NULL,
    concern_type TEXT NOT NULL,
    risk_grade TEXT NOT NULL,
    deadline TEXT,
    decided_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    wire BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'RECEIVED',
    outcome_code TEXT,
    delivered_at TEXT,
    delivery_state TEXT NOT NULL DEFAULT 'DELIVERED'
);
CREATE TABLE IF NOT EXISTS outbox (
    receipt_id TEXT PRIMARY KEY,
    disclosure_id TEXT NOT NULL,
    concern_id TEXT NOT NULL,
    status TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    outcome_code TEXT,
    note_json TEXT,
    at TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rejected (
    position TEXT PRIMARY KEY,
    reason_code TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS purged (
    disclosure_id TEXT PRIMARY KEY,
    purged_at TEXT NOT NULL,
    retention TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def receipt_id_for(disclosure_id: str, status: str) -> str:
    """Deterministic: one receipt per disclosure and status, however often it is sent."""
    digest = hashlib.sha256(f"safer-receipt-v1\x00{disclosure_id}\x00{status}".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class InboxItem:
    disclosure_id: str
    concern_id: str
    source_agency: str
    kind: str
    lscp: str
    lawful_basis: str | None
    purpose: str
    profile: str
    concern_type: str
    risk_grade: str
    deadline: str | None
    decided_at: str
    received_at: str
    payload_sha256: str
    payload: dict[str, Any]
    status: str
    outcome_code: str | None


@dataclass(frozen=True)
class PendingReceipt:
    receipt_id: str
    disclosure_id: str
    concern_id: str
    status: str
    payload_sha256: str
    outcome_code: str | None
    note: dict[str, Any] | None  # the sealed note's fields, bytes as hex; None if no note
    at: str


@dataclass(frozen=True)
class Rejection:
    position: str
    reason_code: str
    detail: str


_ITEM_COLUMNS = (
    "disclosure_id, concern_id, source_agency, kind, lscp, lawful_basis, purpose, profile,"
    " concern_type, risk_grade, deadline, decided_at, received_at, payload_sha256,"
    " payload_json, status, outcome_code"
)


def _item(row: Sequence[Any]) -> InboxItem:
    return InboxItem(
        disclosure_id=row[0],
        concern_id=row[1],
        source_agency=row[2],
        kind=row[3],
        lscp=row[4],
        lawful_basis=row[5],
        purpose=row[6],
        profile=row[7],
        concern_type=row[8],
        risk_grade=row[9],
        deadline=row[10],
        decided_at=row[11],
        received_at=row[12],
        payload_sha256=row[13],
        payload=json.loads(row[14]),
        status=row[15],
        outcome_code=row[16],
    )


class Inbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(disclosures)")}
        if "delivered_at" not in columns:  # an inbox from before webhook delivery
            self._db.execute("ALTER TABLE disclosures ADD COLUMN delivered_at TEXT")
            self._db.execute(
                "ALTER TABLE disclosures ADD COLUMN delivery_state TEXT NOT NULL"
                " DEFAULT 'DELIVERED'"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(
        self,
        items: Sequence[tuple[dict[str, Any], bytes, dict[str, Any]]],
        rejections: Sequence[Rejection],
        offsets: Mapping[tuple[str, int], int],
        *,
        await_delivery: bool = False,
    ) -> int:
        """Store decrypted disclosures, their RECEIVED receipts, rejections and
        positions in one transaction.

        With ``await_delivery`` (webhook recipients) a disclosure is RECEIVED
        only once the agency's endpoint accepts it: see ``mark_delivered``.

        ``items`` holds (Disclosure record, wire bytes, decrypted payload).
        Returns how many disclosures were new (duplicates are ignored).
        """
        now = _now()
        added = 0
        with _Tx(self._db):
            for record, wire, payload in items:
                if self._db.execute(
                    "SELECT 1 FROM purged WHERE disclosure_id = ?", (record["disclosure_id"],)
                ).fetchone():
                    continue  # purged at the end of its retention: never stored again
                deadline = record.get("deadline")
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO disclosures (disclosure_id, concern_id, source_agency,"
                    " kind, lscp, lawful_basis, purpose, profile, concern_type, risk_grade,"
                    " deadline, decided_at, received_at, payload_sha256, payload_json, wire,"
                    " delivered_at, delivery_state)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        record["disclosure_id"],
                        record["concern_id"],
                        record.get("source_agency") or "",
                        str(record["kind"]),
                        record["lscp"],
                        record["lawful_basis"],
                        record["purpose"],
                        record["profile"],
                        record["concern_type"],
                        record["risk_grade"],
                        deadline.isoformat(timespec="milliseconds") if deadline else None,
                        record["decided_at"].isoformat(timespec="milliseconds"),
                        now,
                        record["payload_sha256"],
                        json.dumps(payload, sort_keys=True),
                        wire,
                        None if await_delivery else now,
                        "PENDING" if await_delivery else "DELIVERED",
                    ),
                )
                if cursor.rowcount:
                    added += 1
                    if await_delivery:
                        continue
                    self._queue(
                        record["disclosure_id"],
                        record["concern_id"],
                        "RECEIVED",
                        record["payload_sha256"],
                        None,
                        None,
                        now,
                    )
            for rejection in rejections:
                self._db.execute(
                    "INSERT OR IGNORE INTO rejected VALUES (?,?,?,?)",
                    (rejection.position, rejection.reason_code, rejection.detail, now),
                )
            for (topic, partition), offset in offsets.items():
                self._db.execute(
                    "INSERT INTO offsets VALUES (?,?,?) ON CONFLICT(topic, partition)"
                    " DO UPDATE SET next_offset=excluded.next_offset",
                    (topic, partition, offset),
                )
        return added

    def _queue(
        self,
        disclosure_id: str,
        concern_id: str,
        status: str,
        payload_sha256: str,
        outcome_code: str | None,
        note: dict[str, Any] | None,
        at: str,
    ) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO outbox (receipt_id, disclosure_id, concern_id, status,"
            " payload_sha256, outcome_code, note_json, at) VALUES (?,?,?,?,?,?,?,?)",
            (
                receipt_id_for(disclosure_id, status),
                disclosure_id,
                concern_id,
                status,
                payload_sha256,
                outcome_code,
                json.dumps(note) if note is not None else None,
                at,
            ),
        )
        return bool(cursor.rowcount)

    def advance(
        self,
        disclosure_id: str,
        status: str,
        *,
        outcome_code: str | None = None,
        note: dict[str, Any] | None = None,
    ) -> bool:
        """Move a disclosure to OPENED or ACTIONED and queue the receipt.

        Statuses only move forward, and each status is receipted once: returns
        False (and changes nothing) when the disclosure is already there.
        """
        if status not in STATUS_ORDER[1:]:
            raise ValueError(f"status must be one of {STATUS_ORDER[1:]}")
        item = self.get(disclosure_id)
        if item is None:
            raise KeyError(disclosure_id)
        if STATUS_ORDER.index(item.status) >= STATUS_ORDER.index(status):
            return False
        now = _now()
        with _Tx(self._db):
            if status == "ACTIONED" and item.status == "RECEIVED":
                # Acting on a disclosure implies having opened it: keep the trail complete.
                self._queue(
                    disclosure_id, item.concern_id, "OPENED", item.payload_sha256, None, None, now
                )
            self._queue(
                disclosure_id,
                item.concern_id,
                status,
                item.payload_sha256,
                outcome_code,
                note,
                now,
            )
            self._db.execute(
                "UPDATE disclosures SET status = ?, outcome_code = COALESCE(?, outcome_code)"
                " WHERE disclosure_id = ?",
                (status, outcome_code, disclosure_id),
            )
        return True

    def awaiting_delivery(self, limit: int = 50) -> list[tuple[str, bytes, dict[str, Any]]]:
        """(disclosure_id, wire bytes, payload) still to be POSTed to the agency."""
        rows = self._db.execute(
            "SELECT disclosure_id, wire, payload_json FROM disclosures"
            " WHERE delivery_state = 'PENDING' ORDER BY rowid LIMIT ?",
            (limit,),
        )
        return [(d, bytes(w), json.loads(p)) for d, w, p in rows]

    def mark_delivered(self, disclosure_id: str, at: datetime) -> None:
        """The agency's endpoint answered 2xx: now it is RECEIVED (receipt queued)."""
        item = self.get(disclosure_id)
        if item is None:
            raise KeyError(disclosure_id)
        stamp = at.astimezone(UTC).isoformat(timespec="milliseconds")
        with _Tx(self._db):
            self._db.execute(
                "UPDATE disclosures SET delivered_at = ?, delivery_state = 'DELIVERED'"
                " WHERE disclosure_id = ?",
                (stamp, disclosure_id),
            )
            self._queue(
                disclosure_id, item.concern_id, "RECEIVED", item.payload_sha256, None, None, stamp
            )

    def mark_undeliverable(self, disclosure_id: str, reason_code: str, detail: str) -> None:
        """The endpoint refused it for good: keep it, stop retrying, and record why.

        No RECEIVED receipt goes out, so the sender's non-delivery report and the
        deadline alerts still fire: a person must pick it up.
        """
        with _Tx(self._db):
            self._db.execute(
                "UPDATE disclosures SET delivery_state = 'REJECTED' WHERE disclosure_id = ?",
                (disclosure_id,),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO rejected VALUES (?,?,?,?)",
                (f"webhook/{disclosure_id}", reason_code, detail, _now()),
            )

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self._db.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(t, p): o for t, p, o in rows}

    def pending_receipts(self) -> list[PendingReceipt]:
        """Receipts not yet acknowledged by the broker, oldest first."""
        rows = self._db.execute(
            "SELECT receipt_id, disclosure_id, concern_id, status, payload_sha256, outcome_code,"
            " note_json, at FROM outbox WHERE sent = 0 ORDER BY rowid"
        )
        return [
            PendingReceipt(
                r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None, r[7]
            )
            for r in rows
        ]

    def mark_receipts_sent(self, receipt_ids: Sequence[str]) -> None:
        with _Tx(self._db):
            self._db.executemany(
                "UPDATE outbox SET sent = 1 WHERE receipt_id = ?", [(r,) for r in receipt_ids]
            )

    def get(self, disclosure_id: str) -> InboxItem | None:
        row = self._db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM disclosures WHERE disclosure_id = ?",  # noqa: S608
            (disclosure_id,),
        ).fetchone()
        return _item(row) if row else None

    def find(self, prefix: str) -> list[InboxItem]:
        """Disclosures whose id starts with ``prefix`` (so users can type 8 characters)."""
        rows = self._db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM disclosures WHERE disclosure_id LIKE ?",  # noqa: S608
            (prefix.replace("%", "").replace("_", "") + "%",),
        )
        return [_item(r) for r in rows]

    def items(self, *, status: str | None = None) -> Iterator[InboxItem]:
        where = "WHERE status = ?" if status else ""
        rows = self._db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM disclosures {where} ORDER BY received_at, rowid",  # noqa: S608
            (status,) if status else (),
        )
        for row in rows:
            yield _item(row)

    def disclosure_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT disclosure_id FROM disclosures")]

    def rejections(self) -> list[Rejection]:
        rows = self._db.execute("SELECT position, reason_code, detail FROM rejected ORDER BY at")
        return [Rejection(*r) for r in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM disclosures").fetchone()[0])

    def purge(self, disclosure_ids: Sequence[str], *, at: datetime, retention: str) -> int:
        """Delete these disclosures (payload, wire copy, queued receipts) for good.

        Each id is remembered in ``purged`` so a re-read of the topic never
        stores it again. Returns how many were deleted.
        """
        deleted = 0
        with _Tx(self._db):
            for disclosure_id in disclosure_ids:
                cursor = self._db.execute(
                    "DELETE FROM disclosures WHERE disclosure_id = ?", (disclosure_id,)
                )
                deleted += cursor.rowcount
                self._db.execute("DELETE FROM outbox WHERE disclosure_id = ?", (disclosure_id,))
                self._db.execute(
                    "INSERT OR IGNORE INTO purged VALUES (?,?,?)",
                    (disclosure_id, at.isoformat(timespec="milliseconds"), retention),
                )
        return deleted

    def purged(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT disclosure_id FROM purged")]


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
