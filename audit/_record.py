"""The audit record (``schemas/avro/audit_record/v1.avsc``) and its canonical bytes.

An ``AuditRecord`` mirrors the Avro schema field for field. It carries only
pseudonyms and identifiers, never personal data (DESIGN §4.4).

Two encodings:

- ``to_avro()`` / ``from_avro()``: the dict fastavro writes to and reads from
  ``hips.audit``.
- ``canonical_bytes()`` / ``from_canonical()``: the log entry that is hashed
  (RFC 9162 leaf). Canonical JSON: sorted keys, no whitespace, UTF-8 (not
  ASCII-escaped), timestamps as ``YYYY-MM-DDTHH:MM:SS.mmmZ``, arrays as lists.
  Equal records give identical bytes, and ``from_canonical`` accepts only
  bytes in exactly that form.

Timestamps are normalised on construction to UTC with millisecond precision,
the precision of Avro ``timestamp-millis``, so a record survives both encodings
unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas import AuditEvent, DecodeError, ReasonCode, ValidationError

__all__ = ["AuditRecord", "as_event", "entry_id_for", "format_time", "parse_time", "utc_millis"]

_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Field groups, used to validate and convert. Together they are the avsc fields.
_REQUIRED_STR = ("entry_id", "source", "actor")
_OPTIONAL_STR = (
    "disclosure_id",
    "decision_id",
    "concern_id",
    "recipient",
    "lscp",
    "lawful_basis",
    "purpose",
    "consent_state",
    "policy_revision",
    "payload_sha256",
    "credential",
    "input_sha256",
)
_STR_ARRAYS = ("subject_pseudonyms", "reason_codes", "reasons", "fields_disclosed")
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS


def format_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of a UTC, millisecond-precision datetime."""
    m = moment
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond // 1000:03d}Z"
    )


def _fast_time(m: datetime) -> str:
    """``format_time`` with %-formatting (about twice as fast; same output)."""
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031
        m.year,
        m.month,
        m.day,
        m.hour,
        m.minute,
        m.second,
        m.microsecond // 1000,
    )


def _recent_formatter() -> Callable[[datetime], str]:
    """``_fast_time`` that remembers the last timestamp it formatted.

    Consecutive records often share a timestamp (every decision on a concern
    carries the concern's deadline; the router stamps a poll's decisions with
    one ``now``), and formatting was about half of encoding an entry. The memory
    is one (datetime, text) tuple, replaced whole, so threads may share it.
    """
    recent = (_EPOCH, _fast_time(_EPOCH))

    def text(moment: datetime) -> str:
        nonlocal recent
        last = recent
        if last[0] == moment:
            return last[1]
        formatted = _fast_time(moment)
        recent = (moment, formatted)
        return formatted

    return text


# One each, so a run of equal deadlines survives a run of distinct ``at``s.
_at_text = _recent_formatter()
_deadline_text = _recent_formatter()


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; accepts that exact form only."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise DecodeError(
            "timestamp is not in the form YYYY-MM-DDTHH:MM:SS.mmmZ",
            code=ReasonCode.DECODE_ERROR,
        )
    year, month, day, hour, minute, second, millis = (int(g) for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=UTC)
    except ValueError:
        raise DecodeError(
            "timestamp is not a valid date and time", code=ReasonCode.DECODE_ERROR
        ) from None


def utc_millis(name: str, value: object) -> datetime:
    """``value`` in UTC, truncated to milliseconds; ``ValidationError`` if naive."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime", fields=(name,))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{name} must be timezone-aware",
            fields=(name,),
            hint="pass datetime.now(UTC), not datetime.now()",
        )
    moment = value.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def as_event(value: object) -> AuditEvent:
    """``value`` as an ``AuditEvent``; ``ValidationError`` if it is not one."""
    if isinstance(value, AuditEvent):
        return value
    try:
        return AuditEvent(str(value))
    except ValueError:
        raise ValidationError(
            "event is not a known audit event",
            fields=("event",),
            hint=f"one of: {', '.join(e.value for e in AuditEvent)}",
        ) from None


def entry_id_for(event: AuditEvent | str, key: str) -> str:
    """Deterministic entry id: first 32 hex chars of SHA-256 of ``event \\0 key``.

    For decision events (DISCLOSED, WITHHELD, REFERRED) the key is the
    ``disclosure_id``, so the log deduplicates on (disclosure_id, event).
    """
    name = as_event(event).value
    return hashlib.sha256(f"{name}\x00{key}".encode()).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One audit event; mirrors ``audit_record/v1.avsc`` field for field.

    ``seq`` is assigned by the log on append and is ``None`` on the wire.
    Timestamps are stored as UTC with millisecond precision; sequences as tuples.
    """

    seq: int | None = None
    entry_id: str
    event: AuditEvent
    disclosure_id: str | None = None
    decision_id: str | None = None
    concern_id: str | None = None
    subject_pseudonyms: tuple[str, ...] = ()
    source: str
    recipient: str | None = None
    lscp: str | None = None
    lawful_basis: str | None = None
    purpose: str | None = None
    consent_state: str | None = None
    reason_codes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    policy_revision: str | None = None
    fields_disclosed: tuple[str, ...] = ()
    payload_sha256: str | None = None
    deadline: datetime | None = None
    at: datetime
    actor: str
    # v4 extensions: in the canonical entry only when set, so every entry written
    # before them is still canonical, and still hashes to its leaf.
    credential: str | None = None
    input_sha256: str | None = None
    test: bool = False

    def __post_init__(self) -> None:
        # The same checks in the same order, read from the instance dict (the router
        # builds several records per concern; getattr per field was most of the cost).
        values = self.__dict__
        seq = values["seq"]
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
            raise ValidationError("seq must be None or a positive integer", fields=("seq",))
        values["event"] = as_event(values["event"])
        for name in _REQUIRED_STR:
            value = values[name]
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be a non-empty string", fields=(name,))
        for name in _OPTIONAL_STR:
            value = values[name]
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{name} must be a string or None", fields=(name,))
        for name in _STR_ARRAYS:
            value = values[name]
            if isinstance(value, str) or not isinstance(value, tuple | list):
                raise ValidationError(f"{name} must be a sequence of strings", fields=(name,))
            for item in value:
                if not isinstance(item, str):
                    raise ValidationError(f"{name} must contain only strings", fields=(name,))
            if isinstance(value, list):
                values[name] = tuple(value)
        if not isinstance(values["test"], bool):
            raise ValidationError("test must be a boolean", fields=("test",))
        values["at"] = utc_millis("at", values["at"])
        if values["deadline"] is not None:
            values["deadline"] = utc_millis("deadline", values["deadline"])

    # -- Avro -----------------------------------------------------------------

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes with ``audit_record`` (enum as str, arrays as lists)."""
        out: dict[str, Any] = {}
        values = self.__dict__
        for name in _FIELD_ORDER:  # not dataclasses.fields(): it rebuilds a tuple per call
            value = values[name]
            if isinstance(value, AuditEvent):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Build from a dict fastavro read; raises ``ValidationError`` if it does not fit."""
        if not isinstance(data, Mapping):
            raise ValidationError("audit record must be a mapping")
        missing = [
            name for name in ("entry_id", "event", "source", "at", "actor") if name not in data
        ]
        if missing:
            raise ValidationError(
                f"audit record lacks required fields: {', '.join(missing)}", fields=tuple(missing)
            )
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if (
                f.name in ("at", "deadline")
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                value = _EPOCH + timedelta(milliseconds=value)  # timestamp-millis read as a long
            values[f.name] = value
        return cls(**values)

    # -- canonical log entry --------------------------------------------------

    def _canonical_dict(self, seq: int | None) -> dict[str, Any]:
        # Keys in sorted order and spelled out: this is the specification that
        # ``reference_bytes`` encodes; from_canonical and the tests check the
        # keys are exactly the fields.
        v = self.__dict__
        deadline = v["deadline"]
        return {
            "actor": v["actor"],
            "at": _fast_time(v["at"]),
            "concern_id": v["concern_id"],
            "consent_state": v["consent_state"],
            "deadline": None if deadline is None else _fast_time(deadline),
            "decision_id": v["decision_id"],
            "disclosure_id": v["disclosure_id"],
            "entry_id": v["entry_id"],
            "event": v["event"].value,
            "fields_disclosed": v["fields_disclosed"],
            "lawful_basis": v["lawful_basis"],
            "lscp": v["lscp"],
            "payload_sha256": v["payload_sha256"],
            "policy_revision": v["policy_revision"],
            "purpose": v["purpose"],
            "reason_codes": v["reason_codes"],
            "reasons": v["reasons"],
            "recipient": v["recipient"],
            "seq": seq,
            "source": v["source"],
            "subject_pseudonyms": v["subject_pseudonyms"],
            **{name: v[name] for name in _EXTENSIONS if v[name] != _EXTENSIONS[name]},
        }

    def reference_bytes(self, seq: int | None) -> bytes:
        """The entry via the standard library's JSON encoder: the specification.

        Sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``). Slower than
        ``entry_bytes``; the tests check the two agree byte for byte.
        """
        return _CANONICAL.encode(self._canonical_dict(seq)).encode("utf-8")

    def _encode(self, seq: int | None) -> bytes:
        # orjson writes exactly what json.dumps(sort_keys=True, separators=(",", ":"),
        # ensure_ascii=False) writes, for every code point (a test checks them
        # all), 15 times faster for this record shape; append is bound by
        # encoding. The instance dict holds exactly the fields (a test checks
        # that too), so copying it and letting orjson sort the keys is cheaper
        # than building ``_canonical_dict``; enums serialise as their values.
        values = self.__dict__.copy()
        for name, default in _EXTENSIONS.items():
            if values[name] == default:
                del values[name]
        values["seq"] = seq
        values["at"] = _at_text(values["at"])
        deadline = values["deadline"]
        if deadline is not None:
            values["deadline"] = _deadline_text(deadline)
        try:
            return _dumps(values, option=_SORTED)
        except TypeError:
            raise ValidationError(
                "audit record text is not valid Unicode (it holds a lone surrogate)",
                hint="decode agency text strictly before it reaches the audit record",
            ) from None

    def canonical_bytes(self) -> bytes:
        """The log entry: canonical JSON, byte-identical for equal records."""
        return self._encode(self.seq)

    def entry_bytes(self, seq: int) -> bytes:
        """``self.with_seq(seq).canonical_bytes()``, without building the copy."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValidationError("seq must be a positive integer", fields=("seq",))
        return self._encode(seq)

    @classmethod
    def from_canonical(cls, data: bytes) -> AuditRecord:
        """Parse a log entry; raises ``DecodeError`` unless ``data`` is canonical."""
        # A repeated key or any other non-canonical spelling fails the final
        # re-encoding check, so plain json.loads is enough here.
        try:
            parsed = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DecodeError("log entry is not UTF-8 JSON", code=ReasonCode.DECODE_ERROR) from None
        if not isinstance(parsed, dict):
            raise DecodeError("log entry is not a JSON object", code=ReasonCode.DECODE_ERROR)
        names = _FIELD_NAMES
        if not _BASE_NAMES <= parsed.keys() <= names:
            unexpected = sorted(set(parsed) - names)
            missing = sorted(_BASE_NAMES - set(parsed))
            raise DecodeError(
                f"log entry fields differ from the audit record (missing {missing}, "
                f"unexpected {unexpected})",
                code=ReasonCode.DECODE_ERROR,
            )
        for name in ("at", "deadline"):
            value = parsed[name]
            if value is not None:
                if not isinstance(value, str):
                    raise DecodeError(
                        f"log entry {name} is not a timestamp", code=ReasonCode.DECODE_ERROR
                    )
                parsed[name] = parse_time(value)
        try:
            record = cls(**parsed)
        except ValidationError as exc:
            raise DecodeError(f"log entry is not a valid audit record: {exc.message}") from None
        if record.canonical_bytes() != bytes(data):
            raise DecodeError("log entry is not in canonical form", code=ReasonCode.DECODE_ERROR)
        return record

    @classmethod
    def from_log(cls, data: bytes) -> AuditRecord:
        """Read an entry the store wrote, without re-checking it is canonical.

        About twice as fast as ``from_canonical``: the store only ever writes
        canonical entries, and ``verify_store`` is what proves the file still
        holds them. Raises ``DecodeError`` if ``data`` is not an audit record
        at all; anything that must hold against tampering uses
        ``from_canonical``.
        """
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DecodeError("log entry is not UTF-8 JSON", code=ReasonCode.DECODE_ERROR) from None
        if not isinstance(parsed, dict) or not _BASE_NAMES <= parsed.keys() <= _FIELD_NAMES:
            return cls.from_canonical(data)  # raises with the details
        try:
            record = object.__new__(cls)
            values = record.__dict__
            values.update(_EXTENSIONS)
            values.update(parsed)
            values["event"] = AuditEvent(parsed["event"])
            values["at"] = parse_time(parsed["at"])
            if parsed["deadline"] is not None:
                values["deadline"] = parse_time(parsed["deadline"])
            for name in _STR_ARRAYS:
                values[name] = tuple(parsed[name])
            return record
        except (TypeError, ValueError, DecodeError):
            return cls.from_canonical(data)  # raises with the details

    def with_seq(self, seq: int) -> AuditRecord:
        """A copy with ``seq`` set (the log does this on append)."""
        return dataclasses.replace(self, seq=seq)


#: The fields in declaration order (the order ``to_avro`` writes them).
_FIELD_ORDER = tuple(f.name for f in dataclasses.fields(AuditRecord))
_FIELD_NAMES = frozenset(_FIELD_ORDER)
#: Fields added after the log format was fixed, with the default that leaves them out.
_EXTENSIONS: dict[str, Any] = {"credential": None, "input_sha256": None, "test": False}
#: The fields every canonical entry has.
_BASE_NAMES = _FIELD_NAMES - _EXTENSIONS.keys()
