"""Issue 16 in RouterCore.plan: risk-assessment refusals and warnings (real crypto, no Kafka)."""

from __future__ import annotations

from typing import Any

from audit import parse_risk_reason
from safer import Runtime
from schemas import ConcernModel, ReasonCode
from tests.unit.test_router_core import _audits, _plan, _signed


def _assessed(example: dict[str, Any], **change: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subject_ref": "S1",
        "grade": "HIGH",
        "rationale": "third incident at the address in 12 months; child present",
        "method": "DASH",
        "dash_score": 16,
        "factors": ["DOMESTIC_ABUSE"],
        "assessed_by": "PC 4521",
        "assessed_at": "2026-11-23T01:00:00Z",
    }
    item.update(change)
    return {**example, "risk_assessments": [item]}


def test_high_without_a_rationale_is_quarantined_with_its_code(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    data = _assessed(example_concern, rationale=None)
    plan = _plan(runtime.router_core(), _signed(runtime, data))
    assert plan.quarantine_code is ReasonCode.RISK_RATIONALE_MISSING
    (audit,) = _audits(runtime, plan)
    assert audit.reason_codes == ("RISK_RATIONALE_MISSING",)
    assert "risk_assessments[0].rationale" in audit.reasons[0]


def test_a_dash_score_against_the_grade_is_a_warning_in_every_decision(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    data = _assessed(example_concern, dash_score=4)
    plan = _plan(runtime.router_core(), _signed(runtime, data))
    assert plan.quarantine_code is None
    audits = _audits(runtime, plan)
    assert audits and all(
        any(r.startswith("warning: risk_assessments[0]") for r in a.reasons) for a in audits
    )
    agreeing = _plan(runtime.router_core(), _signed(runtime, _assessed(example_concern)))
    assert not any("warning:" in r for a in _audits(runtime, agreeing) for r in a.reasons)
    # Every decision records the assessment in codes, for `safer audit risk` to read back.
    for audit in _audits(runtime, agreeing):
        parsed = [p for p in map(parse_risk_reason, audit.reasons) if p is not None]
        assert [(p.subject_ref, p.grade.value, [f.value for f in p.factors]) for p in parsed] == [
            ("S1", "HIGH", ["DOMESTIC_ABUSE"])
        ]


def test_the_police_adapter_refuses_high_without_a_rationale(
    runtime: Runtime, example_concern: dict[str, Any], tmp_path: Any
) -> None:
    import json

    path = tmp_path / "in.json"
    path.write_text(json.dumps(_assessed(example_concern, rationale=None)))
    (parsed,) = runtime.police_adapter().parse_files([path])
    assert parsed.status == "RISK_RATIONALE_MISSING" and parsed.concern is None
    assert "risk_assessments[0].rationale" in parsed.detail
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(_assessed(example_concern)))
    (good,) = runtime.police_adapter().parse_files([ok])
    assert isinstance(good.concern, ConcernModel) and good.concern.risk_assessments
