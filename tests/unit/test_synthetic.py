"""Synthetic concerns (adapters/_synthetic.py) and the example police JSON files."""

from __future__ import annotations

import json
import random
import tomllib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters._synthetic import (
    DIRECTORY_SCHOOLS,
    nhs_check_digit,
    synthetic_concerns,
    synthetic_people,
)
from schemas import LA_CODES, ConcernModel, ConcernType, RiskGrade, SubjectRole, age_on

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
NOW = datetime(2026, 3, 2, 7, 45, 12, 345678, tzinfo=UTC)
STRADDLING = {"PO6", "SO16", "SO18"}


@pytest.fixture(scope="module")
def thousand() -> list[ConcernModel]:
    return [ConcernModel.model_validate(d) for d in synthetic_concerns(1000, seed=11, now=NOW)]


def _districts() -> dict[str, list[str]]:
    raw = tomllib.loads((ROOT / "deploy" / "postcode_districts.toml").read_text("utf-8"))
    return {k: list(v) for k, v in raw["districts"].items()}


def _share(concerns: list[ConcernModel], pred: Callable[[ConcernModel], bool]) -> float:
    return sum(1 for c in concerns if pred(c)) / len(concerns)


def _age(concern: ConcernModel, subject_index: int = 0) -> int | None:
    dob = concern.children()[subject_index].date_of_birth
    return age_on(dob, concern.reported_at) if dob else None


def _nhs_ok(number: str) -> bool:
    return (
        len(number) == 10
        and number.isdigit()
        and number.startswith("999")
        and nhs_check_digit(number[:9]) == int(number[9])
    )


# ----------------------------------------------------------------------------- determinism


def test_same_seed_and_now_give_identical_output() -> None:
    first = synthetic_concerns(60, seed=3, now=NOW)
    assert first == synthetic_concerns(60, seed=3, now=NOW)
    assert json.dumps(first) == json.dumps(synthetic_concerns(60, seed=3, now=NOW))


def test_different_seed_or_now_gives_different_output() -> None:
    base = synthetic_concerns(20, seed=3, now=NOW)
    other = synthetic_concerns(20, seed=4, now=NOW)
    assert base != other
    assert {c["concern_id"] for c in base}.isdisjoint(c["concern_id"] for c in other)
    assert base != synthetic_concerns(20, seed=3, now=NOW + timedelta(hours=1))


def test_global_random_is_untouched() -> None:
    state = random.getstate()
    synthetic_concerns(30, seed=5, now=NOW)
    assert random.getstate() == state


def test_prefix_is_stable() -> None:
    assert synthetic_concerns(10, seed=8, now=NOW) == synthetic_concerns(25, seed=8, now=NOW)[:10]


def test_now_must_be_aware_and_n_non_negative() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        synthetic_concerns(1, seed=1, now=datetime(2026, 3, 2, 7, 45))
    with pytest.raises(ValueError):
        synthetic_concerns(-1, seed=1, now=NOW)
    assert synthetic_concerns(0, seed=1, now=NOW) == []


def test_now_in_another_zone_gives_the_same_instants() -> None:
    plus_one = NOW.astimezone(timezone(timedelta(hours=1)))
    assert synthetic_concerns(5, seed=2, now=plus_one) == synthetic_concerns(5, seed=2, now=NOW)


# ----------------------------------------------------------------------------- validity


def test_every_concern_validates_and_is_canonical_json() -> None:
    raw = synthetic_concerns(300, seed=21, now=NOW)
    for item in raw:
        concern = ConcernModel.model_validate(json.loads(json.dumps(item)))
        # Already in the model's JSON form: dumping gives the same dict back.
        assert concern.model_dump(mode="json") == item
        assert concern.source_agency == "hampshire-constabulary"
        assert concern.source_ref.startswith("44") and len(concern.source_ref) == 11
        assert concern.source_ref.isdigit()
    assert len({item["concern_id"] for item in raw}) == 300


def test_minimum_dataset_is_always_present(thousand: list[ConcernModel]) -> None:
    for concern in thousand:
        children = concern.children()
        assert 1 <= len(children) <= 3
        assert concern.narrative.strip()
        assert concern.officer.name and (concern.officer.email or concern.officer.phone)
        for child in children:
            assert child.date_of_birth or child.nhs_number or child.police_person_id
            assert child.address is not None and (child.address.la_code or child.address.postcode)
        assert any(s.role is SubjectRole.PARENT_CARER for s in concern.subjects) or any(
            s.role is SubjectRole.ALLEGED_PERPETRATOR for s in concern.subjects
        )


def test_nhs_numbers_are_in_the_test_range_with_valid_check_digit(
    thousand: list[ConcernModel],
) -> None:
    numbers = [s.nhs_number for c in thousand for s in c.subjects if s.nhs_number]
    assert len(numbers) > 1000
    for number in numbers:
        assert _nhs_ok(number), number


def test_nhs_check_digit_known_values() -> None:
    assert nhs_check_digit("943476591") == 9  # the NHS Data Dictionary's worked example
    assert nhs_check_digit("999000001") == 8
    assert nhs_check_digit("999000005") == 0  # 11 becomes 0
    assert nhs_check_digit("999000000") is None  # 10: no valid number with these digits


def test_identifier_formats(thousand: list[ConcernModel]) -> None:
    for concern in thousand:
        assert concern.officer.email and concern.officer.email.endswith("@police.example.uk")
        assert concern.officer.collar_number and concern.officer.collar_number.isdigit()
        for subject in concern.subjects:
            pid = subject.police_person_id
            if pid is not None:
                assert pid.startswith("HC-P-") and len(pid) == 12 and pid[5:].isdigit()


def test_times(thousand: list[ConcernModel]) -> None:
    for concern in thousand:
        assert NOW - timedelta(days=2) <= concern.reported_at <= NOW
        assert concern.occurred_at < concern.reported_at
        assert concern.occurred_at <= concern.consent.recorded_at <= concern.reported_at
        assert concern.reported_at.microsecond == 0


def test_babies_are_at_least_six_weeks_old(thousand: list[ConcernModel]) -> None:
    # A date of birth close to "now" could look like a log timestamp in leak scans.
    for concern in thousand:
        for child in concern.children():
            if child.date_of_birth:
                assert child.date_of_birth <= concern.reported_at.date() - timedelta(days=42)


# ----------------------------------------------------------------------------- realism


def test_proportions_roughly_as_designed(thousand: list[ConcernModel]) -> None:
    types = Counter(c.concern_type for c in thousand)
    assert set(types) == set(ConcernType)
    assert types.most_common(1)[0][0] is ConcernType.DOMESTIC_ABUSE
    assert 0.28 <= types[ConcernType.DOMESTIC_ABUSE] / 1000 <= 0.42
    grades = Counter(c.risk_grade for c in thousand)
    assert 0.19 <= grades[RiskGrade.HIGH] / 1000 <= 0.31
    assert 0.38 <= grades[RiskGrade.MEDIUM] / 1000 <= 0.52
    assert 0.23 <= grades[RiskGrade.LOW] / 1000 <= 0.37
    consent = Counter(c.consent.state.value for c in thousand)
    assert consent.most_common(1)[0][0] == "NOT_SOUGHT"
    assert {"GIVEN", "REFUSED", "WITHDRAWN", "NOT_SOUGHT"} <= set(consent)
    not_sought = [c for c in thousand if c.consent.state.value == "NOT_SOUGHT"]
    assert all(c.consent.reason for c in not_sought)
    assert (
        _share(
            not_sought,
            lambda c: (c.consent.reason or "").startswith(
                "seeking consent would place the child at risk"
            ),
        )
        > 0.6
    )

    def cross_border(c: ConcernModel) -> bool:
        home = c.children()[0].address
        where = c.incident_location
        return bool(
            home and home.la_code and where and where.la_code and where.la_code != home.la_code
        )

    def placed_out(c: ConcernModel) -> bool:
        return any(
            s.looked_after
            and s.responsible_la in LA_CODES
            and s.address is not None
            and s.address.la_code in LA_CODES
            and s.responsible_la != s.address.la_code
            for s in c.children()
        )

    def straddling(c: ConcernModel) -> bool:
        home = c.children()[0].address
        return bool(home and home.la_code is None and home.postcode.split()[0] in STRADDLING)

    def young_adult(c: ConcernModel) -> bool:
        return any(
            s.date_of_birth and 18 <= age_on(s.date_of_birth, c.reported_at) <= 24
            for s in c.children()
        )

    assert 0.06 <= _share(thousand, cross_border) <= 0.15
    assert 0.03 <= _share(thousand, placed_out) <= 0.10
    assert 0.02 <= _share(thousand, lambda c: any(s.home_educated for s in c.children())) <= 0.08
    assert 0.02 <= _share(thousand, straddling) <= 0.09
    assert 0.05 <= _share(thousand, young_adult) <= 0.12
    assert _share(thousand, lambda c: any(s.care_leaver for s in c.children())) > 0.01
    assert 0.02 <= _share(thousand, lambda c: bool(c.third_party_protection)) <= 0.09
    assert 0.003 <= _share(thousand, lambda c: c.restricted) <= 0.05
    perpetrator = _share(
        thousand, lambda c: any(s.role is SubjectRole.ALLEGED_PERPETRATOR for s in c.subjects)
    )
    assert 0.2 <= perpetrator <= 0.8
    addresses = [s.address for c in thousand for s in c.subjects if s.address]
    no_code = sum(1 for a in addresses if a.la_code is None) / len(addresses)
    assert 0.12 <= no_code <= 0.28
    counts = Counter(len(c.children()) for c in thousand)
    assert set(counts) == {1, 2, 3}


def test_ages_cover_childhood_and_young_adults(thousand: list[ConcernModel]) -> None:
    ages = {
        age_on(s.date_of_birth, c.reported_at)
        for c in thousand
        for s in c.children()
        if s.date_of_birth
    }
    assert set(range(25)) <= ages
    assert max(ages) <= 24


def test_voice_of_child(thousand: list[ConcernModel]) -> None:
    babies = 0
    for concern in thousand:
        voice = concern.voice_of_child
        if voice is None:
            continue
        ages = [_age(concern, i) for i in range(len(concern.children()))]
        known = [a for a in ages if a is not None]
        if known and len(known) == len(ages) and max(known) < 2:
            babies += 1
            assert voice.said is None and voice.observed
        elif known and max(known) >= 2:
            assert voice.said
    assert babies > 5


def test_third_party_protection_names_a_non_child_subject(thousand: list[ConcernModel]) -> None:
    for concern in thousand:
        roles = {s.subject_ref: s.role for s in concern.subjects}
        for ref in concern.third_party_protection:
            assert ref in roles and roles[ref] is not SubjectRole.CHILD


def test_addresses_and_schools_match_the_partnership(thousand: list[ConcernModel]) -> None:
    districts = _districts()
    school_partnership = {urn: lscp for lscp, urns in DIRECTORY_SCHOOLS.items() for urn in urns}
    with_school = 0
    school_age = 0
    for concern in thousand:
        for subject in concern.subjects:
            if subject.address is None:
                continue
            district = subject.address.postcode.split()[0]
            assert district in districts, district
            candidates = districts[district]
            if subject.address.la_code is not None:
                assert subject.address.la_code in LA_CODES
                assert candidates == [LA_CODES[subject.address.la_code].value]
        for child in concern.children():
            age = age_on(child.date_of_birth, concern.reported_at) if child.date_of_birth else None
            if child.school_urn is not None:
                assert age is not None and 4 <= age <= 16
                assert not child.home_educated
                assert child.address is not None
                assert (
                    school_partnership[child.school_urn]
                    in districts[child.address.postcode.split()[0]]
                )
            if age is not None and 4 <= age <= 16 and not child.home_educated:
                school_age += 1
                with_school += child.school_urn is not None
            if child.home_educated:
                assert age is not None and 4 <= age <= 16
    assert with_school / school_age > 0.7


def test_directory_schools_can_be_overridden() -> None:
    only = {"portsmouth": ["100001"]}
    raw = synthetic_concerns(200, seed=9, now=NOW, directory_schools=only)
    urns = {s["school_urn"] for c in raw for s in c["subjects"] if s["school_urn"]}
    assert urns == {"100001"}
    none = synthetic_concerns(50, seed=9, now=NOW, directory_schools={})
    assert not any(s["school_urn"] for c in none for s in c["subjects"])


def test_directory_schools_match_deploy_directory() -> None:
    directory = tomllib.loads((ROOT / "deploy" / "directory.toml").read_text("utf-8"))
    from_file: dict[str, set[str]] = {}
    for recipient in directory["recipient"]:
        if "school_urn" in recipient:
            from_file.setdefault(recipient["lscp"], set()).add(recipient["school_urn"])
    assert {lscp: set(urns) for lscp, urns in DIRECTORY_SCHOOLS.items()} == from_file


# ----------------------------------------------------------------------------- people


def test_synthetic_people_lists_every_personal_value() -> None:
    raw = synthetic_concerns(100, seed=13, now=NOW)
    people = synthetic_people(raw)
    assert set(people) == {
        "names",
        "dates_of_birth",
        "nhs_numbers",
        "postcodes",
        "police_person_ids",
        "phones",
    }
    assert people["phones"], "adults carry phone numbers (concern v2)"
    for concern in raw:
        location = concern["incident_location"] or {}
        if location.get("postcode"):
            assert location["postcode"] in people["postcodes"]
        for s in concern["subjects"]:
            assert s["given_name"] in people["names"]
            assert s["family_name"] in people["names"]
            assert f"{s['given_name']} {s['family_name']}" not in people["names"]
            for key, kind in (
                ("date_of_birth", "dates_of_birth"),
                ("nhs_number", "nhs_numbers"),
                ("police_person_id", "police_person_ids"),
                ("phone", "phones"),
            ):
                if s[key] is not None:
                    assert s[key] in people[kind]
            if s["address"]:
                assert s["address"]["postcode"] in people["postcodes"]
    assert all(None not in values and "" not in values for values in people.values())
    # The model's JSON form gives the same answer (that is what the e2e leak scan passes).
    dumped = [ConcernModel.model_validate(c).model_dump(mode="json") for c in raw]
    assert synthetic_people(dumped) == people
    # The officer is not a subject.
    officers = {part for c in raw for part in c["officer"]["name"].split()}
    assert officers.isdisjoint(people["names"])


# ----------------------------------------------------------------------------- examples


def _load(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text("utf-8"))


@pytest.mark.parametrize(
    "name", ["concern-domestic-abuse.json", "concerns-batch.json", "concern-invalid.json"]
)
def test_example_files_validate_as_models(name: str) -> None:
    data = _load(name)
    items = data if isinstance(data, list) else [data]
    for item in items:
        concern = ConcernModel.model_validate(item)
        assert concern.source_agency == "hampshire-constabulary"
        for subject in concern.subjects:
            if subject.nhs_number:
                assert _nhs_ok(subject.nhs_number)


def test_domestic_abuse_example() -> None:
    concern = ConcernModel.model_validate(_load("concern-domestic-abuse.json"))
    assert concern.concern_type is ConcernType.DOMESTIC_ABUSE
    assert concern.risk_grade is RiskGrade.HIGH
    assert concern.consent.state.value == "NOT_SOUGHT"
    assert "would place the child at risk" in (concern.consent.reason or "")
    (child,) = concern.children()
    assert child.address is not None and child.address.la_code == "E06000044"
    assert child.school_urn in DIRECTORY_SCHOOLS["portsmouth"]
    assert child.date_of_birth and 4 <= age_on(child.date_of_birth, concern.reported_at) <= 16
    assert concern.voice_of_child and concern.voice_of_child.said
    assert concern.immediate_actions
    assert concern.officer.email and concern.officer.phone


def test_batch_example_covers_the_special_cases() -> None:
    batch = [ConcernModel.model_validate(item) for item in _load("concerns-batch.json")]
    assert len(batch) == 5
    codes = {v.value: k for k, v in LA_CODES.items()}

    def cross_border(c: ConcernModel) -> bool:
        home = c.children()[0].address
        where = c.incident_location
        if home is None or where is None:
            return False
        return (home.la_code, where.la_code) == (codes["southampton"], codes["hampshire"])

    def placed_on_wight(c: ConcernModel) -> bool:
        child = c.children()[0]
        return bool(
            child.looked_after
            and child.responsible_la == codes["portsmouth"]
            and child.address
            and child.address.la_code == codes["isle-of-wight"]
        )

    def baby(c: ConcernModel) -> bool:
        age = _age(c)
        voice = c.voice_of_child
        return age is not None and age < 2 and voice is not None and voice.said is None

    assert sum(map(cross_border, batch)) == 1
    assert sum(map(placed_on_wight, batch)) == 1
    assert sum(map(baby, batch)) == 1
    assert len({c.concern_type for c in batch}) >= 4


def test_invalid_example_lacks_child_identifiers_and_officer_contact() -> None:
    concern = ConcernModel.model_validate(_load("concern-invalid.json"))
    (child,) = concern.children()
    assert child.date_of_birth is None
    assert child.nhs_number is None
    assert child.police_person_id is None
    assert concern.officer.email is None and concern.officer.phone is None
