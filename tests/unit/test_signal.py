"""Issue 16: the cumulative-concern signal: window arithmetic, thresholds, the front door's
referral, the state store's bookkeeping, and RouterCore raising and auditing the flag.

Pure tests (RouterCore and SignalStore are used without a broker: only
``SignalStore.run`` touches Kafka, and the integration test covers it).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit import AuditRecord
from broker import RouterCore, SignalStore, decode_signal_state, encode_signal_state
from consent import (
    CumulativeThreshold,
    Deny,
    PolicySet,
    Refer,
    SignalEvent,
    cumulative_flag,
    decide,
    in_window,
    parse_policy,
    prune_events,
)
from consent import Permit as PermitDecision
from safer import Runtime
from schemas import AuditEvent, ConsentState, Lscp, PolicyError, ReasonCode, RiskGrade
from tests.unit.test_consent import NOW, ROOT, make_concern, rec
from tests.unit.test_router_core import _audits, _signed

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PORTSMOUTH = Lscp.PORTSMOUTH
THIRD = CumulativeThreshold(
    id="third", title="3rd in 12 months", window_days=365, min_concerns=3, source="test"
)
AGENCIES = CumulativeThreshold(
    id="agencies", title="2 agencies in 30 days", window_days=30, min_agencies=2, source="test"
)


def ev(
    n: int,
    days: float,
    agency: str = "force-a",
    grade: RiskGrade = RiskGrade.LOW,
    lscps: tuple[str, ...] = ("portsmouth",),
) -> SignalEvent:
    return SignalEvent(
        concern_id=f"c{n}",
        reported_at=T0 + timedelta(days=days),
        source_agency=agency,
        grade=grade,
        lscps=lscps,
    )


# ---------------------------------------------------------------- window arithmetic


@pytest.mark.parametrize(
    ("history_days", "current_day", "window", "counted"),
    [
        ([0, 10, 20], 30, 30, [10, 20]),  # day 0 is exactly 30 days back: outside
        ([0.001, 10], 30, 30, [0.001, 10]),  # just inside the window
        ([5, 40], 30, 30, [5]),  # reported after the new one: not "earlier"
        ([5, 30], 30, 30, [5, 30]),  # another concern at the same instant counts
        ([], 5, 365, []),
        ([0, 100, 200, 300], 365, 365, [100, 200, 300]),
        ([0, 100, 200, 300], 364, 365, [0, 100, 200, 300]),
    ],
)
def test_the_window_ends_at_the_new_concern_and_excludes_its_start(
    history_days: list[float], current_day: float, window: int, counted: list[float]
) -> None:
    history = [ev(i, d) for i, d in enumerate(history_days)]
    current = ev(99, current_day)
    got = in_window(history, current, PORTSMOUTH, window)
    assert [e.reported_at for e in got] == [T0 + timedelta(days=d) for d in counted]


def test_the_concern_itself_never_counts_as_earlier() -> None:
    current = ev(7, 10)
    assert in_window([ev(1, 5), current, ev(7, 9)], current, PORTSMOUTH, 30) == [ev(1, 5)]


def test_only_concerns_that_reached_the_partnership_count() -> None:
    history = [ev(1, 0, lscps=("portsmouth",)), ev(2, 1, lscps=("southampton",))]
    history.append(ev(3, 2, lscps=("portsmouth", "southampton")))
    current = ev(9, 3, lscps=("southampton",))
    assert [e.concern_id for e in in_window(history, current, Lscp.SOUTHAMPTON, 30)] == [
        "c2",
        "c3",
    ]
    assert [e.concern_id for e in in_window(history, current, PORTSMOUTH, 30)] == ["c1", "c3"]


@pytest.mark.parametrize(
    ("events", "met"),
    [
        # (day, agency) of earlier concerns; the new one is day 60 from force-a.
        ([], set()),
        ([(0, "force-a")], set()),
        ([(0, "force-a"), (20, "force-a")], {"third"}),
        ([(40, "force-b")], {"agencies"}),
        ([(20, "force-b")], set()),  # 40 days before: outside the 30-day window
        ([(0, "force-a"), (40, "force-b")], {"third", "agencies"}),
        ([(-400, "force-a"), (-300, "force-b")], set()),  # older than a year
    ],
)
def test_thresholds_are_met_exactly_when_their_counts_are_reached(
    events: list[tuple[int, str]], met: set[str]
) -> None:
    history = [ev(i, d, agency) for i, (d, agency) in enumerate(events)]
    current = ev(99, 60, "force-a")
    flag = cumulative_flag(history, current, PORTSMOUTH, [THIRD, AGENCIES], subject_ref="S1")
    assert ({m.threshold_id for m in flag.met} if flag else set()) == met


def test_the_flag_gives_counts_highest_grade_and_earlier_ids() -> None:
    history = [ev(1, 0, grade=RiskGrade.MEDIUM), ev(2, 10, "force-b")]
    flag = cumulative_flag(history, ev(3, 20), PORTSMOUTH, [THIRD, AGENCIES], subject_ref="S1")
    assert flag is not None
    third, agencies = flag.met
    assert (third.concerns, third.agencies, third.highest_grade) == (3, 2, RiskGrade.MEDIUM)
    assert third.earlier_concern_ids == ("c1", "c2")
    assert agencies.concerns == 3 and agencies.agencies == 2
    assert flag.earlier_concern_ids == ("c1", "c2")
    payload = flag.to_payload()
    assert payload["earlier_concern_ids"] == ["c1", "c2"]
    assert [t["id"] for t in payload["thresholds"]] == ["third", "agencies"]
    assert all("referred to the front door" in r for r in flag.reasons())


def test_a_threshold_applies_only_to_its_partnerships() -> None:
    only_soton = THIRD.model_copy(update={"lscps": (Lscp.SOUTHAMPTON,)})
    history = [ev(1, 0), ev(2, 1)]
    assert cumulative_flag(history, ev(3, 2), PORTSMOUTH, [only_soton], subject_ref="S1") is None


def test_pruning_drops_what_no_window_can_count_and_duplicates() -> None:
    events = [ev(1, 0), ev(2, 100), ev(2, 100), ev(3, 400)]
    kept = prune_events(events, T0 + timedelta(days=400), 365)
    assert [e.concern_id for e in kept] == ["c2", "c3"]


# ---------------------------------------------------------------- policy


def test_the_shipped_thresholds_load_and_change_the_revision() -> None:
    files = {
        f"deploy/policy/{p.name}": p.read_text(encoding="utf-8")
        for p in sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    }
    policy = parse_policy(files)
    assert {(t.id, t.window_days, t.min_concerns, t.min_agencies) for t in policy.thresholds} == {
        ("third-concern-12-months", 365, 3, None),
        ("two-agencies-30-days", 30, None, 2),
    }
    without = parse_policy({k: v for k, v in files.items() if "cumulative" not in k})
    assert without.thresholds == () and without.revision != policy.revision


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('id = "x"\ntitle = "t"\nwindow_days = 30\nsource = "s"', "min_concerns"),
        ('id = "x"\ntitle = "t"\nwindow_days = 0\nmin_concerns = 3\nsource = "s"', "window_days"),
        ('id = "x"\ntitle = "t"\nwindow_days = 9\nmin_concerns = 1\nsource = "s"', "min_concerns"),
    ],
)
def test_a_bad_threshold_is_refused_with_its_field(table: str, words: str) -> None:
    files = {
        f"deploy/policy/{p.name}": p.read_text(encoding="utf-8")
        for p in sorted((ROOT / "deploy" / "policy").glob("*.toml"))
        if "cumulative" not in p.name
    }
    files["deploy/policy/bad.toml"] = f"[[cumulative_threshold]]\n{table}\n"
    with pytest.raises(PolicyError, match=words):
        parse_policy(files)


# ---------------------------------------------------------------- the front door's referral


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    files = sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    return parse_policy({f"deploy/policy/{p.name}": p.read_text(encoding="utf-8") for p in files})


@pytest.fixture(scope="module")
def directory() -> Any:
    from consent import parse_directory

    text = (ROOT / "deploy" / "directory.toml").read_text(encoding="utf-8")
    return parse_directory(text, "deploy/directory.toml")


def _flag() -> Any:
    here = ("hampshire",)
    history = [ev(1, 0, lscps=here), ev(2, 1, lscps=here)]
    flag = cumulative_flag(history, ev(3, 2, lscps=here), Lscp.HAMPSHIRE, [THIRD], subject_ref="S1")
    assert flag is not None
    return flag


@pytest.mark.parametrize(
    ("consent", "min_grade", "before", "reason_codes"),
    [
        ("GIVEN", "LOW", "PERMIT", (ReasonCode.CUMULATIVE_CONCERN,)),
        ("GIVEN", "MEDIUM", "DENY", (ReasonCode.CUMULATIVE_CONCERN,)),  # below threshold
        (
            "REFUSED",
            "LOW",
            "REFER",
            (ReasonCode.CONSENT_REFUSED, ReasonCode.CUMULATIVE_CONCERN),
        ),
    ],
)
def test_a_flagged_low_concern_is_referred_to_the_front_door(
    policy: PolicySet,
    directory: Any,
    consent: str,
    min_grade: str,
    before: str,
    reason_codes: tuple[ReasonCode, ...],
) -> None:
    agreements = tuple(
        a.model_copy(update={"min_risk_grade": RiskGrade(min_grade)})
        if a.id == "police-csc-front-door"
        else a
        for a in policy.agreements
    )
    custom = PolicySet(agreements=agreements, profiles=policy.profiles)
    concern = make_concern(risk="LOW", consent=consent)
    door = rec(directory, "hampshire-csc")
    state = ConsentState(consent)
    plain = decide(concern, door, custom, state, NOW)
    assert plain.kind == before
    flagged = decide(concern, door, custom, state, NOW, cumulative=[_flag()])
    assert isinstance(flagged, Refer)
    assert flagged.reason_codes == reason_codes
    assert flagged.profile.name == "safeguarding-full"
    assert flagged.decision_id == plain.decision_id
    assert any("cumulative-concern threshold 'third'" in r for r in flagged.reasons)


def test_only_the_front_door_is_escalated(policy: PolicySet, directory: Any) -> None:
    concern = make_concern(risk="LOW", consent="GIVEN")
    school = rec(directory, "school-116439")
    plain = decide(concern, school, policy, ConsentState.GIVEN, NOW)
    assert decide(concern, school, policy, ConsentState.GIVEN, NOW, cumulative=[_flag()]) == plain
    assert isinstance(plain, PermitDecision)


def test_a_front_door_without_a_lawful_basis_stays_denied_with_the_flag_recorded(
    policy: PolicySet, directory: Any
) -> None:
    adults_only = make_concern(risk="LOW", consent="GIVEN").model_copy(
        update={"subjects": make_concern().subjects[1:]}
    )
    door = rec(directory, "hampshire-csc")
    flagged = decide(adults_only, door, policy, ConsentState.GIVEN, NOW, cumulative=[_flag()])
    assert isinstance(flagged, Deny) and flagged.reason is ReasonCode.NO_LAWFUL_BASIS
    assert any("could not be shared" in r for r in flagged.reasons)


# ---------------------------------------------------------------- the state store


def test_the_store_counts_pending_until_commit_and_forgets_on_abort() -> None:
    store = SignalStore(topic="hips.signals", bootstrap_servers="127.0.0.1:1", keep_days=365)
    p = "a" * 32
    out = store.note([p, p], ev(1, 0))
    assert len(out) == 1 and out[0].key == p.encode() and out[0].topic == "hips.signals"
    assert [e.concern_id for e in store.history([p])] == ["c1"]
    store.aborted()
    assert store.history([p]) == []
    store.note([p], ev(1, 0))
    store.committed()
    store.note([p], ev(2, 5))
    assert [e.concern_id for e in store.history([p])] == ["c1", "c2"]
    store.aborted()
    assert [e.concern_id for e in store.history([p])] == ["c1"]


def test_the_store_rebuilds_from_records_and_a_tombstone_erases() -> None:
    store = SignalStore(topic="hips.signals", bootstrap_servers="127.0.0.1:1", keep_days=365)
    p, q = "b" * 32, "c" * 32
    events = (ev(1, 0), ev(2, 3, "force-b", RiskGrade.HIGH, ("portsmouth", "southampton")))
    value = encode_signal_state(events)
    assert decode_signal_state(value) == events
    json.loads(value)  # JSON, with ids, times, agencies, grades and partnerships only
    store.apply(p.encode(), value)
    store.apply(q.encode(), value)
    store.apply(b"Mia Thornbury", value)  # not a pseudonym: ignored
    store.apply(p.encode(), b"not json")  # malformed: ignored, the state stands
    assert len(store) == 2 and store.history([p, q]) == list(events)
    store.apply(p.encode(), None)
    assert store.history([p]) == [] and len(store) == 1


def test_a_lagging_follower_never_takes_a_count_away() -> None:
    store = SignalStore(topic="hips.signals", bootstrap_servers="127.0.0.1:1", keep_days=365)
    p = "f" * 32
    (first,) = store.note([p], ev(1, 0))
    store.committed()
    (second,) = store.note([p], ev(2, 5))
    store.committed()
    # The follower now reads the router's own records, the older one first.
    store.apply(first.key, first.value)
    assert [e.concern_id for e in store.history([p])] == ["c1", "c2"]
    store.apply(second.key, second.value)
    assert [e.concern_id for e in store.history([p])] == ["c1", "c2"]


def test_a_child_under_two_pseudonyms_is_counted_once() -> None:
    store = SignalStore(topic="hips.signals", bootstrap_servers="127.0.0.1:1", keep_days=365)
    nhs, police = "d" * 32, "e" * 32
    store.note([nhs], ev(1, 0))
    store.note([police], ev(2, 1))
    store.note([nhs, police], ev(3, 2))
    assert sorted(e.concern_id for e in store.history([nhs, police])) == ["c1", "c2", "c3"]


# ---------------------------------------------------------------- RouterCore


def _core(runtime: Runtime) -> RouterCore:
    return RouterCore(
        codec=runtime.codec,
        deployment=runtime.deployment,
        keyring=runtime.keyring(),
        identity=runtime.keys.signing_identity("safer-router"),
        recipient_key=runtime.keys.encryption_public,
        pseudonym_secret=runtime.keys.pseudonym_secret(),
        topics=runtime.settings.topics,
        signals=runtime.signal_store(),
    )


def _low(example: dict[str, Any], n: int, days: int) -> dict[str, Any]:
    data = copy.deepcopy(example)
    data["concern_id"] = f"00000000-0000-4000-8000-{n:012d}"
    data["risk_grade"] = "LOW"
    data["consent"]["state"] = "GIVEN"
    when = NOW - timedelta(days=70 - days)
    data["reported_at"] = when.isoformat()
    data["occurred_at"] = (when - timedelta(hours=1)).isoformat()
    data["consent"]["recorded_at"] = (when - timedelta(minutes=30)).isoformat()
    return data


def test_router_core_flags_the_third_low_concern_and_audits_it(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    core = _core(runtime)
    assert core.signals is not None
    flagged_at = []
    for n, days in enumerate((0, 35, 56), start=1):
        record = _signed(runtime, _low(example_concern, n, days))
        plan = core.plan(
            topic="hips.inbound.police",
            partition=0,
            offset=n,
            key=record.key,
            value=record.value,
            headers=record.headers,
            now=NOW,
        )
        core.signals.committed()
        assert plan.quarantine_code is None
        assert [o.topic for o in plan.bookkeeping] == ["hips.signals"]
        audits: list[AuditRecord] = _audits(runtime, plan)
        flags = [a for a in audits if a.event is AuditEvent.RISK_FLAGGED]
        door = next(a for a in audits if a.recipient == "portsmouth-csc" and a.disclosure_id)
        if flags:
            flagged_at.append(n)
            (flag,) = flags
            assert flag.recipient == "portsmouth-csc" and flag.lscp == "portsmouth"
            assert flag.disclosure_id == door.disclosure_id
            assert flag.reason_codes == ("CUMULATIVE_CONCERN",)
            assert "third-concern-12-months" in " ".join(flag.reasons)
            assert "Walker" not in json.dumps(flag.to_avro(), default=str)
            assert door.event is AuditEvent.REFERRED
            assert "CUMULATIVE_CONCERN" in door.reason_codes
            assert "cumulative_concern" in door.fields_disclosed
        else:
            assert door.event is AuditEvent.DISCLOSED
    assert flagged_at == [3]


def _moved(data: dict[str, Any], la_code: str, incident_la: str) -> dict[str, Any]:
    data["subjects"][0]["address"] = {
        **data["subjects"][0]["address"],
        "la_code": la_code,
        "postcode": "SO14 2AA",
        "town": "Southampton",
    }
    data["incident_location"] = {**data["incident_location"], "la_code": incident_la}
    return data


@pytest.mark.parametrize(
    ("incident_la", "flagged_doors"),
    [
        ("E06000045", set()),  # moved to Southampton: earlier concerns never went there
        ("E06000044", {"portsmouth-csc"}),  # the incident was in Portsmouth: it goes to both
    ],
)
def test_the_signal_crosses_a_partnership_boundary_only_with_the_childs_routing(
    runtime: Runtime, example_concern: dict[str, Any], incident_la: str, flagged_doors: set[str]
) -> None:
    core = _core(runtime)
    assert core.signals is not None
    items = [_low(example_concern, 1, 0), _low(example_concern, 2, 35)]
    items.append(_moved(_low(example_concern, 3, 56), "E06000045", incident_la))
    for n, data in enumerate(items, start=1):
        record = _signed(runtime, data)
        plan = core.plan(
            topic="hips.inbound.police",
            partition=0,
            offset=n,
            key=record.key,
            value=record.value,
            headers=record.headers,
            now=NOW,
        )
        core.signals.committed()
        assert plan.quarantine_code is None
    audits = _audits(runtime, plan)
    assert "southampton-csc" in {a.recipient for a in audits}
    flags = [a for a in audits if a.event is AuditEvent.RISK_FLAGGED]
    assert {a.recipient for a in flags} == flagged_doors
