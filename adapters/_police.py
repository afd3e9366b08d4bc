"""Police adapter v1: police JSON concerns → signed Avro on ``hips.inbound.police``.

The JSON field names follow the Avro ``Concern`` schema (docs/police-json-format.md).
A file holds one object, an array of objects, or JSON Lines. Each record is
validated with pydantic and checked for the minimum dataset before anything is
published; a bad record gets a reason code and a readable error that names
fields, never their values.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
from aiokafka import AIOKafkaProducer

from broker import Headers, OutRecord, SigningIdentity, send_all, signed_record, subject_key
from consent import missing_minimum_dataset, risk_problems
from schemas import (
    CONCERN,
    Codec,
    ConcernModel,
    EthnicGroup,
    Problem,
    ReasonCode,
    limit_problems,
    plausibility_problems,
)

__all__ = [
    "ACCEPTED",
    "ParsedRecord",
    "PoliceAdapter",
    "PublishOutcome",
    "concern_id_for",
    "parse_police_json",
    "validate_record",
]

ACCEPTED = "ACCEPTED"


@dataclass(frozen=True)
class ParsedRecord:
    """One record of an input file: a valid concern, or why it is not one."""

    label: str
    concern: ConcernModel | None
    concern_id: str | None
    status: str
    detail: str = ""


@dataclass(frozen=True)
class PublishOutcome:
    label: str
    concern_id: str | None
    status: str  # ACCEPTED or a reason code
    detail: str = ""


def _raw_records(text: str) -> list[Any]:
    stripped = text.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        # JSON Lines: one object per line.
        return [json.loads(line) for line in stripped.splitlines() if line.strip()]
    return data if isinstance(data, list) else [data]


def _describe(exc: pydantic.ValidationError) -> str:
    """Readable field errors without the offending values (they may be personal data)."""
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 8
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _problems(problems: Sequence[Problem]) -> str:
    """Field paths and reasons only: the values may be personal data."""
    shown = "; ".join(p.describe() for p in problems[:8])
    more = len(problems) - 8
    return shown + (f"; and {more} more" if more > 0 else "")


#: The police "18+1" self-defined ethnicity codes (NPCC; the ONS 2011 groups) and
#: the ONS 2021 category each maps to (docs/police-json-format.md §3.3). Roma, new in
#: 2021, has no 18+1 code: send WHITE_ROMA.
SDE_CODES: dict[str, EthnicGroup] = {
    "A1": EthnicGroup.ASIAN_INDIAN,
    "A2": EthnicGroup.ASIAN_PAKISTANI,
    "A3": EthnicGroup.ASIAN_BANGLADESHI,
    "A4": EthnicGroup.ASIAN_CHINESE,
    "A9": EthnicGroup.ASIAN_OTHER,
    "B1": EthnicGroup.BLACK_CARIBBEAN,
    "B2": EthnicGroup.BLACK_AFRICAN,
    "B9": EthnicGroup.BLACK_OTHER,
    "M1": EthnicGroup.MIXED_WHITE_AND_BLACK_CARIBBEAN,
    "M2": EthnicGroup.MIXED_WHITE_AND_BLACK_AFRICAN,
    "M3": EthnicGroup.MIXED_WHITE_AND_ASIAN,
    "M9": EthnicGroup.MIXED_OTHER,
    "O2": EthnicGroup.OTHER_ARAB,
    "O9": EthnicGroup.OTHER_ANY,
    "W1": EthnicGroup.WHITE_BRITISH,
    "W2": EthnicGroup.WHITE_IRISH,
    "W3": EthnicGroup.WHITE_GYPSY_OR_IRISH_TRAVELLER,
    "W9": EthnicGroup.WHITE_OTHER,
    "NS": EthnicGroup.NOT_STATED,
}


def _with_ethnicity_codes(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with each subject's 18+1 ethnicity code (or lower-case category name)
    replaced by the ONS 2021 category; anything else is left for validation to refuse."""
    subjects = item.get("subjects")
    if not isinstance(subjects, list):
        return item
    mapped = []
    changed = False
    for subject in subjects:
        code = subject.get("ethnicity") if isinstance(subject, dict) else None
        if isinstance(code, str):
            key = code.strip().upper()
            group = SDE_CODES.get(key) or (key if key in EthnicGroup.__members__ else None)
            if group is not None and group != code:
                subject = {**subject, "ethnicity": str(group)}
                changed = True
        mapped.append(subject)
    return {**item, "subjects": mapped} if changed else item


def parse_police_json(
    text: str, *, source: str, publisher_id: str, now: datetime | None = None
) -> list[ParsedRecord]:
    """Validate every record in one police JSON file (``now``: for date plausibility)."""
    try:
        raw = _raw_records(text)
    except json.JSONDecodeError as exc:
        return [
            ParsedRecord(
                f"{source}",
                None,
                None,
                ReasonCode.DECODE_ERROR.value,
                f"not JSON or JSON Lines (line {exc.lineno}, column {exc.colno}): fix the file",
            )
        ]
    return [
        validate_record(item, label=f"{source}#{index}", publisher_id=publisher_id, now=now)
        for index, item in enumerate(raw, start=1)
    ]


def validate_record(
    item: object, *, label: str, publisher_id: str, now: datetime | None = None
) -> ParsedRecord:
    """Validate one record (a JSON object, or a CSV row made into one).

    The checks, in order: size limits, the schema (pydantic), the publisher,
    plausibility, the minimum dataset, the risk assessment. Errors name fields,
    never their values.
    """
    concern_id = item.get("concern_id") if isinstance(item, dict) else None
    concern_id = concern_id if isinstance(concern_id, str) else None
    if not isinstance(item, dict):
        return ParsedRecord(
            label, None, None, ReasonCode.SCHEMA_INVALID.value, "each record must be a JSON object"
        )
    limits = limit_problems(item)
    if limits:
        return ParsedRecord(label, None, concern_id, limits[0].code.value, _problems(limits))
    try:
        concern = ConcernModel.model_validate(_with_ethnicity_codes(item))
    except pydantic.ValidationError as exc:
        return ParsedRecord(
            label, None, concern_id, ReasonCode.SCHEMA_INVALID.value, _describe(exc)
        )
    if concern.source_agency != publisher_id:
        return ParsedRecord(
            label,
            None,
            concern.concern_id,
            ReasonCode.UNKNOWN_PUBLISHER.value,
            f"source_agency must be {publisher_id!r}, the agency whose key signs it",
        )
    implausible = plausibility_problems(concern, now or datetime.now(UTC))
    if implausible:
        return ParsedRecord(
            label, None, concern.concern_id, implausible[0].code.value, _problems(implausible)
        )
    missing = missing_minimum_dataset(concern)
    if missing:
        return ParsedRecord(
            label,
            None,
            concern.concern_id,
            ReasonCode.MINIMUM_DATASET_MISSING.value,
            "missing: " + ", ".join(missing),
        )
    risky = risk_problems(concern)
    if risky:
        return ParsedRecord(label, None, concern.concern_id, risky[0].code.value, _problems(risky))
    return ParsedRecord(label, concern, concern.concern_id, ACCEPTED)


def concern_id_for(source_agency: str, source_ref: str) -> str:
    """The concern id a record without one gets: a UUID v5 of (agency, source_ref).

    Deterministic, so a CSV row or an HTTP submission sent twice names the same
    concern (and the router's replay check and the recipients' deduplication
    make the second a no-op). ``source_ref`` must not hold personal data
    (docs/police-json-format.md §5); the UUID does not reveal it anyway.
    """
    return str(uuid.uuid5(_CONCERN_NAMESPACE, f"{source_agency}\x1f{source_ref.strip()}"))


#: Namespace of derived concern ids (a fixed random UUID; never change it).
_CONCERN_NAMESPACE = uuid.UUID("6c1d0f4e-2b7a-4f0e-9d3c-5a8e1b2f7c40")


class PoliceAdapter:
    """Encodes, signs and publishes validated concerns for one police publisher."""

    def __init__(
        self,
        *,
        codec: Codec,
        identity: SigningIdentity,
        pseudonym_secret: bytes,
        topic: str,
    ) -> None:
        self._codec = codec
        self._identity = identity
        self._secret = pseudonym_secret
        self._topic = topic

    @property
    def publisher_id(self) -> str:
        return self._identity.agency_id

    def prepare(self, concern: ConcernModel) -> OutRecord:
        """The signed record for one concern; keyed by the child's pseudonym (§4.4)."""
        return signed_record(
            self._codec,
            self._identity,
            CONCERN,
            concern.to_avro(),
            topic=self._topic,
            key=subject_key(concern, self._secret).encode(),
            record_id=concern.concern_id,
            id_header=Headers.CONCERN_ID,
        )

    def parse_files(self, paths: Iterable[Path]) -> list[ParsedRecord]:
        """Validate every record of every file: ``*.csv`` as CSV (docs/csv-format.md),
        anything else as police JSON, a JSON array or JSON Lines."""
        from ._csv import parse_police_csv  # _csv builds on this module

        parsed: list[ParsedRecord] = []
        for path in paths:
            is_csv = path.suffix.lower() == ".csv"
            try:
                text = path.read_text(encoding="utf-8-sig" if is_csv else "utf-8")
            except OSError as exc:
                parsed.append(
                    ParsedRecord(
                        str(path),
                        None,
                        None,
                        ReasonCode.DECODE_ERROR.value,
                        f"cannot read file ({exc.strerror}): check the path",
                    )
                )
                continue
            except UnicodeDecodeError as exc:
                parsed.append(
                    ParsedRecord(
                        str(path),
                        None,
                        None,
                        ReasonCode.DECODE_ERROR.value,
                        f"not UTF-8 (byte {exc.start}): save the file as UTF-8 (CSV UTF-8)",
                    )
                )
                continue
            parse = parse_police_csv if is_csv else parse_police_json
            parsed += parse(text, source=str(path), publisher_id=self.publisher_id)
        return parsed

    async def publish(
        self, producer: AIOKafkaProducer, records: Sequence[ParsedRecord]
    ) -> list[PublishOutcome]:
        """Publish the valid records (acks=all) and report on every record."""
        good = [r for r in records if r.concern is not None]
        await send_all(producer, [self.prepare(r.concern) for r in good if r.concern])
        return [PublishOutcome(r.label, r.concern_id, r.status, r.detail) for r in records]
