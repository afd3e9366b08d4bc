"""Data-sharing agreements as data (DESIGN §9).

Agreements and minimisation profiles live in ``deploy/policy/*.toml``. The
caller reads the files; ``parse_policy`` takes ``{filename: text}``, validates
every ``[[agreement]]`` and ``[[profile]]`` with pydantic, checks references
(profiles, lawful bases) and uniqueness, and returns a ``PolicySet`` whose
``revision`` is a hash of everything that can change a decision.

The lawful-basis catalogue (``LAWFUL_BASES``) is declarative data kept in
code: each entry has its citation, its kind (duty, power or processing
condition) and the conditions it needs (who may rely on it, which recipients
it reaches, whose data, which agreement flags). A new statutory basis is a
reviewed code change; agreements may only cite catalogue ids, and each cited
basis must fit the agreement, or the policy does not load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from schemas import (
    AgencyType,
    ConcernModel,
    ConcernType,
    PolicyError,
    ReasonCode,
    RiskFactor,
    RiskGrade,
    SubjectRole,
)

from ._signal import CumulativeThreshold

__all__ = [
    "LAWFUL_BASES",
    "Agreement",
    "BasisKind",
    "ConsentRule",
    "LawfulBasis",
    "PolicyIndex",
    "PolicyProblems",
    "PolicySet",
    "Profile",
    "SubjectAges",
    "concern_field_paths",
    "parse_policy",
]


BasisKind = Literal["duty", "power", "condition"]
Framework = Literal["uk-gdpr-art6", "uk-gdpr-art9", "dpa-part3", "statute"]
SubjectScope = Literal["child", "young_adult", "any"]

_ANY: tuple[AgencyType, ...] = tuple(AgencyType)


@dataclass(frozen=True)
class LawfulBasis:
    """One entry of the lawful-basis catalogue: the law, and the conditions it needs.

    * ``kind``: ``duty`` (the law requires the sharing or the function it serves),
      ``power`` (the law permits sharing; whether to share is a judgement) or
      ``condition`` (a UK GDPR / DPA 2018 condition that makes the processing
      lawful; not itself a gateway to share).
    * ``framework``: where it sits. An agreement must cite a DPA 2018 Part 3
      condition, or both a UK GDPR Article 6 basis and an Article 9 condition.
    * ``relied_on_by``: the source agency types that may rely on it to disclose
      (Part 3 is for competent authorities, the police; s.49A binds chief
      officers of police).
    * ``serves``: the recipient agency types whose function it supports (s.47
      is the local authority's children's social care enquiry; s.49A reaches a
      school; s.115 reaches a "relevant authority", which a school is not).
    * ``subjects``: whose data it covers (``child``: under 18; ``young_adult``:
      18 to 24; ``any``).
    * ``requires``: agreement flags the law's own conditions translate into
      (s.49A: the child must be a pupil of the recipient school;
      s.23C: the young adult must be a care leaver).
    * ``conditions``: the conditions in words, for the summary and the DPO.
    """

    id: str
    citation: str
    description: str
    kind: BasisKind
    framework: Framework
    conditions: tuple[str, ...]
    url: str
    relied_on_by: tuple[AgencyType, ...] = _ANY
    serves: tuple[AgencyType, ...] = _ANY
    subjects: SubjectScope = "any"
    requires: tuple[str, ...] = ()

    def problems_for(
        self,
        sources: Sequence[AgencyType],
        recipients: Sequence[AgencyType],
        subject_ages: str,
        flags: Mapping[str, Any],
    ) -> list[str]:
        """Why this basis cannot support an agreement with these terms (empty: it can)."""
        problems: list[str] = []
        outside = [t.value for t in sources if t not in self.relied_on_by]
        if outside:
            problems.append(
                f"{self.id} cannot be relied on by {', '.join(outside)} "
                f"(only by {', '.join(t.value for t in self.relied_on_by)})"
            )
        unreached = [t.value for t in recipients if t not in self.serves]
        if unreached:
            problems.append(
                f"{self.id} does not reach {', '.join(unreached)} "
                f"(only {', '.join(t.value for t in self.serves)})"
            )
        if self.subjects != "any" and self.subjects != subject_ages:
            problems.append(
                f"{self.id} covers subject_ages '{self.subjects}', not '{subject_ages}'"
            )
        missing = [flag for flag in self.requires if not flags.get(flag)]
        if missing:
            problems.append(f"{self.id} needs {', '.join(f'{m} = true' for m in missing)}")
        return problems

    @property
    def kind_text(self) -> str:
        """The kind in words, for reasons."""
        return {
            "duty": "a duty",
            "power": "a power to share, not a duty",
            "condition": "a condition for lawful processing",
        }[self.kind]


_POLICE = (AgencyType.POLICE,)
_LA_AND_PARTNERS = (
    AgencyType.POLICE,
    AgencyType.CHILDRENS_SOCIAL_CARE,
    AgencyType.HEALTH,
    AgencyType.LA_EDUCATION,
    AgencyType.YOUTH_JUSTICE,
    AgencyType.ADULT_SOCIAL_CARE,
)
_CARE = (AgencyType.CHILDRENS_SOCIAL_CARE, AgencyType.HEALTH, AgencyType.ADULT_SOCIAL_CARE)
_LEG = "https://www.legislation.gov.uk/"

#: Every lawful basis an agreement may cite, by id. Citations are to UK
#: legislation as amended; the partnership DPOs own this list, and a new entry is
#: a reviewed code change (agreements can only cite what is here).
LAWFUL_BASES: dict[str, LawfulBasis] = {
    b.id: b
    for b in (
        LawfulBasis(
            id="UKGDPR-6-1-c",
            citation="UK GDPR Article 6(1)(c)",
            description="processing is necessary to comply with a legal obligation of the "
            "controller",
            kind="condition",
            framework="uk-gdpr-art6",
            conditions=("a legal obligation (statute or statutory guidance) requires the sharing",),
            url=_LEG + "eur/2016/679/article/6",
        ),
        LawfulBasis(
            id="UKGDPR-6-1-e",
            citation="UK GDPR Article 6(1)(e)",
            description="processing is necessary for a task carried out in the public interest "
            "or in the exercise of official authority (the statutory safeguarding functions)",
            kind="condition",
            framework="uk-gdpr-art6",
            conditions=("the sharing is necessary for the controller's public task",),
            url=_LEG + "eur/2016/679/article/6",
        ),
        LawfulBasis(
            id="UKGDPR-9-2-g+DPA18-S1-P18",
            citation="UK GDPR Article 9(2)(g) with Data Protection Act 2018 Schedule 1 "
            "paragraph 18",
            description="special category data: substantial public interest in the safeguarding "
            "of children and of individuals at risk",
            kind="condition",
            framework="uk-gdpr-art9",
            conditions=(
                "necessary to protect a child, or an individual aged 18 or over at risk, from "
                "neglect or physical, mental or emotional harm",
                "consent cannot be given by the person, cannot reasonably be obtained, or "
                "seeking it would prejudice the protection (para 18(2))",
                "an appropriate policy document is in place (Sch 1 Part 4)",
            ),
            url=_LEG + "ukpga/2018/12/schedule/1/paragraph/18",
        ),
        LawfulBasis(
            id="UKGDPR-9-2-h+DPA18-S1-P2",
            citation="UK GDPR Article 9(2)(h) with Data Protection Act 2018 Schedule 1 paragraph 2",
            description="special category data: health or social care purposes, processed by or "
            "under the responsibility of a health or social work professional",
            kind="condition",
            framework="uk-gdpr-art9",
            conditions=(
                "for health or social care purposes",
                "by or under the responsibility of a health or social work professional owing "
                "a duty of confidentiality",
            ),
            url=_LEG + "ukpga/2018/12/schedule/1/paragraph/2",
            relied_on_by=_CARE,
            serves=_CARE,
        ),
        LawfulBasis(
            id="DPA18-S35+SCH8-P4",
            citation="Data Protection Act 2018 section 35(5) with Schedule 8 paragraph 4",
            description="Part 3 (law enforcement) sensitive processing by the police that is "
            "necessary for the safeguarding of children and of individuals at risk",
            kind="condition",
            framework="dpa-part3",
            conditions=(
                "a competent authority (the police) processing for a law enforcement purpose",
                "strictly necessary to protect a child, or an individual aged 18 or over at "
                "risk, from neglect or physical, mental or emotional harm",
                "consent cannot be given, cannot reasonably be obtained, or seeking it would "
                "prejudice the protection (Sch 8 para 4(2))",
                "an appropriate policy document is in place (s.42)",
            ),
            url=_LEG + "ukpga/2018/12/schedule/8/paragraph/4",
            relied_on_by=_POLICE,
        ),
        LawfulBasis(
            id="CA1989-S17",
            citation="Children Act 1989 section 17",
            description="the local authority's duty to safeguard and promote the welfare of "
            "children in need in its area",
            kind="duty",
            framework="statute",
            conditions=("the child may be a child in need in the local authority's area",),
            url=_LEG + "ukpga/1989/41/section/17",
            serves=(AgencyType.CHILDRENS_SOCIAL_CARE,),
            subjects="child",
        ),
        LawfulBasis(
            id="CA1989-S47",
            citation="Children Act 1989 section 47",
            description="the local authority's duty to make enquiries where a child is "
            "suffering, or is likely to suffer, significant harm",
            kind="duty",
            framework="statute",
            conditions=(
                "reasonable cause to suspect the child is suffering, or is likely to suffer, "
                "significant harm",
            ),
            url=_LEG + "ukpga/1989/41/section/47",
            serves=(AgencyType.CHILDRENS_SOCIAL_CARE,),
            subjects="child",
        ),
        LawfulBasis(
            id="CA1989-S23C",
            citation="Children Act 1989 sections 23C and 23CZB",
            description="the local authority's continuing duties, as corporate parent, to former "
            "relevant children (care leavers) up to age 25",
            kind="duty",
            framework="statute",
            conditions=("the young adult is a former relevant child (a care leaver) under 25",),
            url=_LEG + "ukpga/1989/41/section/23C",
            serves=(AgencyType.CHILDRENS_SOCIAL_CARE,),
            subjects="young_adult",
            requires=("requires_care_leaver",),
        ),
        LawfulBasis(
            id="CA2004-S10",
            citation="Children Act 2004 section 10",
            description="co-operation between the local authority and its relevant partners "
            "(including the police) to improve the well-being of children",
            kind="duty",
            framework="statute",
            conditions=("the sharing is part of co-operating to improve a child's well-being",),
            url=_LEG + "ukpga/2004/31/section/10",
            subjects="child",
        ),
        LawfulBasis(
            id="CA2004-S11",
            citation="Children Act 2004 section 11",
            description="the police, health bodies and others must ensure their functions are "
            "discharged having regard to the need to safeguard and promote the welfare of "
            "children",
            kind="duty",
            framework="statute",
            conditions=("the discloser is a body named in s.11(1)",),
            url=_LEG + "ukpga/2004/31/section/11",
            relied_on_by=_LA_AND_PARTNERS,
            subjects="child",
        ),
        LawfulBasis(
            id="CDA1998-S115",
            citation="Crime and Disorder Act 1998 section 115",
            description="a power (not a duty) to disclose information to a relevant authority "
            "where necessary or expedient for the purposes of the Act, including youth justice",
            kind="power",
            framework="statute",
            conditions=(
                "the recipient is a relevant authority (police, local authority, probation, "
                "health) or acts on its behalf (a youth justice service); a school is not",
                "necessary or expedient for a purpose of the 1998 Act (reducing crime and "
                "disorder, preventing offending by children)",
            ),
            url=_LEG + "ukpga/1998/37/section/115",
            serves=_LA_AND_PARTNERS,
        ),
        LawfulBasis(
            id="DAA2021-S49A",
            citation="Domestic Abuse Act 2021 section 49A (inserted by the Victims and Prisoners "
            "Act 2024 section 20; in force 7 November 2025)",
            description="Operation Encompass: the duty on chief officers of police to notify a "
            "child's school when they believe the child may be a victim of domestic abuse",
            kind="duty",
            framework="statute",
            conditions=(
                "reasonable grounds to believe a child (under 18) may be a victim of domestic "
                "abuse",
                "the recipient is the school at which the child is a registered pupil (or the "
                "one establishment educating a child who is not)",
                "as soon as reasonably practicable (before the next school day)",
            ),
            url=_LEG + "ukpga/2021/17/section/49A",
            relied_on_by=_POLICE,
            serves=(AgencyType.EDUCATION,),
            subjects="child",
            requires=("requires_school_match",),
        ),
        LawfulBasis(
            id="CA2014-S42",
            citation="Care Act 2014 sections 42 and 45",
            description="safeguarding adults at risk: the local authority's duty to make "
            "enquiries, and the sharing of information with the Safeguarding Adults Board's "
            "partners",
            kind="duty",
            framework="statute",
            conditions=(
                "an adult (18 or over) who may have care and support needs is experiencing, or "
                "is at risk of, abuse or neglect",
            ),
            url=_LEG + "ukpga/2014/23/section/42",
            serves=(AgencyType.ADULT_SOCIAL_CARE,),
            subjects="young_adult",
        ),
    )
}

ConsentRule = Literal["not_required", "required", "overridable_at_risk"]
SubjectAges = Literal["child", "young_adult"]

_MODEL = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
_DURATION = re.compile(r"^P(?=\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?$")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes inside an annotation (``X | None``, ``tuple[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return []
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


@cache
def concern_field_paths() -> frozenset[str]:
    """Every dotted path into a Concern's JSON form (``subjects.address.postcode``...)."""
    paths: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            paths.add(path)
            for inner in _models_in(info.annotation):
                walk(inner, f"{path}.")

    walk(ConcernModel, "")
    return frozenset(paths)


class Profile(BaseModel):
    """A minimisation profile: the only concern fields a recipient may see.

    ``fields`` are dotted paths into the concern's JSON form; a path through a
    list (``subjects.given_name``) applies to every item. ``subject_roles``
    narrows which subjects appear at all (a school needs the child, not the
    alleged perpetrator); by default every role.
    """

    model_config = _MODEL
    name: str = Field(pattern=_ID)
    description: str = Field(min_length=1)
    fields: tuple[str, ...] = Field(min_length=1)
    subject_roles: tuple[SubjectRole, ...] = tuple(SubjectRole)
    #: Issue 16: which coded risk factors of a child's risk assessment this recipient
    #: sees (None: every factor the assessment records). Only meaningful when
    #: ``fields`` shares ``risk_assessments`` or ``risk_assessments.factors``.
    risk_factors: tuple[RiskFactor, ...] | None = None

    @pydantic.field_validator("fields")
    @classmethod
    def _known_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = concern_field_paths()
        unknown = [p for p in value if p not in known]
        if unknown:
            raise ValueError(f"unknown concern field path(s): {', '.join(unknown)}")
        if len(set(value)) != len(value):
            raise ValueError("a field path is listed twice")
        listed = set(value)
        covered = [p for p in value if any(p.startswith(f"{q}.") for q in listed)]
        if covered:
            raise ValueError(
                f"path(s) {', '.join(covered)} are already covered by a parent path; list one"
            )
        subject_paths = [p for p in value if p.split(".")[0] == "subjects"]
        if subject_paths and "subjects" not in value:
            missing = {"subjects.subject_ref", "subjects.role"} - set(value)
            if missing:
                raise ValueError(
                    "a profile that shares subject fields must include "
                    "subjects.subject_ref and subjects.role (so withheld subjects can be stubbed "
                    "and the recipient can tell the child from the adults)"
                )
        return value


class Agreement(BaseModel):
    """One data-sharing agreement: who may share what with whom, and why.

    A concern is covered when the publisher's agency type is in
    ``source_agency_types``, the recipient's in ``recipient_agency_types``, the
    concern type is listed (or ``"*"``), and at least one CHILD subject
    qualifies: in the ``subject_ages`` band (child: under 18; young adult:
    18 to 24), within ``min_age``..``max_age`` if given, and meeting the
    ``requires_*`` flags. ``min_risk_grade`` and ``consent_rule`` then decide.
    """

    model_config = _MODEL
    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1)
    source_agency_types: tuple[AgencyType, ...] = Field(min_length=1)
    recipient_agency_types: tuple[AgencyType, ...] = Field(min_length=1)
    concern_types: tuple[ConcernType | Literal["*"], ...] = Field(min_length=1)
    min_risk_grade: RiskGrade
    subject_ages: SubjectAges
    min_age: int | None = Field(default=None, ge=0, le=24)
    max_age: int | None = Field(default=None, ge=0, le=24)
    # The requires_* flags come before lawful_bases so that its validator sees them.
    requires_school_match: bool = False
    requires_home_educated: bool = False
    requires_care_leaver: bool = False
    lawful_bases: tuple[str, ...] = Field(min_length=1)
    consent_rule: ConsentRule
    profile: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    retention: str

    @pydantic.field_validator("concern_types")
    @classmethod
    def _wildcard_alone(
        cls, value: tuple[ConcernType | Literal["*"], ...]
    ) -> tuple[ConcernType | Literal["*"], ...]:
        if "*" in value and len(value) > 1:
            raise ValueError('"*" (every concern type) must be the only entry')
        return value

    @pydantic.field_validator("lawful_bases")
    @classmethod
    def _catalogued(cls, value: tuple[str, ...], info: pydantic.ValidationInfo) -> tuple[str, ...]:
        """Every basis is in the catalogue, and its conditions fit this agreement."""
        unknown = [b for b in value if b not in LAWFUL_BASES]
        if unknown:
            raise ValueError(
                f"unknown lawful basis id(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(LAWFUL_BASES))}"
            )
        if len(set(value)) != len(value):
            raise ValueError("a lawful basis is listed twice")
        data = info.data
        if not {"source_agency_types", "recipient_agency_types", "subject_ages"} <= set(data):
            return value  # an earlier field failed; that error is reported instead
        problems: list[str] = []
        for ident in value:
            problems += LAWFUL_BASES[ident].problems_for(
                data["source_agency_types"],
                data["recipient_agency_types"],
                data["subject_ages"],
                data,
            )
        frameworks = {LAWFUL_BASES[ident].framework for ident in value}
        if "dpa-part3" not in frameworks and not {"uk-gdpr-art6", "uk-gdpr-art9"} <= frameworks:
            problems.append(
                "cite a DPA 2018 Part 3 condition (DPA18-S35+SCH8-P4), or both a UK GDPR "
                "Article 6 basis and an Article 9 condition: concerns about children are "
                "special category (sensitive) data"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @pydantic.field_validator("retention")
    @classmethod
    def _iso_duration(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError("must be an ISO 8601 duration of years/months/weeks/days, e.g. P6Y")
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Agreement:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age is greater than max_age")
        band = (0, 17) if self.subject_ages == "child" else (18, 24)
        for bound in (self.min_age, self.max_age):
            if bound is not None and not band[0] <= bound <= band[1]:
                raise ValueError(
                    f"age bounds must lie within the {self.subject_ages} band "
                    f"({band[0]} to {band[1]})"
                )
        if self.requires_school_match and self.recipient_agency_types != (AgencyType.EDUCATION,):
            raise ValueError("requires_school_match needs recipient_agency_types = ['education']")
        if self.requires_home_educated and self.recipient_agency_types != (
            AgencyType.LA_EDUCATION,
        ):
            raise ValueError(
                "requires_home_educated needs recipient_agency_types = ['la-education']"
            )
        return self

    def covers(self, concern_type: ConcernType) -> bool:
        return self.concern_types == ("*",) or concern_type in self.concern_types

    def admits_age(self, age: int | None) -> bool:
        """Whether a CHILD subject of this ``age`` (None: no date of birth) qualifies.

        A subject recorded as CHILD without a date of birth is taken to be under
        18 (the publisher's role says so), so it satisfies a child band's age
        range; it never counts as a young adult.
        """
        if age is None:
            return self.subject_ages == "child"
        if self.subject_ages == "child" and age >= 18:
            return False
        if self.subject_ages == "young_adult" and not 18 <= age <= 24:
            return False
        if self.min_age is not None and age < self.min_age:
            return False
        return not (self.max_age is not None and age > self.max_age)

    def age_text(self) -> str:
        """The age band in words, for reasons."""
        low, high = (0, 17) if self.subject_ages == "child" else (18, 24)
        low = self.min_age if self.min_age is not None else low
        high = self.max_age if self.max_age is not None else high
        noun = "child" if self.subject_ages == "child" else "young adult"
        return f"a {noun} aged {low} to {high}"


class PolicySet(BaseModel):
    """All agreements and profiles in force, and their revision.

    ``agreements`` are held sorted by id and ``profiles`` by name, so that
    ``decide()`` picks "the first matching agreement" in a stable order.
    ``revision`` is ``sha256:`` + the hex SHA-256 of the canonical JSON of both
    (sorted keys, compact): any change of policy changes it, moving an
    agreement between files does not. It is computed; a supplied revision
    (a round trip through ``model_dump``) must match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    agreements: tuple[Agreement, ...]
    profiles: tuple[Profile, ...]
    #: Issue 16: cumulative-concern thresholds (``[[cumulative_threshold]]``), by id.
    thresholds: tuple[CumulativeThreshold, ...] = ()
    revision: str = ""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _sorted(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            data["agreements"] = sorted(data.get("agreements", ()), key=_key("id"))
            data["profiles"] = sorted(data.get("profiles", ()), key=_key("name"))
            data["thresholds"] = sorted(data.get("thresholds", ()), key=_key("id"))
        return data

    @pydantic.model_validator(mode="after")
    def _check_and_hash(self) -> PolicySet:
        problems: list[str] = []
        for kind, ids in (
            ("agreement", [a.id for a in self.agreements]),
            ("profile", [p.name for p in self.profiles]),
            ("cumulative_threshold", [t.id for t in self.thresholds]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            problems.extend(f"duplicate {kind} id '{d}'" for d in dupes)
        names = {p.name for p in self.profiles}
        problems.extend(
            f"agreement '{a.id}': field 'profile': unknown profile '{a.profile}'"
            for a in self.agreements
            if a.profile not in names
        )
        if problems:
            raise ValueError("; ".join(problems))
        hashed: dict[str, Any] = {
            "agreements": [a.model_dump(mode="json") for a in self.agreements],
            "profiles": [p.model_dump(mode="json") for p in self.profiles],
        }
        if self.thresholds:  # a policy without thresholds keeps the revision it had
            hashed["thresholds"] = [t.model_dump(mode="json") for t in self.thresholds]
        canonical = json.dumps(
            hashed,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        revision = "sha256:" + hashlib.sha256(canonical).hexdigest()
        if self.revision and self.revision != revision:
            raise ValueError("revision does not match the policy (it is computed, not chosen)")
        object.__setattr__(self, "revision", revision)
        return self

    @functools.cached_property
    def index(self) -> PolicyIndex:
        """Look-up tables built once (plain dicts: ``decide()`` reads them on every call)."""
        grouped: dict[tuple[AgencyType, AgencyType], list[Agreement]] = {}
        for agreement in self.agreements:
            for source in agreement.source_agency_types:
                for target in agreement.recipient_agency_types:
                    grouped.setdefault((source, target), []).append(agreement)
        return PolicyIndex(
            profiles={p.name: p for p in self.profiles},
            agreements={a.id: a for a in self.agreements},
            by_parties={k: tuple(v) for k, v in grouped.items()},
        )

    def profile(self, name: str) -> Profile:
        """The profile called ``name`` (always present for an agreement's profile)."""
        return self.index.profiles[name]

    def agreement(self, agreement_id: str) -> Agreement | None:
        return self.index.agreements.get(agreement_id)

    def between(self, source: AgencyType, recipient: AgencyType) -> tuple[Agreement, ...]:
        """Agreements letting ``source`` share with ``recipient``, sorted by id."""
        return self.index.by_parties.get((source, recipient), ())


@dataclass(frozen=True)
class PolicyIndex:
    """A ``PolicySet``'s look-ups: profiles and agreements by name, agreements by parties."""

    profiles: Mapping[str, Profile]
    agreements: Mapping[str, Agreement]
    by_parties: Mapping[tuple[AgencyType, AgencyType], tuple[Agreement, ...]]


def _key(attr: str) -> typing.Callable[[Any], str]:
    def key(item: Any) -> str:
        value = item.get(attr) if isinstance(item, Mapping) else getattr(item, attr, None)
        return str(value)

    return key


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agreement: list[dict[str, Any]] = []
    profile: list[dict[str, Any]] = []
    cumulative_threshold: list[dict[str, Any]] = []


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = _where(err["loc"])
        parts.append(f"field '{where}': {msg}" if where else msg)
    return "; ".join(parts)


class PolicyProblems(PolicyError):
    """Invalid policy files; ``problems`` lists each finding on its own.

    Every finding names the file, the agreement or profile and the field, and
    never quotes a value from the file beyond ids and enum names.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(
            "; ".join(self.problems),
            code=ReasonCode.CONFIG_INVALID,
            hint="fix the named policy file in deploy/policy/ and restart (check it with "
            "`safer policy check`); the router will not run on a policy it cannot validate",
        )


def _fail(*problems: str) -> PolicyProblems:
    return PolicyProblems(problems)


def parse_policy(files: Mapping[str, str]) -> PolicySet:
    """Validate ``{filename: TOML text}`` into a ``PolicySet``.

    Each file may hold ``[[agreement]]`` and ``[[profile]]`` tables and nothing
    else. Errors name the file, the agreement or profile id and the field, e.g.
    ``deploy/policy/police-to-schools.toml: agreement 'police-school-encompass':
    field 'min_risk_grade': Input should be 'HIGH', 'MEDIUM' or 'LOW'``. Every
    problem found is reported, not just the first.
    """
    if not files:
        raise _fail("no policy files given")
    agreements: list[Agreement] = []
    profiles: list[Profile] = []
    thresholds: list[CumulativeThreshold] = []
    origin: dict[tuple[str, str], str] = {}
    problems: list[str] = []

    for filename in sorted(files):
        try:
            raw = tomllib.loads(files[filename])
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{filename}: not valid TOML ({exc})")
            continue
        try:
            shape = _PolicyFile.model_validate(raw)
        except pydantic.ValidationError as exc:
            problems.append(f"{filename}: {_describe(exc)}")
            continue
        if not shape.agreement and not shape.profile and not shape.cumulative_threshold:
            problems.append(
                f"{filename}: holds no [[agreement]], [[profile]] or [[cumulative_threshold]] table"
            )
        entries_by_kind: tuple[tuple[str, list[dict[str, Any]], type[BaseModel], str], ...] = (
            ("profile", shape.profile, Profile, "name"),
            ("agreement", shape.agreement, Agreement, "id"),
            ("cumulative_threshold", shape.cumulative_threshold, CumulativeThreshold, "id"),
        )
        for kind, entries, model, id_field in entries_by_kind:
            for index, entry in enumerate(entries):
                ident = entry.get(id_field)
                label = f"{kind} '{ident}'" if isinstance(ident, str) else f"{kind} #{index + 1}"
                try:
                    item = model.model_validate(entry)
                except pydantic.ValidationError as exc:
                    problems.append(f"{filename}: {label}: {_describe(exc)}")
                    continue
                key = (kind, str(ident))
                if key in origin:
                    problems.append(
                        f"{filename}: {label}: field '{id_field}': duplicate {kind} id "
                        f"(also defined in {origin[key]})"
                    )
                    continue
                origin[key] = filename
                if isinstance(item, Profile):
                    profiles.append(item)
                elif isinstance(item, Agreement):
                    agreements.append(item)
                elif isinstance(item, CumulativeThreshold):
                    thresholds.append(item)

    names = {p.name for p in profiles}
    for agreement in agreements:
        if agreement.profile not in names:
            where = origin[("agreement", agreement.id)]
            problems.append(
                f"{where}: agreement '{agreement.id}': field 'profile': unknown profile "
                f"'{agreement.profile}' (known: {', '.join(sorted(names)) or 'none'})"
            )
    if not agreements and not problems:
        problems.append("the policy files hold no [[agreement]]")
    if problems:
        raise _fail(*problems)
    try:
        return PolicySet(
            agreements=tuple(agreements), profiles=tuple(profiles), thresholds=tuple(thresholds)
        )
    except pydantic.ValidationError as exc:  # pragma: no cover - checked above
        raise _fail(_describe(exc)) from None
