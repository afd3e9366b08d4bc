"""The shared inbox flow (`safer inbox` and `safer web`): ordering and time left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters import Inbox
from safer._inbox_flow import OUTCOME_CODES, listing, resolve, time_left

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def record(n: int, deadline: datetime | None) -> dict[str, Any]:
    return {
        "disclosure_id": f"{n:02d}" + "a" * 30,
        "concern_id": f"concern-{n}",
        "source_agency": "hampshire-constabulary",
        "kind": "DISCLOSURE",
        "lscp": "portsmouth",
        "lawful_basis": "CA1989_S47",
        "purpose": "safeguarding",
        "profile": "social-care",
        "concern_type": "NEGLECT",
        "risk_grade": "HIGH",
        "deadline": deadline,
        "decided_at": NOW - timedelta(hours=n),
        "payload_sha256": "0" * 64,
    }


def make_inbox(tmp_path: Path) -> Inbox:
    inbox = Inbox(tmp_path / "portsmouth-csc.db")
    deadlines = {
        1: NOW + timedelta(hours=5),  # due later
        2: None,  # no deadline
        3: NOW - timedelta(hours=1),  # overdue
        4: NOW + timedelta(minutes=30),  # due soonest
        5: NOW - timedelta(hours=3),  # most overdue
    }
    inbox.store([(record(n, d), b"wire", {"n": n}) for n, d in deadlines.items()], [], {})
    return inbox


def test_listing_puts_overdue_first_then_soonest_and_no_deadline_last(tmp_path: Path) -> None:
    with make_inbox(tmp_path) as inbox:
        inbox.advance(resolve(inbox, "01").disclosure_id, "ACTIONED", outcome_code="NFA")
        rows = listing(inbox, now=NOW)
        assert [r.item.payload["n"] for r in rows] == [5, 3, 4, 2]
        assert [r.overdue for r in rows] == [True, True, False, False]
        assert rows[0].time_left == "OVERDUE by 3h00m"
        assert rows[2].time_left == "0h30m left"
        assert rows[3].time_left == "-"
        everything = listing(inbox, include_actioned=True, now=NOW)
        assert [r.item.payload["n"] for r in everything] == [5, 3, 4, 2, 1]


def test_time_left_and_outcome_codes() -> None:
    assert time_left(None) == "-"
    assert time_left((NOW + timedelta(hours=2, minutes=5)).isoformat(), NOW) == "2h05m left"
    assert "NFA" in OUTCOME_CODES and "S47_ENQUIRY" in OUTCOME_CODES


def test_resolve_refuses_an_unknown_id(tmp_path: Path) -> None:
    from schemas import ConfigError

    with make_inbox(tmp_path) as inbox, pytest.raises(ConfigError):
        resolve(inbox, "zz")
