"""The recipient directory (DESIGN §10): who can publish, and who can receive.

``parse_directory`` takes the *text* of ``deploy/directory.toml`` (the caller
reads the file), validates every entry with pydantic, and returns a frozen
``Directory`` with the look-ups the router needs. Errors are ``PolicyError``
naming the source file, the entry id and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from schemas import AgencyType, Lscp, PolicyError, ReasonCode

__all__ = ["Directory", "Publisher", "Recipient", "parse_directory"]

#: Ids name key-store folders and topic consumers, so keep them path- and topic-safe.
ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


@dataclass(frozen=True)
class Recipient:
    """An agency that may receive disclosures (one row of the directory)."""

    id: str
    lscp: Lscp
    agency_type: AgencyType
    name: str
    delivery: str = "kafka"
    contact: str = ""
    front_door: bool = False
    school_urn: str | None = None
    #: With ``delivery = "webhook"``: where each decrypted disclosure is POSTed.
    webhook_url: str | None = None
    #: The body a webhook recipient takes: our JSON, or a FHIR R4 Communication (issue 13).
    disclosure_format: str = "safer-json"

    @property
    def is_front_door(self) -> bool:
        """The partnership's children's social care front door (MASH / CRS)."""
        return self.front_door and self.agency_type is AgencyType.CHILDRENS_SOCIAL_CARE


@dataclass(frozen=True)
class Publisher:
    """An agency whose signed concerns the router accepts."""

    id: str
    agency_type: AgencyType
    name: str
    contact: str = ""


@dataclass(frozen=True)
class Directory:
    """Every publisher and recipient, with constant-time look-ups.

    Build it with ``parse_directory`` (which validates); the constructor only
    indexes what it is given.
    """

    publishers: tuple[Publisher, ...]
    recipients: tuple[Recipient, ...]
    _recipients: Mapping[str, Recipient] = field(init=False, repr=False, compare=False)
    _publishers: Mapping[str, Publisher] = field(init=False, repr=False, compare=False)
    _schools: Mapping[str, Recipient] = field(init=False, repr=False, compare=False)
    _front_doors: Mapping[Lscp, Recipient] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_recipients", {r.id: r for r in self.recipients})
        object.__setattr__(self, "_publishers", {p.id: p for p in self.publishers})
        object.__setattr__(
            self, "_schools", {r.school_urn: r for r in self.recipients if r.school_urn}
        )
        object.__setattr__(
            self, "_front_doors", {r.lscp: r for r in self.recipients if r.is_front_door}
        )

    def recipient(self, recipient_id: str) -> Recipient | None:
        """The recipient with this id, or None."""
        return self._recipients.get(recipient_id)

    def publisher(self, publisher_id: str) -> Publisher | None:
        """The publisher with this id, or None (the router quarantines unknown publishers)."""
        return self._publishers.get(publisher_id)

    def front_door(self, lscp: Lscp) -> Recipient:
        """The partnership's children's social care front door.

        ``parse_directory`` guarantees one per partnership; a hand-built
        directory without one raises ``PolicyError`` (NO_RECIPIENT).
        """
        door = self._front_doors.get(lscp)
        if door is None:
            raise PolicyError(
                f"the directory has no front door for partnership {lscp.value!r}",
                code=ReasonCode.NO_RECIPIENT,
                hint="mark one social-care recipient of that partnership with front_door = true",
            )
        return door

    def for_lscp(self, lscp: Lscp) -> list[Recipient]:
        """Every recipient of one partnership, in directory order."""
        return [r for r in self.recipients if r.lscp is lscp]

    def school(self, urn: str) -> Recipient | None:
        """The school DSL recipient with this URN, or None."""
        return self._schools.get(urn.strip())


_ENTRY = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class _PublisherEntry(BaseModel):
    model_config = _ENTRY
    id: str = Field(pattern=ID_PATTERN)
    agency_type: AgencyType
    name: str = Field(min_length=1)
    contact: str = ""


class _RecipientEntry(BaseModel):
    model_config = _ENTRY
    id: str = Field(pattern=ID_PATTERN)
    lscp: Lscp
    agency_type: AgencyType
    name: str = Field(min_length=1)
    delivery: Literal["kafka", "webhook", "inbox"] = "kafka"
    contact: str = ""
    front_door: bool = False
    school_urn: str | None = Field(default=None, pattern=r"^\d{6,7}$")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://[^\s@]+$")
    disclosure_format: Literal["safer-json", "fhir-r4"] = "safer-json"

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> _RecipientEntry:
        if self.delivery == "webhook" and not self.webhook_url:
            raise ValueError("delivery 'webhook' needs webhook_url (https://...)")
        if self.front_door and self.agency_type is not AgencyType.CHILDRENS_SOCIAL_CARE:
            raise ValueError("front_door is only for a social-care recipient")
        if self.agency_type is AgencyType.EDUCATION and not self.school_urn:
            raise ValueError("an education recipient (a school DSL) needs school_urn")
        if self.school_urn and self.agency_type is not AgencyType.EDUCATION:
            raise ValueError("school_urn is only for an education recipient")
        return self


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    publisher: list[dict[str, Any]] = []
    recipient: list[dict[str, Any]] = []


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(entry)"


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"field '{_where(err['loc'])}': {msg}")
    return "; ".join(parts)


def _entry_label(kind: str, raw: Mapping[str, Any], index: int) -> str:
    ident = raw.get("id")
    return f"{kind} '{ident}'" if isinstance(ident, str) and ident else f"{kind} #{index + 1}"


def _fail(message: str) -> PolicyError:
    return PolicyError(
        message,
        code=ReasonCode.CONFIG_INVALID,
        hint="fix deploy/directory.toml; every entry needs id, agency_type and name "
        "(recipients also lscp), and each partnership exactly one front door",
    )


def parse_directory(text: str, source_name: str) -> Directory:
    """Validate the directory TOML ``text`` (read from ``source_name``).

    Rules beyond each entry's own fields: ids are unique across publishers and
    recipients (they name key-store folders); school URNs are unique; each of
    the four partnerships has exactly one front door.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(f"{source_name}: not valid TOML ({exc})") from None
    try:
        shape = _DirectoryFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise _fail(f"{source_name}: {_describe(exc)}") from None

    publishers: list[Publisher] = []
    recipients: list[Recipient] = []
    seen: dict[str, str] = {}
    problems: list[str] = []

    def claim(ident: str, label: str) -> None:
        if ident in seen:
            problems.append(f"{label}: duplicate id (also used by {seen[ident]})")
        else:
            seen[ident] = label

    for index, entry in enumerate(shape.publisher):
        label = _entry_label("publisher", entry, index)
        try:
            pub = _PublisherEntry.model_validate(entry)
        except pydantic.ValidationError as exc:
            problems.append(f"{label}: {_describe(exc)}")
            continue
        claim(pub.id, label)
        publishers.append(Publisher(pub.id, pub.agency_type, pub.name, pub.contact))

    schools: dict[str, str] = {}
    for index, entry in enumerate(shape.recipient):
        label = _entry_label("recipient", entry, index)
        try:
            rec = _RecipientEntry.model_validate(entry)
        except pydantic.ValidationError as exc:
            problems.append(f"{label}: {_describe(exc)}")
            continue
        claim(rec.id, label)
        if rec.school_urn:
            if rec.school_urn in schools:
                problems.append(
                    f"{label}: field 'school_urn': duplicate URN (also {schools[rec.school_urn]})"
                )
            schools.setdefault(rec.school_urn, label)
        recipients.append(
            Recipient(
                id=rec.id,
                lscp=rec.lscp,
                agency_type=rec.agency_type,
                name=rec.name,
                delivery=rec.delivery,
                contact=rec.contact,
                front_door=rec.front_door,
                school_urn=rec.school_urn,
                webhook_url=rec.webhook_url,
                disclosure_format=rec.disclosure_format,
            )
        )

    for lscp in Lscp:
        doors = [r.id for r in recipients if r.lscp is lscp and r.is_front_door]
        if len(doors) != 1:
            found = ", ".join(f"'{d}'" for d in doors) or "none"
            problems.append(
                f"partnership '{lscp.value}': field 'front_door': exactly one front door "
                f"is required (found {found})"
            )
    if problems:
        raise _fail(f"{source_name}: " + "; ".join(problems))
    return Directory(tuple(publishers), tuple(recipients))
