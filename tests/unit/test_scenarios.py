"""The scenario table (tests/scenarios/scenarios.toml), run as parametrised tests.

Each scenario's concern is routed exactly as the router routes it (partnerships,
then candidate recipients from the real directory), and ``decide()`` rules on
every candidate under the shipped policy. The test fails if a candidate has no
expectation, an expectation names a recipient that is not a candidate, or any
outcome, reason code or cited lawful basis differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import PostcodeTable, candidate_recipients, parse_postcode_table, resolve_partnerships
from consent import (
    Decision,
    Deny,
    Directory,
    PolicySet,
    current_consent,
    decide,
    minimise,
    parse_directory,
    parse_policy,
)
from tests.scenarios.build import NOW, SCENARIO_FILE, Scenario, load_scenarios

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = load_scenarios()
ISSUE_CASES = {
    # issue 3 §6: every listed case has at least one scenario
    "consent refused but risk of significant harm": "consent-refused-risk-of-significant-harm",
    "consent refused at low risk": "consent-refused-low-risk",
    "a baby who cannot speak": "baby-who-cannot-speak-observed-voice",
    "a home-educated child": "home-educated-child-domestic-abuse",
    "a looked-after child placed out of area": "looked-after-child-placed-out-of-area",
    "a 17-year-old": "seventeen-year-old-is-a-child",
    "an 18-year-old": "eighteen-year-old-is-a-young-adult",
    "a restricted record": "restricted-record",
    "county lines across two partnerships": "county-lines-across-two-partnerships",
    "a withdrawn consent": "withdrawn-consent-record-newer-than-statement",
}


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    files = sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    return parse_policy({str(p): p.read_text(encoding="utf-8") for p in files})


@pytest.fixture(scope="module")
def directory() -> Directory:
    path = ROOT / "deploy" / "directory.toml"
    return parse_directory(path.read_text(encoding="utf-8"), str(path))


@pytest.fixture(scope="module")
def postcodes() -> PostcodeTable:
    path = ROOT / "deploy" / "postcode_districts.toml"
    return parse_postcode_table(path.read_text(encoding="utf-8"), str(path))


def _decisions(
    scenario: Scenario, policy: PolicySet, directory: Directory, postcodes: PostcodeTable
) -> dict[str, Decision]:
    concern = scenario.concern
    routing = resolve_partnerships(concern, postcodes)
    consent = current_consent(concern.consent, scenario.consent_record)
    return {
        c.recipient.id: decide(concern, c.recipient, policy, consent, NOW)
        for c in candidate_recipients(concern, routing, directory)
    }


def test_the_table_is_big_enough_and_covers_the_issue() -> None:
    assert len(SCENARIOS) >= 40
    ids = [s.id for s in SCENARIOS]
    assert len(ids) == len(set(ids)), "scenario ids must be unique"
    missing = {case for case, sid in ISSUE_CASES.items() if sid not in ids}
    assert not missing, f"issue 3 §6 cases without a scenario: {missing}"
    assert all(s.rationale.strip() for s in SCENARIOS)
    # Every outcome and the main reason codes appear somewhere.
    seen = {(e.outcome, e.detail) for s in SCENARIOS for e in s.expect.values()}
    outcomes = {o for o, _ in seen}
    assert outcomes == {"PERMIT", "DENY", "REFER"}
    codes = {d for o, d in seen if o != "PERMIT"}
    assert {
        "NO_LAWFUL_BASIS",
        "BELOW_THRESHOLD",
        "CONSENT_REFUSED",
        "RESTRICTED_RECORD",
    } <= codes
    assert SCENARIO_FILE.name == "scenarios.toml"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(
    scenario: Scenario, policy: PolicySet, directory: Directory, postcodes: PostcodeTable
) -> None:
    if scenario.quarantine is not None:
        routing = resolve_partnerships(scenario.concern, postcodes)
        assert scenario.quarantine == "ADDRESS_UNRESOLVED"
        assert routing.lscps == [], "the router would not quarantine this concern"
        assert not scenario.expect
        return
    decisions = _decisions(scenario, policy, directory, postcodes)
    assert set(decisions) == set(scenario.expect), (
        f"{scenario.id}: candidates {sorted(decisions)} differ from the table "
        f"{sorted(scenario.expect)}"
    )
    problems: list[str] = []
    for recipient_id, expected in scenario.expect.items():
        decision = decisions[recipient_id]
        got = decision.kind
        if got != expected.outcome:
            problems.append(f"{recipient_id}: {got}, expected {expected.outcome}")
            continue
        if isinstance(decision, Deny) or got == "REFER":
            code = decision.reason_codes[0].value
            if code != expected.detail:
                problems.append(f"{recipient_id}: {got} {code}, expected {expected.detail}")
        elif expected.detail is not None and decision.lawful_basis != expected.detail:
            problems.append(
                f"{recipient_id}: basis {decision.lawful_basis}, expected {expected.detail}"
            )
        assert decision.reasons, f"{recipient_id}: a decision without reasons"
    assert not problems, f"{scenario.id} ({scenario.rationale}): " + "; ".join(problems)

    for recipient_id in {**scenario.fields, **scenario.not_fields}:
        decision = decisions[recipient_id]
        assert not isinstance(decision, Deny), f"{recipient_id}: nothing is shared to check"
        payload = minimise(scenario.concern, decision.profile, decision.withheld_subject_refs)
        if recipient_id in scenario.fields:
            assert set(scenario.fields[recipient_id]) <= set(payload.fields), recipient_id
        for absent in scenario.not_fields.get(recipient_id, []):
            assert absent not in payload.fields, f"{recipient_id} must not see {absent}"
            assert absent not in decision.profile.fields, f"{recipient_id}'s profile has {absent}"
    for recipient_id, refs in scenario.withheld.items():
        decision = decisions[recipient_id]
        assert not isinstance(decision, Deny)
        assert sorted(decision.withheld_subject_refs) == sorted(refs), recipient_id


def test_consent_reasons_name_what_applied(
    policy: PolicySet, directory: Directory, postcodes: PostcodeTable
) -> None:
    """Decisions explain which NOT_SOUGHT reason or consent record applied."""
    by_id = {s.id: s for s in SCENARIOS}
    cases = {
        "not-sought-prejudice-prevention-detection": "PREJUDICE_PREVENTION_DETECTION",
        "not-sought-not-practicable": "NOT_PRACTICABLE",
        "not-sought-child-not-competent": "CHILD_NOT_COMPETENT",
        "da-high-consent-not-sought-child-at-risk": "RISK_TO_CHILD",
        "override-with-justification-low": "SIGNIFICANT_HARM",
    }
    for scenario_id, code in cases.items():
        scenario = by_id[scenario_id]
        decisions = _decisions(scenario, policy, directory, postcodes)
        door = next(d for rid, d in decisions.items() if rid.endswith("-csc"))
        assert any(code in r for r in door.reasons), (scenario_id, door.reasons)
        assert door.summary.consent_reason == code
    withdrawn = _decisions(
        by_id["withdrawn-consent-record-newer-than-statement"], policy, directory, postcodes
    )["hampshire-csc"]
    assert withdrawn.consent_state.value == "WITHDRAWN"
    assert withdrawn.summary.consent_source == "consent-record"
    assert any("consent record" in r for r in withdrawn.reasons)
    older = _decisions(
        by_id["withdrawn-consent-record-older-than-statement"], policy, directory, postcodes
    )["hampshire-csc"]
    assert older.consent_state.value == "GIVEN"
    assert older.summary.consent_source == "concern"
