"""Which partnerships and which recipients a concern goes to (DESIGN §10).

Pure functions: routing decides who is a *candidate*; consent.decide() then
decides, per candidate, whether and what to share.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

from consent import Directory, Recipient
from schemas import LA_CODES, AgencyType, ConcernModel, Lscp, PolicyError, ReasonCode

__all__ = [
    "Candidate",
    "PostcodeTable",
    "Routing",
    "candidate_recipients",
    "parse_postcode_table",
    "postcode_district",
    "resolve_partnerships",
]


def postcode_district(postcode: str) -> str:
    """The outward code of a UK postcode ("PO1 2AB" → "PO1", "SO162AB" → "SO16")."""
    compact = "".join(postcode.upper().split())
    if " " in postcode.strip():
        return postcode.upper().split()[0]
    return compact[:-3] if len(compact) > 4 else compact


@dataclass(frozen=True)
class PostcodeTable:
    districts: Mapping[str, tuple[Lscp, ...]]

    def lookup(self, postcode: str | None) -> tuple[Lscp, ...]:
        if not postcode:
            return ()
        return self.districts.get(postcode_district(postcode), ())


def parse_postcode_table(text: str, source_name: str) -> PostcodeTable:
    try:
        raw = tomllib.loads(text)
        table = {
            str(district).upper(): tuple(Lscp(v) for v in lscps)
            for district, lscps in raw["districts"].items()
        }
    except (tomllib.TOMLDecodeError, KeyError, ValueError, TypeError) as exc:
        raise PolicyError(
            f"{source_name}: postcode table is invalid ({type(exc).__name__}: {exc})",
            code=ReasonCode.CONFIG_INVALID,
            hint="each [districts] entry maps an outward code to a list of partnership names",
        ) from None
    return PostcodeTable(table)


@dataclass(frozen=True)
class Routing:
    """Partnerships a concern concerns, and why.

    ``full`` partnerships get every relevant agency; ``front_door_only`` ones are
    candidates because a postcode district straddles a boundary, so only their
    front door (MASH) gets it, to establish whether the child is theirs.
    """

    full: dict[Lscp, list[str]] = field(default_factory=dict)
    front_door_only: dict[Lscp, list[str]] = field(default_factory=dict)

    @property
    def lscps(self) -> list[Lscp]:
        return list(dict.fromkeys([*self.full, *self.front_door_only]))

    def _add(self, target: dict[Lscp, list[str]], lscp: Lscp, why: str) -> None:
        reasons = target.setdefault(lscp, [])
        if why not in reasons:
            reasons.append(why)


def resolve_partnerships(concern: ConcernModel, postcodes: PostcodeTable) -> Routing:
    routing = Routing()
    for child in concern.children():
        address = child.address
        residence = LA_CODES.get(address.la_code or "") if address else None
        if residence is not None:
            routing._add(routing.full, residence, "residence LA")
        elif address is not None:
            found = postcodes.lookup(address.postcode)
            if len(found) == 1:
                routing._add(routing.full, found[0], "residence postcode district")
            for lscp in found if len(found) > 1 else ():
                routing._add(routing.front_door_only, lscp, "residence district straddles boundary")
        if child.looked_after and child.responsible_la in LA_CODES:
            routing._add(
                routing.full, LA_CODES[child.responsible_la], "responsible LA (looked after)"
            )
    location = concern.incident_location
    if location is not None:
        incident = LA_CODES.get(location.la_code or "")
        if incident is not None:
            routing._add(routing.full, incident, "incident LA")
        else:
            found = postcodes.lookup(location.postcode)
            if len(found) == 1:
                routing._add(routing.full, found[0], "incident postcode district")
            for lscp in found if len(found) > 1 else ():
                routing._add(routing.front_door_only, lscp, "incident district straddles boundary")
    for lscp in list(routing.front_door_only):
        if lscp in routing.full:
            del routing.front_door_only[lscp]
    return routing


@dataclass(frozen=True)
class Candidate:
    recipient: Recipient
    why: tuple[str, ...]


def candidate_recipients(
    concern: ConcernModel, routing: Routing, directory: Directory
) -> list[Candidate]:
    """Every recipient that consent.decide() must rule on, in a stable order.

    Agencies of each fully-resolved partnership except schools; the front door
    of each straddling partnership; and each child's own school wherever it is
    (Operation Encompass reaches the school the child attends).
    """
    chosen: dict[str, Candidate] = {}
    for lscp, why in routing.full.items():
        for recipient in directory.for_lscp(lscp):
            if recipient.agency_type is AgencyType.EDUCATION:
                continue
            chosen.setdefault(recipient.id, Candidate(recipient, tuple(why)))
    for lscp, why in routing.front_door_only.items():
        door = directory.front_door(lscp)
        chosen.setdefault(door.id, Candidate(door, tuple(why)))
    for child in concern.children():
        if child.school_urn:
            school = directory.school(child.school_urn)
            if school is not None:
                chosen.setdefault(school.id, Candidate(school, ("child's school",)))
    return list(chosen.values())
