"""Equality monitoring, aggregate only (issue 14, docs/EQUALITY.md).

Concern v4 carries an optional ONS 2021 ethnic group per subject. It never reaches a
recipient through a shipped profile; the router records only the concern's children
counted by high-level group; trails and the s.62 log do not show that line; the
analysts' dashboard turns it into suppressed counts, rates and relative rate indices.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest

from adapters import synthetic_concerns
from adapters._police import SDE_CODES, parse_police_json
from audit import (
    AuditRecord,
    Period,
    entry_id_for,
    equality_counts,
    equality_reasons,
    load_population,
    parse_equality_reason,
    s62_log,
    trail,
)
from consent import Profile, minimise, parse_policy
from safer.web._dashboard import build_dashboard
from schemas import (
    ETHNIC_GROUP_HIGH,
    AuditEvent,
    ConcernModel,
    EthnicGroup,
    EthnicGroupHigh,
    catalogue,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
POPULATION = ROOT / "deploy" / "equality" / "population-0-17.toml"


def _concern(**child: Any) -> ConcernModel:
    raw = synthetic_concerns(1, seed=3, now=NOW)[0]
    for subject in raw["subjects"]:
        if subject["role"] == "CHILD":
            subject.update(child)
    return ConcernModel.model_validate(raw)


# -- the categories and the schema ---------------------------------------------------------


def test_ons_2021_categories_nineteen_in_five_groups_plus_not_stated() -> None:
    detailed = [g for g in EthnicGroup if g is not EthnicGroup.NOT_STATED]
    assert len(detailed) == 19
    sizes = {high.value: len(groups) for high, groups in ETHNIC_GROUP_HIGH.items()}
    assert sizes == {"ASIAN": 5, "BLACK": 3, "MIXED": 4, "WHITE": 5, "OTHER": 2, "NOT_STATED": 1}
    assert EthnicGroup.WHITE_ROMA.high_level is EthnicGroupHigh.WHITE
    assert EthnicGroup.OTHER_ARAB.high_level is EthnicGroupHigh.OTHER


def test_concern_v4_reads_v3_data_and_v3_reads_v4_data() -> None:
    versions = {v.version: v for v in catalogue()["concern"]}
    v3, v4 = versions[3], versions[4]
    assert max(versions) == 4
    record = _concern(ethnicity="BLACK_AFRICAN").to_avro()
    written = io.BytesIO()
    fastavro.schemaless_writer(written, v4.parsed, record)
    old = fastavro.schemaless_reader(io.BytesIO(written.getvalue()), v4.parsed, v3.parsed)
    assert all("ethnicity" not in s for s in old["subjects"])  # an old reader skips it
    older = io.BytesIO()
    fastavro.schemaless_writer(older, v3.parsed, old)
    new = fastavro.schemaless_reader(io.BytesIO(older.getvalue()), v3.parsed, v4.parsed)
    assert {s["ethnicity"] for s in new["subjects"]} == {None}  # not recorded
    assert ConcernModel.from_avro(new).subjects[0].ethnicity is None


# -- the police format and the generator ---------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("W1", "WHITE_BRITISH"),
        ("a2", "ASIAN_PAKISTANI"),
        ("white_roma", "WHITE_ROMA"),
        ("NS", "NOT_STATED"),
    ],
)
def test_police_json_maps_18_plus_1_codes_and_category_names(sent: str, kept: str) -> None:
    raw = synthetic_concerns(1, seed=3, now=NOW)[0]
    raw["subjects"][0]["ethnicity"] = sent
    [parsed] = parse_police_json(
        json.dumps(raw), source="t.json", publisher_id=raw["source_agency"], now=NOW
    )
    assert parsed.concern is not None, parsed.detail
    assert parsed.concern.subjects[0].ethnicity == EthnicGroup(kept)


def test_police_json_refuses_an_unknown_ethnicity_code_without_echoing_it() -> None:
    raw = synthetic_concerns(1, seed=3, now=NOW)[0]
    raw["subjects"][0]["ethnicity"] = "Q7ZZ"
    [parsed] = parse_police_json(
        json.dumps(raw), source="t.json", publisher_id=raw["source_agency"], now=NOW
    )
    assert parsed.concern is None and parsed.status == "SCHEMA_INVALID"
    assert "ethnicity" in (parsed.detail or "") and "Q7ZZ" not in (parsed.detail or "")
    assert len(SDE_CODES) == 19  # the 18 groups of 2011 and "not stated"


def test_generator_gives_children_an_ethnicity_from_its_own_stream() -> None:
    concerns = synthetic_concerns(300, seed=5, now=NOW)
    stripped = [
        {**c, "subjects": [{k: v for k, v in s.items() if k != "ethnicity"} for s in c["subjects"]]}
        for c in concerns
    ]
    # The people, places and decisions a seed gives do not depend on ethnicity.
    again = synthetic_concerns(300, seed=5, now=NOW)
    assert again == concerns
    assert len({json.dumps(c, sort_keys=True) for c in stripped}) == 300
    groups: Counter[str] = Counter()
    for c in concerns:
        ConcernModel.model_validate(c)
        for s in c["subjects"]:
            if s["role"] in ("CHILD", "SIBLING"):
                groups[s["ethnicity"] or "not recorded"] += 1
            else:
                assert s["ethnicity"] is None, "adults are not monitored"
    high = Counter(
        EthnicGroup(g).high_level.value for g in groups.elements() if g != "not recorded"
    )
    assert groups["not recorded"] > 0 and high["NOT_STATED"] > 0
    assert high["WHITE"] > high["ASIAN"] > 0 and high["BLACK"] > 0


# -- minimisation ----------------------------------------------------------------------------


def _shipped_profiles() -> tuple[Profile, ...]:
    files = sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    policy = parse_policy({f"deploy/policy/{p.name}": p.read_text("utf-8") for p in files})
    return policy.profiles


def test_no_shipped_profile_discloses_ethnicity() -> None:
    concern = _concern(ethnicity="ASIAN_INDIAN")
    profiles = _shipped_profiles()
    assert any("subjects" in p.fields for p in profiles)  # the whole subject: still not it
    for profile in profiles:
        assert "subjects.ethnicity" not in profile.fields, profile.name
        payload = minimise(concern, profile, ())
        assert "ASIAN_INDIAN" not in json.dumps(payload.data), profile.name
        assert "ethnicity" not in json.dumps(payload.data), profile.name


def test_a_profile_that_names_ethnicity_gets_it() -> None:
    concern = _concern(ethnicity="ASIAN_INDIAN")
    profile = Profile(
        name="equality-research",
        description="test only",
        fields=("subjects.subject_ref", "subjects.role", "subjects.ethnicity"),
    )
    payload = minimise(concern, profile, ())
    child = next(s for s in payload.data["subjects"] if s["role"] == "CHILD")
    assert child["ethnicity"] == "ASIAN_INDIAN"


# -- what the router records, and what views show ------------------------------------------


def test_router_line_counts_children_by_high_level_group_only() -> None:
    concern = _concern(ethnicity="MIXED_WHITE_AND_ASIAN")
    [line] = equality_reasons(concern)
    children = len(concern.children())
    assert line.endswith(f"MIXED {children}")
    assert "MIXED_WHITE_AND_ASIAN" not in line and "S1" not in line
    assert parse_equality_reason(line) == (concern.concern_type.value, Counter(MIXED=children))
    assert equality_reasons(_concern(ethnicity=None)) == ()  # not recorded: not monitored


def _decision(
    n: int, concern: str, line: str, *, lscp: str = "portsmouth", at: datetime = NOW
) -> AuditRecord:
    return AuditRecord(
        seq=n,
        entry_id=entry_id_for(AuditEvent.DISCLOSED, f"d{n}"),
        event=AuditEvent.DISCLOSED,
        disclosure_id=f"{n:032x}",
        concern_id=concern,
        subject_pseudonyms=(f"{n:032x}",),
        source="hampshire-constabulary",
        recipient=f"r{n}",
        lscp=lscp,
        reasons=("agreement covers it for concern type NEGLECT", line),
        at=at,
        actor="safer-router",
    )


def _line(ctype: str, **counts: int) -> str:
    body = ", ".join(f"{g} {n}" for g, n in counts.items())
    prefix = "equality monitoring (aggregate): children by ethnic group for concern type"
    return f"{prefix} {ctype}: {body}"


def test_trail_and_s62_views_leave_the_line_out() -> None:
    record = _decision(1, "c1", _line("NEGLECT", BLACK=1))
    [entry] = trail([record], subjects=record.subject_pseudonyms)
    assert entry.reasons == ("agreement covers it for concern type NEGLECT",)
    [s62] = s62_log([record], Period())
    assert all("ethnic" not in r for r in s62.reasons)


def test_counts_each_concern_once_per_partnership() -> None:
    records = [
        _decision(1, "c1", _line("NEGLECT", WHITE=2)),
        _decision(2, "c1", _line("NEGLECT", WHITE=2)),  # second recipient, same concern
        _decision(3, "c2", _line("NEGLECT", ASIAN=1, NOT_STATED=1)),
        _decision(4, "c3", _line("MISSING", BLACK=1), lscp="southampton"),
    ]
    table = equality_counts(records, lscp="portsmouth")
    assert table == {"NEGLECT": Counter(WHITE=2, ASIAN=1, NOT_STATED=1)}


# -- the dashboard: counts, rates, RRI, suppression ------------------------------------------


def test_reference_data_names_its_source_and_says_it_must_be_checked() -> None:
    population = load_population(POPULATION)
    assert set(population.children) == {"hampshire", "isle-of-wight", "portsmouth", "southampton"}
    assert "TS021" in population.source and "0-17" in population.source
    assert population.warning, "placeholder figures must carry their warning"
    text = POPULATION.read_text("utf-8")
    assert "CHECK BEFORE USE" in text


def test_dashboard_rates_rri_and_suppression() -> None:
    population = load_population(POPULATION)
    people = population.of("portsmouth")
    records: list[AuditRecord] = []
    n = 0
    # NEGLECT: 40 White, 10 Asian, 6 Black, 3 Mixed (suppressed), 0 Other, 7 not stated.
    # MISSING: 2 White (suppressed: every RRI of the row goes), 8 Asian.
    for ctype, group, children in [
        ("NEGLECT", "WHITE", 40),
        ("NEGLECT", "ASIAN", 10),
        ("NEGLECT", "BLACK", 6),
        ("NEGLECT", "MIXED", 3),
        ("NEGLECT", "NOT_STATED", 7),
        ("MISSING", "WHITE", 2),
        ("MISSING", "ASIAN", 8),
    ]:
        for _ in range(children):
            n += 1
            records.append(
                _decision(n, f"c{n}", _line(ctype, **{group: 1}), at=NOW - timedelta(hours=n))
            )
    dashboard = build_dashboard(
        records,
        [],
        partnership="portsmouth",
        grain="month",
        bucket="2026-11",
        now=NOW,
        population=population,
    )
    counts = dashboard.chart("equality")
    assert counts is not None
    rows = {row[0]: row[1:] for row in counts.csv_rows()[1:]}
    # columns: ASIAN BLACK MIXED WHITE OTHER NOT_STATED total
    # x: the secondary suppression of the smallest other non-zero count of the row
    assert rows["NEGLECT"] == ["10", "x", "<5", "40", "0", "7", "66"]
    assert rows["MISSING"] == ["x", "0", "0", "<5", "0", "0", "10"]
    rri = dashboard.chart("equality-rri")
    assert rri is not None
    data = rri.to_json()
    assert "TS021" in str(data["population_source"]) and data["population_warning"]
    by_type = {row[0]: row[1:] for row in data["rows"]}  # type: ignore[index, union-attr]
    white_rate = 40 * 10_000 / people["WHITE"]
    asian_rate = 10 * 10_000 / people["ASIAN"]
    neglect = by_type["NEGLECT"]
    assert neglect[0] == f"{asian_rate:.1f}" and neglect[1] == f"{asian_rate / white_rate:.2f}"
    assert neglect[2:4] == ["x", "x"]  # Black count hidden: so are its rate and RRI
    assert neglect[4:6] == ["<5", "<5"]  # Mixed
    assert neglect[6:8] == [f"{white_rate:.1f}", "1.00"]
    assert neglect[8:10] == ["0.0", "0.00"]  # Other: none
    missing = by_type["MISSING"]
    assert missing[6] == "<5"  # White suppressed ...
    assert all(v in ("<5", "x") for v in missing[1::2]), "... so no RRI in the row"
    # No figure 1-4 anywhere, in either export.
    for row in counts.csv_rows()[1:] + rri.csv_rows()[1:]:
        assert not any(cell in ("1", "2", "3", "4") for cell in row[1:])
