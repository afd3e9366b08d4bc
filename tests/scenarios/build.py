"""Builds concerns from the compact scenario descriptions in ``scenarios.toml``.

Shared by ``tests/unit/test_scenarios.py`` and ``bench/bench_decide.py``. A
scenario describes a concern in a few keys (type, grade, consent, children
with age and home partnership, adults by role...) and expects one outcome per
candidate recipient. Everything here is synthetic.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from consent import ConsentRecord
from schemas import LA_CODES, ConcernModel, ConsentState, Lscp

HERE = Path(__file__).resolve().parent
SCENARIO_FILE = HERE / "scenarios.toml"
#: The moment every scenario is decided at (ages are computed on it).
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
STATEMENT_AT = NOW - timedelta(hours=6)

_LA_OF = {lscp: code for code, lscp in LA_CODES.items()}
_POSTCODE = {
    Lscp.HAMPSHIRE: "SO50 5AA",
    Lscp.ISLE_OF_WIGHT: "PO30 1AA",
    Lscp.PORTSMOUTH: "PO2 8RL",
    Lscp.SOUTHAMPTON: "SO19 6LJ",
}
_ADULT_NAMES = {
    "PARENT_CARER": ("Kerry", "Ashdown"),
    "ALLEGED_PERPETRATOR": ("Wayne", "Pellow"),
    "OTHER_ADULT": ("Marion", "Tolley"),
    "SIBLING": ("Jordan", "Ashdown"),
}
_CHILD_NAMES = (("Ellie", "Ashdown"), ("Sam", "Ashdown"), ("Ruby", "Ashdown"))
_OUTCOMES = {"PERMIT", "DENY", "REFER"}


@dataclass(frozen=True)
class Expectation:
    outcome: str
    detail: str | None  # reason code for DENY/REFER; lawful basis id for PERMIT (optional)


@dataclass(frozen=True)
class Scenario:
    id: str
    rationale: str
    concern: ConcernModel
    consent_record: ConsentRecord | None
    expect: dict[str, Expectation]
    quarantine: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    not_fields: dict[str, list[str]] = field(default_factory=dict)
    withheld: dict[str, list[str]] = field(default_factory=dict)


def parse_expectation(text: str) -> Expectation:
    outcome, _, detail = text.partition(":")
    if outcome not in _OUTCOMES:
        raise ValueError(f"unknown outcome {text!r}")
    return Expectation(outcome, detail or None)


def _dob(child: dict[str, Any]) -> str | None:
    if "dob" in child:
        return str(child["dob"])
    if child.get("no_dob"):
        return None
    age = int(child["age"])
    if age == 0:
        return (NOW.date() - timedelta(days=200)).isoformat()
    born = date(NOW.year - age, NOW.month, NOW.day) - timedelta(days=40)
    return born.isoformat()


def _child(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    given, family = _CHILD_NAMES[index % len(_CHILD_NAMES)]
    home = Lscp(spec["home"]) if "home" in spec else None
    postcode = spec.get("postcode") or (_POSTCODE[home] if home else "SO50 5AA")
    subject: dict[str, Any] = {
        "subject_ref": f"S{index + 1}",
        "role": "CHILD",
        "given_name": given,
        "family_name": family,
        "date_of_birth": _dob(spec),
        "nhs_number": f"94347659{index + 10:02d}",
        "address": {
            "line1": f"{index + 3} Quarry Lane",
            "town": "Synthetic Town",
            "postcode": postcode,
            "la_code": _LA_OF[home] if home else None,
        },
        "school_urn": spec.get("school"),
        "home_educated": bool(spec.get("home_educated", False)),
        "looked_after": bool(spec.get("looked_after", False)),
        "responsible_la": _LA_OF[Lscp(spec["responsible"])] if "responsible" in spec else None,
        "care_leaver": bool(spec.get("care_leaver", False)),
    }
    return subject


def _adult(ref: int, role: str) -> dict[str, Any]:
    given, family = _ADULT_NAMES[role]
    adult: dict[str, Any] = {
        "subject_ref": f"S{ref}",
        "role": role,
        "given_name": given,
        "family_name": family,
        "date_of_birth": "1990-03-04" if role != "SIBLING" else "2008-01-02",
    }
    if role == "ALLEGED_PERPETRATOR":
        adult["police_person_id"] = f"HC-P-{ref:05d}"
    return adult


def build_concern(spec: dict[str, Any], number: int) -> ConcernModel:
    """The concern a scenario describes (``number`` makes its concern_id unique)."""
    children = [_child(i, c) for i, c in enumerate(spec["children"])]
    adults = [_adult(len(children) + i + 1, r) for i, r in enumerate(spec.get("adults", []))]
    first = spec["children"][0]
    incident = spec.get("incident", first.get("home"))
    location: dict[str, Any] | None
    if incident == "none":
        location = None
    elif "incident_postcode" in spec:
        location = {"description": "street", "postcode": spec["incident_postcode"]}
    elif incident is None:
        location = {"description": "street", "postcode": first.get("postcode")}
    else:
        lscp = Lscp(incident)
        location = {
            "description": "family home" if incident == first.get("home") else "town centre",
            "postcode": _POSTCODE[lscp],
            "la_code": _LA_OF[lscp],
        }
    voice = spec.get("voice", "both")
    voice_of_child = {
        "both": {"said": "I was scared", "observed": "quiet and withdrawn"},
        "said": {"said": "I was scared"},
        "observed": {"observed": "startled at raised voices; would not settle"},
        "none": None,
    }[voice]
    record = {
        "concern_id": f"00000000-0000-4000-8000-{number:012d}",
        "source_agency": "hampshire-constabulary",
        "source_ref": f"4426{number:07d}",
        "reported_at": (NOW - timedelta(hours=5)).isoformat(),
        "occurred_at": (NOW - timedelta(hours=8)).isoformat(),
        "concern_type": spec["type"],
        "risk_grade": spec["grade"],
        "subjects": children + adults,
        "incident_location": location,
        "child_present": True,
        "voice_of_child": voice_of_child,
        "narrative": "Officers attended a report of concern for a child.",
        "immediate_actions": "Safety plan agreed.",
        "consent": {
            "state": spec.get("consent", "NOT_SOUGHT"),
            "reason": spec.get("consent_reason"),
            "recorded_by": "PC 1234",
            "recorded_at": STATEMENT_AT.isoformat(),
        },
        "third_party_protection": spec.get("protect", []),
        "restricted": bool(spec.get("restricted", False)),
        "officer": {"name": "PC Alex Morgan", "collar_number": "1234", "email": "a@p.example"},
    }
    return ConcernModel.model_validate(record)


def build_record(spec: dict[str, Any] | None) -> ConsentRecord | None:
    """A consent record as if read from hips.consent, newer or older than the statement."""
    if spec is None:
        return None
    recorded = STATEMENT_AT + (
        timedelta(hours=1) if spec.get("newer", True) else -timedelta(hours=1)
    )
    expires = None
    if "expired" in spec:
        expires = NOW - timedelta(minutes=5) if spec["expired"] else NOW + timedelta(days=90)
    return ConsentRecord.create(
        subject_pseudonym="5" * 32,
        state=ConsentState(spec["state"]),
        decided_by="MASH team manager 4471",
        agency_id="hampshire-csc",
        recorded_at=recorded,
        not_sought_reason=spec.get("reason"),
        justification=spec.get("justification"),
        expires_at=expires,
    )


def load_scenarios(path: Path = SCENARIO_FILE) -> list[Scenario]:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    scenarios: list[Scenario] = []
    for number, spec in enumerate(raw["scenario"], start=1):
        scenarios.append(
            Scenario(
                id=spec["id"],
                rationale=spec["rationale"],
                concern=build_concern(spec, number),
                consent_record=build_record(spec.get("consent_record")),
                expect={k: parse_expectation(v) for k, v in spec.get("expect", {}).items()},
                quarantine=spec.get("quarantine"),
                fields=dict(spec.get("fields", {})),
                not_fields=dict(spec.get("not_fields", {})),
                withheld=dict(spec.get("withheld", {})),
            )
        )
    return scenarios
