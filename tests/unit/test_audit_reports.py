"""audit/_reports.py: trails, the s.62 log, subject access reports and statistics.

The records are built the way the router and the feed write them, appended to
a real audit store in tmp_path, and read back through ``AuditStore.records``
before the reports run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit import (
    AuditRecord,
    AuditStore,
    Labels,
    Period,
    TrailQuery,
    audit_stats,
    entry_id_for,
    s62_log,
    subject_access_report,
    trail,
    verify_store,
)
from audit._reports import S45_EXEMPTION, concern_type_of
from schemas import AuditEvent, ValidationError

T0 = datetime(2025, 3, 4, 8, 30, tzinfo=UTC)
CHILD = "c" * 32  # the requester's pseudonym
SIBLING = "5" * 32  # another child in the same concerns: must never leak
PARENT = "a" * 32
STRANGER = "e" * 32  # someone in an unrelated concern
LABELS = Labels(
    names={
        "police": "Test Constabulary",
        "csc": "Test MASH",
        "health": "Test Health",
        "school": "Test School",
    },
    citations={"CA2004-S11": "Children Act 2004 section 11", "DPA18-S35": "DPA 2018 s.35"},
)


def _decision(
    event: AuditEvent,
    disclosure: str,
    *,
    concern: str,
    recipient: str,
    at: datetime,
    subjects: tuple[str, ...] = (CHILD, SIBLING, PARENT),
    basis: str | None = "CA2004-S11",
    codes: tuple[str, ...] = (),
    reasons: tuple[str, ...] = ("agreement 'a1' covers police to x for concern type NEGLECT",),
    lscp: str = "hampshire",
) -> AuditRecord:
    shared = event is not AuditEvent.WITHHELD
    return AuditRecord(
        entry_id=entry_id_for(event, disclosure),
        event=event,
        disclosure_id=disclosure,
        decision_id=f"dec-{disclosure}",
        concern_id=concern,
        subject_pseudonyms=subjects,
        source="police",
        recipient=recipient,
        lscp=lscp,
        lawful_basis=basis if shared else None,
        purpose="front-door screening" if shared else None,
        consent_state="NOT_SOUGHT",
        reason_codes=codes,
        reasons=reasons,
        policy_revision="sha256:rev",
        fields_disclosed=("concern_id", "narrative") if shared else (),
        payload_sha256=("ab" * 32) if shared else None,
        at=at,
        actor="safer-router",
    )


def _receipt(
    of: AuditRecord, at: datetime, status: str = "RECEIVED", codes: tuple[str, ...] = ()
) -> AuditRecord:
    assert of.disclosure_id and of.recipient
    return AuditRecord(
        entry_id=entry_id_for(AuditEvent.RECEIVED, f"{of.disclosure_id}:{status}"),
        event=AuditEvent.RECEIVED,
        disclosure_id=of.disclosure_id,
        decision_id=of.decision_id,
        concern_id=of.concern_id,
        subject_pseudonyms=of.subject_pseudonyms,
        source=of.source,
        recipient=of.recipient,
        lscp=of.lscp,
        lawful_basis=of.lawful_basis,
        reason_codes=codes,
        reasons=(f"receipt status {status}",),
        payload_sha256=of.payload_sha256,
        at=at,
        actor=of.recipient,
    )


def _scenario() -> list[AuditRecord]:
    """Three concerns about the child (one restricted) and one about a stranger."""
    m = timedelta(minutes=1)
    d1 = _decision(AuditEvent.DISCLOSED, "d1", concern="k1", recipient="csc", at=T0)
    d2 = _decision(
        AuditEvent.DISCLOSED,
        "d2",
        concern="k1",
        recipient="health",
        at=T0,
        basis="DPA18-S35",
        lscp="portsmouth",
    )
    w1 = _decision(
        AuditEvent.WITHHELD,
        "w1",
        concern="k1",
        recipient="school",
        at=T0,
        codes=("NO_LAWFUL_BASIS",),
        reasons=("no agreement between police and education covers concern type NEGLECT",),
    )
    # k2: restricted; referred to the front door, withheld from everyone else.
    r1 = _decision(
        AuditEvent.REFERRED,
        "r1",
        concern="k2",
        recipient="csc",
        at=T0 + 10 * m,
        codes=("RESTRICTED_RECORD",),
        reasons=(
            "the record is restricted: the front door reviews it before anyone else sees it",
            "agreement 'a1' covers police to social-care for concern type SEXUAL_ABUSE",
        ),
    )
    w2 = _decision(
        AuditEvent.WITHHELD,
        "w2",
        concern="k2",
        recipient="health",
        at=T0 + 10 * m,
        codes=("RESTRICTED_RECORD",),
        reasons=("the record is restricted: only the partnership's front door may receive it",),
    )
    # k3: about the child alone, a later disclosure under another basis.
    d3 = _decision(
        AuditEvent.DISCLOSED,
        "d3",
        concern="k3",
        recipient="school",
        at=T0 + 20 * m,
        subjects=(CHILD,),
        reasons=("covers police to education",),
    )
    # k4: a stranger only.
    d4 = _decision(
        AuditEvent.DISCLOSED,
        "d4",
        concern="k4",
        recipient="csc",
        at=T0 + 30 * m,
        subjects=(STRANGER,),
    )
    quarantined = AuditRecord(
        entry_id=entry_id_for(AuditEvent.QUARANTINED, "q1"),
        event=AuditEvent.QUARANTINED,
        concern_id="k9",
        source="hips.inbound.police",
        reason_codes=("SIGNATURE_INVALID",),
        reasons=("record signature does not verify",),
        at=T0 + 31 * m,
        actor="safer-router",
    )
    return [
        d1,
        d2,
        w1,
        _receipt(d1, T0 + 4 * m),
        _receipt(d1, T0 + 9 * m, "OPENED"),
        _receipt(d2, T0 + 2 * m),
        r1,
        w2,
        _receipt(r1, T0 + 12 * m),
        d3,
        d4,
        _receipt(d4, T0 + 50 * m),  # d3 never receipted
        quarantined,
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(tmp_path / "audit.db") as s:
        s.append(_scenario())
        yield s


def _mine(store: AuditStore) -> list[AuditRecord]:
    return list(store.records(subject=CHILD))


# -- trail --------------------------------------------------------------------------


def test_trail_lists_every_event_about_the_person_in_time_order(store: AuditStore) -> None:
    entries = trail(_mine(store), subjects={CHILD})
    assert [e.disclosure_id for e in entries] == [
        "d1",
        "d2",
        "w1",
        "d2",
        "d1",
        "d1",
        "r1",
        "w2",
        "r1",
        "d3",
    ]
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    first = entries[0].to_json(LABELS)
    assert first["recipient_name"] == "Test MASH"
    assert first["lawful_basis_citation"] == "Children Act 2004 section 11"
    assert first["fields"] == ["concern_id", "narrative"]
    assert first["reasons"] == ["agreement 'a1' covers police to x for concern type NEGLECT"]


def test_trail_keeps_only_records_naming_the_subject_even_when_given_everything(
    store: AuditStore,
) -> None:
    everything = list(store.records())
    entries = trail(everything, subjects={CHILD})
    assert {e.concern_id for e in entries} == {"k1", "k2", "k3"}
    assert trail(everything, subjects=set()) == []


def test_trail_output_carries_no_pseudonym_at_all(store: AuditStore) -> None:
    text = json.dumps([e.to_json(LABELS) for e in trail(_mine(store), subjects={CHILD})])
    for other in (CHILD, SIBLING, PARENT, STRANGER):
        assert other not in text


def test_trail_filters(store: AuditStore) -> None:
    mine = _mine(store)

    def ids(query: TrailQuery) -> list[str | None]:
        return [e.disclosure_id for e in trail(mine, subjects={CHILD}, query=query)]

    assert ids(TrailQuery(events=frozenset({AuditEvent.WITHHELD}))) == ["w1", "w2"]
    assert ids(TrailQuery(recipients=frozenset({"school"}))) == ["w1", "d3"]
    assert ids(TrailQuery(lawful_bases=frozenset({"DPA18-S35"}))) == ["d2", "d2"]
    window = Period(T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))
    assert ids(TrailQuery(period=window)) == ["r1", "w2", "r1"]  # end is exclusive
    combined = TrailQuery(
        events=frozenset({AuditEvent.DISCLOSED}), recipients=frozenset({"csc", "school"})
    )
    assert ids(combined) == ["d1", "d3"]


def test_restriction_is_decided_per_concern_before_filtering(store: AuditStore) -> None:
    receipts = trail(
        _mine(store), subjects={CHILD}, query=TrailQuery(events=frozenset({AuditEvent.RECEIVED}))
    )
    flagged = {e.disclosure_id: e.restricted for e in receipts}
    # The receipt of the restricted referral carries no reason code itself.
    assert flagged == {"d2": False, "d1": False, "r1": True}


# -- s.62 ----------------------------------------------------------------------------


def test_s62_log_lists_disclosures_in_the_period_with_justification(store: AuditStore) -> None:
    log = s62_log(store.records(), Period(T0, T0 + timedelta(minutes=25)))
    assert [(e.event, e.disclosure_id) for e in log] == [
        ("DISCLOSED", "d1"),
        ("DISCLOSED", "d2"),
        ("REFERRED", "r1"),
        ("DISCLOSED", "d3"),
    ]
    d1 = log[0].to_json(LABELS)
    assert d1["date_time"] == "2025-03-04T08:30:00.000Z"
    assert d1["disclosed_by"] == "police" and d1["disclosed_by_name"] == "Test Constabulary"
    assert d1["recorded_by"] == "safer-router"
    assert d1["recipient_name"] == "Test MASH"
    assert d1["justification"].startswith(
        "lawful basis: Children Act 2004 section 11; purpose: front-door screening; agreement"
    )
    # The first receipt (RECEIVED before OPENED), not the later one.
    assert d1["received_at"] == "2025-03-04T08:34:00.000Z"
    assert log[3].received_at is None  # d3 was never receipted


def test_s62_matches_receipts_outside_the_period_and_excludes_decisions_not_to_share(
    store: AuditStore,
) -> None:
    log = s62_log(store.records(), Period(T0 + timedelta(minutes=30), T0 + timedelta(hours=1)))
    assert [e.disclosure_id for e in log] == ["d4"]
    assert log[0].received_at == T0 + timedelta(minutes=50)
    everything = s62_log(store.records(), Period())
    assert "WITHHELD" not in {e.event for e in everything}
    assert "QUARANTINED" not in {e.event for e in everything}


def test_period_rejects_an_empty_or_naive_range() -> None:
    with pytest.raises(ValidationError):
        Period(T0, T0)
    with pytest.raises(ValidationError):
        Period(datetime(2025, 1, 1), None)  # naive: the point of the test


# -- subject access report -------------------------------------------------------------


def test_sar_answers_what_with_whom_when_why_and_basis(store: AuditStore) -> None:
    report = subject_access_report(_mine(store), subjects={CHILD}, now=T0 + timedelta(days=1))
    assert [d.disclosure_id for d in report.disclosures] == ["d1", "d2", "d3"]
    d1 = report.disclosures[0].to_json(LABELS)
    assert d1["shared_with_name"] == "Test MASH"
    assert d1["shared_by_name"] == "Test Constabulary"
    assert d1["what"] == ["concern_id", "narrative"]
    assert d1["why"] == "front-door screening"
    assert d1["lawful_basis_citation"] == "Children Act 2004 section 11"
    assert d1["received_at"] == "2025-03-04T08:34:00.000Z"
    assert report.disclosures[2].received_at is None
    assert [d.recipient for d in report.not_shared] == ["school"]
    assert report.not_shared[0].reason_codes == ("NO_LAWFUL_BASIS",)


def test_sar_withholds_every_entry_of_a_restricted_concern_with_the_recorded_reason(
    store: AuditStore,
) -> None:
    report = subject_access_report(_mine(store), subjects={CHILD}, now=T0)
    assert len(report.restricted) == 1
    withheld = report.restricted[0]
    k2 = [r.seq for r in _mine(store) if r.concern_id == "k2"]
    assert list(withheld.log_entries) == sorted(k2) and len(k2) == 3  # referral, denial, receipt
    assert withheld.reason_codes == ("RESTRICTED_RECORD",)
    assert withheld.reasons == (
        "the record is restricted: the front door reviews it before anyone else sees it",
        "the record is restricted: only the partnership's front door may receive it",
    )
    assert withheld.exemption == S45_EXEMPTION == "Data Protection Act 2018 section 45(4)"
    assert report.withheld_count == 3
    body = json.dumps(report.to_json(LABELS))
    # Nothing of the restricted concern is visible: not its id, its disclosures or its type.
    for hidden in ('"k2"', '"r1"', '"w2"', "SEXUAL_ABUSE", "08:40"):
        assert hidden not in body


def test_sar_never_carries_anyone_elses_data(store: AuditStore) -> None:
    report = subject_access_report(store.records(), subjects={CHILD}, now=T0)
    body = json.dumps(report.to_json(LABELS))
    for pseudonym in (CHILD, SIBLING, PARENT, STRANGER):
        assert pseudonym not in body
    assert '"k4"' not in body and '"d4"' not in body  # the stranger's concern


def test_sar_reports_erasure(store: AuditStore) -> None:
    shredded = AuditRecord(
        entry_id=entry_id_for(AuditEvent.KEY_SHREDDED, "key-1"),
        event=AuditEvent.KEY_SHREDDED,
        subject_pseudonyms=(CHILD,),
        source="subject-vault",
        reasons=("subject vault key key-1 destroyed: erasure",),
        at=T0 + timedelta(days=2),
        actor="dpo-7",
    )
    store.append([shredded])
    report = subject_access_report(_mine(store), subjects={CHILD}, now=T0)
    assert [(e.actor, e.reasons) for e in report.erasures] == [
        ("dpo-7", ("subject vault key key-1 destroyed: erasure",))
    ]
    verify_store(store.path)


# -- statistics -----------------------------------------------------------------------


def test_stats_volumes_per_partnership_recipient_type_and_outcome(store: AuditStore) -> None:
    stats = audit_stats(store.records())
    assert stats.entries == 13
    assert stats.by_event == {
        "DISCLOSED": 4,
        "QUARANTINED": 1,
        "RECEIVED": 5,
        "REFERRED": 1,
        "WITHHELD": 2,
    }
    assert stats.by_partnership["portsmouth"] == {"DISCLOSED": 1, "RECEIVED": 1}
    assert stats.by_partnership["(none)"] == {"QUARANTINED": 1}
    assert stats.by_recipient["school"] == {"DISCLOSED": 1, "WITHHELD": 1}
    # Types come from the decision reasons; k3's reasons name none, k9 is a quarantine.
    assert stats.by_concern_type["NEGLECT"] == {"DISCLOSED": 3, "RECEIVED": 4, "WITHHELD": 1}
    assert stats.by_concern_type["SEXUAL_ABUSE"] == {
        "RECEIVED": 1,
        "REFERRED": 1,
        "WITHHELD": 1,
    }
    assert stats.by_concern_type["not recorded"] == {"DISCLOSED": 1, "QUARANTINED": 1}
    assert (stats.concerns, stats.concerns_with_type) == (5, 3)


def test_stats_time_to_receipt(store: AuditStore) -> None:
    stats = audit_stats(store.records())
    hampshire = stats.time_to_receipt["hampshire"]
    # d1 4 min, r1 2 min, d4 20 min; d3 pending.
    assert (hampshire.delivered, hampshire.received, hampshire.pending) == (4, 3, 1)
    assert hampshire.median_s == 240.0
    assert hampshire.p90_s == 1200.0 and hampshire.max_s == 1200.0
    portsmouth = stats.time_to_receipt["portsmouth"]
    assert (portsmouth.median_s, portsmouth.p90_s, portsmouth.max_s) == (120.0, 120.0, 120.0)
    overall = stats.time_to_receipt_all
    assert (overall.delivered, overall.received) == (5, 4)
    assert overall.median_s == 180.0  # mean of the middle two of 120, 120, 240, 1200


def test_stats_period_counts_entries_in_it_but_matches_later_receipts(
    store: AuditStore,
) -> None:
    stats = audit_stats(store.records(), Period(T0 + timedelta(minutes=30), None))
    assert stats.by_event == {"DISCLOSED": 1, "QUARANTINED": 1, "RECEIVED": 1}
    assert stats.time_to_receipt["hampshire"].median_s == 1200.0
    empty = audit_stats([], Period())
    assert empty.entries == 0 and empty.time_to_receipt_all.median_s is None


def test_concern_type_is_read_only_from_a_known_type_name() -> None:
    base = _decision(AuditEvent.WITHHELD, "x", concern="k", recipient="csc", at=T0)
    assert concern_type_of(base) == "NEGLECT"
    odd = _decision(
        AuditEvent.WITHHELD,
        "y",
        concern="k",
        recipient="csc",
        at=T0,
        reasons=("covers concern type NOT_A_TYPE",),
    )
    assert concern_type_of(odd) is None
