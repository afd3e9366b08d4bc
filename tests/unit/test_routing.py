"""Partnership resolution and candidate recipients (DESIGN §10), pure."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from broker import (
    candidate_recipients,
    load_deployment,
    postcode_district,
    resolve_partnerships,
)
from schemas import ConcernModel, Lscp

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = load_deployment(REPO / "deploy")


def _concern(base: dict[str, Any], **child: Any) -> ConcernModel:
    data = copy.deepcopy(base)
    data["subjects"][0].update(child)
    return ConcernModel.model_validate(data)


def _address(postcode: str, la_code: str | None) -> dict[str, Any]:
    return {"line1": "1 Test Street", "town": "Town", "postcode": postcode, "la_code": la_code}


@pytest.mark.parametrize(
    ("postcode", "district"),
    [("PO1 2AB", "PO1"), ("po12ab", "PO1"), ("SO162AB", "SO16"), ("PO30 1AA", "PO30")],
)
def test_postcode_district(postcode: str, district: str) -> None:
    assert postcode_district(postcode) == district


@pytest.mark.parametrize(
    ("la_code", "lscp"),
    [
        ("E10000014", Lscp.HAMPSHIRE),
        ("E06000046", Lscp.ISLE_OF_WIGHT),
        ("E06000044", Lscp.PORTSMOUTH),
        ("E06000045", Lscp.SOUTHAMPTON),
    ],
)
def test_residence_la_code_picks_the_partnership(
    example_concern: dict[str, Any], la_code: str, lscp: Lscp
) -> None:
    example_concern["incident_location"] = None
    concern = _concern(example_concern, address=_address("ZZ1 1ZZ", la_code))
    routing = resolve_partnerships(concern, DEPLOYMENT.postcodes)
    assert list(routing.full) == [lscp]
    assert routing.full[lscp] == ["residence LA"]


def test_postcode_district_is_the_fallback(example_concern: dict[str, Any]) -> None:
    example_concern["incident_location"] = None
    concern = _concern(example_concern, address=_address("PO30 5TX", None))
    routing = resolve_partnerships(concern, DEPLOYMENT.postcodes)
    assert list(routing.full) == [Lscp.ISLE_OF_WIGHT]


def test_straddling_district_goes_to_every_candidate_front_door_only(
    example_concern: dict[str, Any],
) -> None:
    example_concern["incident_location"] = None
    concern = _concern(example_concern, address=_address("SO16 3QP", None), school_urn=None)
    routing = resolve_partnerships(concern, DEPLOYMENT.postcodes)
    assert routing.full == {}
    assert set(routing.front_door_only) == {Lscp.SOUTHAMPTON, Lscp.HAMPSHIRE}
    ids = {c.recipient.id for c in candidate_recipients(concern, routing, DEPLOYMENT.directory)}
    assert ids == {"southampton-csc", "hampshire-csc"}


def test_cross_border_incident_goes_to_both(example_concern: dict[str, Any]) -> None:
    example_concern["incident_location"] = {
        "description": "bus station",
        "postcode": "SO50 5JH",
        "la_code": "E10000014",
    }
    concern = _concern(example_concern, address=_address("SO14 1AA", "E06000045"))
    routing = resolve_partnerships(concern, DEPLOYMENT.postcodes)
    assert set(routing.full) == {Lscp.SOUTHAMPTON, Lscp.HAMPSHIRE}
    assert routing.full[Lscp.HAMPSHIRE] == ["incident LA"]


def test_looked_after_child_also_goes_to_the_responsible_la(
    example_concern: dict[str, Any],
) -> None:
    example_concern["incident_location"] = None
    concern = _concern(
        example_concern,
        address=_address("PO30 1AA", "E06000046"),
        looked_after=True,
        responsible_la="E06000044",
    )
    routing = resolve_partnerships(concern, DEPLOYMENT.postcodes)
    assert set(routing.full) == {Lscp.ISLE_OF_WIGHT, Lscp.PORTSMOUTH}


def test_outside_hips_resolves_to_nothing(example_concern: dict[str, Any]) -> None:
    example_concern["incident_location"] = None
    concern = _concern(example_concern, address=_address("BH1 1AA", "E06000058"))
    assert resolve_partnerships(concern, DEPLOYMENT.postcodes).lscps == []


def test_candidates_are_the_partnership_agencies_and_the_childs_own_school(
    example_concern: dict[str, Any],
) -> None:
    # Lives in Hampshire, attends a Southampton school.
    example_concern["incident_location"] = None
    concern = _concern(
        example_concern, address=_address("SO50 1AA", "E10000014"), school_urn="116441"
    )
    routing = resolve_partnerships(concern, DEPLOYMENT.postcodes)
    ids = [c.recipient.id for c in candidate_recipients(concern, routing, DEPLOYMENT.directory)]
    assert "school-116441" in ids
    assert not [i for i in ids if i.startswith("school-") and i != "school-116441"]
    assert {"hampshire-csc", "hampshire-health", "hampshire-yjs"} <= set(ids)
    assert not [i for i in ids if i.startswith("southampton-")]
    assert len(ids) == len(set(ids))
