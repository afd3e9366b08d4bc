"""A hostile corpus: inbound records built to hurt the router (issue 11, point 6).

``build_corpus(runtime, seed=..., now=...)`` returns more than 1,000 hostile
inbound records of more than 30 kinds, each with the one stable reason code it
must get, plus the valid concerns to interleave with them. Every hostile record
starts as a valid concern, made from synthetic people (``adapters``) and signed
with the real police adapter (``Runtime.police_adapter().prepare``), and is then
damaged: its bytes, its headers, its key, its signature or its content.

A case's ``expected`` is one of:

* a ``ReasonCode`` value: the router must quarantine the record with exactly
  that code (audited QUARANTINED, a bounded copy on ``hips.quarantine``);
* ``REPLAY``: an exact replay of a routed concern, recorded once as REPLAYED,
  never quarantined, nothing produced;
* ``REFUSED``: a record over the topics' size limit, which never reaches the
  router: ``refused_by`` says which first hop refuses it (``producer``: the
  SAFER producer itself; ``broker``: a producer configured to send it anyway,
  refused by the broker's ``max.message.bytes``).

Deterministic: the same runtime keys, ``seed`` and ``now`` give byte-identical
records (synthetic people, concern ids, rogue keys, damage positions and
Ed25519 signatures are all derived from them). No network, no clock.

The kinds (``Corpus.kinds()`` counts them):

* bytes: ``truncated`` (every length from 0 through the body), ``null-value``,
  ``trailing-bytes``, ``wrong-magic`` (and JSON, CSV, gzip), ``unknown-schema``,
  ``wrong-subject`` (valid Avro of every other subject and version),
  ``invalid-utf8`` (inside Avro strings), ``avro-structure`` (enum and union
  indices, lengths and counts that lie, dates beyond any calendar),
  ``huge-arrays`` (150,000 one-item blocks, negative block counts);
* signatures and ids: ``bitflip-body``, ``bitflip-signature``,
  ``bitflip-key-id``, ``bitflip-concern-id-header``, ``spoof-unknown-key``,
  ``spoof-rogue-claims-police-key``, ``spoof-other-agency`` (a recipient or the
  router as source or signer), ``spoof-concern-id``;
* metadata: ``header-unknown`` (names and NHS numbers in other headers, case and
  look-alike names), ``header-repeated``, ``header-invalid-value`` (empty,
  oversized), ``header-pid-in-allowed``, ``header-missing``, ``key-abuse``;
* size: ``oversize`` (between the router's limit and the topics': TOO_LARGE),
  ``oversize-first-hop`` (over the topics' limit: REFUSED);
* content, validly signed: ``absurd-dates``, ``absurd-ages``, ``absurd-sizes``,
  ``id-not-canonical``, ``schema-invalid``, ``minimum-dataset-missing``,
  ``address-unresolved``, ``risk-invalid`` (issue 16: a HIGH grade without a
  rationale, an assessment of an adult or of nobody, a method without its
  detail, a DASH score out of range, too many or too long);
* replays: ``replay-exact`` (REPLAY) and ``replay-conflict``.

Damage is aimed where its outcome is certain, so that each case has one right
answer rather than "one of several": a bit flip inside the ASCII text of a
signed string still decodes (so only the signature can catch it), a flip of
the top bit of an ASCII byte never leaves valid UTF-8, a truncation always
leaves the Avro body short, and content damage is re-signed with the police
key so that the check under test is the first one that can fail.
"""

from __future__ import annotations

import io
import random
import struct
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fastavro
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters import PoliceAdapter, synthetic_concerns, synthetic_people
from broker import SIZE_LIMITS, Headers, OutRecord, SigningIdentity, sign_record, signed_record
from broker._topics import header_has_form
from consent import missing_minimum_dataset
from safer import Runtime
from schemas import (
    CONCERN,
    LIMITS,
    Address,
    ConcernModel,
    ConcernType,
    IncidentLocation,
    ReasonCode,
    RiskAssessment,
    RiskGrade,
    RiskMethod,
    Subject,
    SubjectRole,
    catalogue,
    content_schema_id,
    split_wire,
)

__all__ = ["REFUSED", "REPLAY", "Corpus", "HostileCase", "build_corpus"]

#: Refused at the first hop (producer or broker); never reaches the router.
REFUSED = "REFUSED"
#: An exact replay: recorded once as REPLAYED (reason code REPLAY), never quarantined.
REPLAY = ReasonCode.REPLAY.value
POLICE_ID = "hampshire-constabulary"
#: Personal data put in an allowed header is cut to this: short enough to pass the length
#: checks, and as long as the key id a message once quoted (to the audit log).
MAX_SHOWN = 32


@dataclass(frozen=True)
class HostileCase:
    """One hostile inbound record and the outcome it must get."""

    kind: str
    label: str
    record: OutRecord
    expected: str
    #: ``producer`` or ``broker`` for REFUSED cases.
    refused_by: str | None = None
    #: Replays and conflicts: the ``concern_id`` of the valid concern they copy.
    original: str | None = None
    #: REFUSED cases: the code the router would give if a first hop let it through.
    if_delivered: str | None = None

    @property
    def fate(self) -> str:
        if self.expected == REFUSED:
            return "REFUSED"
        return "REPLAYED" if self.expected == REPLAY else "QUARANTINED"


@dataclass(frozen=True)
class Corpus:
    seed: int
    #: The valid traffic: signed concerns the router must route.
    valid: tuple[OutRecord, ...]
    valid_concerns: tuple[ConcernModel, ...]
    cases: tuple[HostileCase, ...]
    #: Personal values the corpus carries (names, NHS numbers, addresses...), for leak scans.
    personal_data: frozenset[str]

    def kinds(self) -> Counter[str]:
        return Counter(c.kind for c in self.cases)

    def expected_codes(self) -> Counter[str]:
        return Counter(c.expected for c in self.cases)

    def interleaved(self) -> list[tuple[HostileCase | None, OutRecord]]:
        """Every record that reaches the broker, valid and hostile mixed, in send order.

        Deterministic. Replays and conflicts come after their original (same key,
        so the same partition: Kafka keeps their order). REFUSED cases are left
        out: they are sent on their own, each expected to fail.
        """
        rng = random.Random(self.seed ^ 0x5AFE)
        n = len(self.valid)
        index = {c.concern_id: i for i, c in enumerate(self.valid_concerns)}  # original -> position
        chunks: list[list[HostileCase]] = [[] for _ in range(n + 1)]
        for case in self.cases:
            if case.fate == "REFUSED":
                continue
            if case.original is not None:
                after = index[case.original]
                chunks[rng.randint(after + 1, n)].append(case)
            else:
                chunks[rng.randint(0, n)].append(case)
        order: list[tuple[HostileCase | None, OutRecord]] = []
        for i in range(n + 1):
            chunk = chunks[i]
            rng.shuffle(chunk)
            order += [(c, c.record) for c in chunk]
            if i < n:
                order.append((None, self.valid[i]))
        return order


# ---------------------------------------------------------------------- byte helpers


def zigzag(n: int) -> bytes:
    """Avro's variable-length zig-zag encoding of a long."""
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def wire_frame(schema_id: int, body: bytes) -> bytes:
    """The Confluent wire format: magic 0x00, the schema id (4 bytes, big-endian), the body."""
    return struct.pack(">bI", 0, schema_id) + body


def _varint_end(body: bytes, start: int) -> int:
    end = start
    while body[end] & 0x80:
        end += 1
    return end + 1


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    raise ValueError("no difference")


def _form_or(name: str, value: bytes, otherwise: ReasonCode) -> ReasonCode:
    """A damaged header value that lost its form is HEADER_INVALID before anything else."""
    return otherwise if header_has_form(name, value) else ReasonCode.HEADER_INVALID


def _flip(data: bytes, index: int, bit: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def _replace_header(
    headers: Sequence[tuple[str, bytes]], name: str, value: bytes
) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, value if k == name else v) for k, v in headers)


def _without(headers: Sequence[tuple[str, bytes]], *names: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v) for k, v in headers if k not in names)


def _header(record: OutRecord, name: str) -> bytes:
    return dict(record.headers)[name]


def _minimal_datum(schema: Any, rng: random.Random) -> Any:
    """Some valid value of an Avro schema (used to make records of the wrong subject)."""
    if isinstance(schema, list):
        return _minimal_datum(schema[-1], rng)
    if isinstance(schema, str):
        return {
            "string": "x" * rng.randint(0, 8),
            "bytes": rng.randbytes(rng.randint(0, 8)),
            "int": rng.randint(0, 1000),
            "long": rng.randint(0, 10**12),
            "boolean": rng.random() < 0.5,
            "null": None,
            "double": rng.random(),
            "float": 0.5,
        }[schema]
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    if logical == "date":
        return date(2026, 1, 2)
    if kind == "record":
        return {f["name"]: _minimal_datum(f["type"], rng) for f in schema["fields"]}
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [_minimal_datum(schema["items"], rng) for _ in range(rng.randint(0, 2))]
    if kind == "map":
        return {f"k{i}": _minimal_datum(schema["values"], rng) for i in range(rng.randint(0, 2))}
    if kind == "fixed":
        return bytes(schema["size"])
    return _minimal_datum(kind, rng)


# ---------------------------------------------------------------------- the builder


@dataclass
class _Builder:
    runtime: Runtime
    seed: int
    now: datetime
    rng: random.Random
    police: PoliceAdapter
    police_identity: SigningIdentity
    bases: list[ConcernModel]
    topic: str
    cases: list[HostileCase] = field(default_factory=list)
    personal: set[str] = field(default_factory=set)
    _next_base: int = 0
    _counts: Counter[str] = field(default_factory=Counter)

    # -- plumbing ---------------------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def base(self, accept: Callable[[ConcernModel], bool] | None = None) -> ConcernModel:
        """The next synthetic concern (round robin) that ``accept`` likes."""
        for _ in range(len(self.bases)):
            concern = self.bases[self._next_base % len(self.bases)]
            self._next_base += 1
            if accept is None or accept(concern):
                return concern
        raise ValueError("no base concern fits")

    def fresh(self, base: ConcernModel | None = None, /, **changes: Any) -> ConcernModel:
        """A copy of a base concern under a new concern_id (model_copy: no validation)."""
        concern = base or self.base()
        return concern.model_copy(update={"concern_id": self.uuid(), **changes})

    def signed(self, concern: ConcernModel | None = None) -> OutRecord:
        return self.police.prepare(concern or self.fresh())

    def add(
        self,
        kind: str,
        record: OutRecord,
        expected: str | ReasonCode,
        *,
        refused_by: str | None = None,
        original: str | None = None,
        if_delivered: ReasonCode | None = None,
    ) -> None:
        self._counts[kind] += 1
        label = f"{kind}/{self._counts[kind]:04d}"
        self.cases.append(
            HostileCase(
                kind,
                label,
                record,
                str(expected),
                refused_by,
                original,
                if_delivered.value if if_delivered else None,
            )
        )

    def resign(
        self,
        record: OutRecord,
        body: bytes,
        *,
        identity: SigningIdentity | None = None,
        schema_id: int | None = None,
        record_id: str | None = None,
    ) -> OutRecord:
        """The record with a new Avro body, validly signed (by the police key by default)."""
        who = identity or self.police_identity
        sid = split_wire(record.value)[0] if schema_id is None else schema_id
        rid = _header(record, Headers.CONCERN_ID).decode() if record_id is None else record_id
        signature = sign_record(who, schema_id=sid, record_id=rid, body=body)
        headers = _replace_header(record.headers, Headers.SIGNATURE, signature)
        headers = _replace_header(headers, Headers.KEY_ID, who.key_id.encode())
        headers = _replace_header(headers, Headers.SCHEMA_ID, str(sid).encode())
        return OutRecord(record.topic, record.key, wire_frame(sid, body), headers)

    def sign_dict(self, data: dict[str, Any], *, key: bytes | None, record_id: str) -> OutRecord:
        """A concern dict as it stands (no model), signed by the police key."""
        return signed_record(
            self.runtime.codec,
            self.police_identity,
            CONCERN,
            data,
            topic=self.topic,
            key=key,
            record_id=record_id,
            id_header=Headers.CONCERN_ID,
        )

    def person(self, concern: ConcernModel) -> list[str]:
        """Personal values of a concern's child, to smuggle into metadata."""
        child = (concern.children() or list(concern.subjects))[0]
        values = [
            f"{child.given_name} {child.family_name}",
            child.family_name,
            child.nhs_number or "",
            child.date_of_birth.isoformat() if child.date_of_birth else "",
            child.address.line1 if child.address else "",
            child.address.postcode if child.address else "",
            child.police_person_id or "",
        ]
        found = [v for v in values if v]
        self.personal.update(v for v in found if len(v) >= 4 and not _is_recent_date(v))
        return found

    # -- kinds ------------------------------------------------------------------

    def truncations(self) -> None:
        """Cut short at many lengths: the framing, the schema id, and all through the body."""
        for n in range(6):
            self.add("truncated", self._cut(self.signed(), n), ReasonCode.DECODE_ERROR)
        for _ in range(4):
            record = self.signed()
            size = len(record.value)
            lengths = sorted({6, 7, size - 1, size - 2, *self.rng.sample(range(8, size - 2), 30)})
            for n in lengths:
                self.add("truncated", self._cut(record, n), ReasonCode.DECODE_ERROR)
        for _ in range(3):  # a tombstone: a key and headers, no value at all
            record = self.signed()
            self.add(
                "null-value",
                OutRecord(self.topic, record.key, None, record.headers),  # type: ignore[arg-type]
                ReasonCode.DECODE_ERROR,
            )

    def _cut(self, record: OutRecord, n: int) -> OutRecord:
        return OutRecord(record.topic, record.key, record.value[:n], record.headers)

    def trailing(self) -> None:
        """A whole, validly signed record with bytes after its Avro body."""
        for i in range(20):
            record = self.signed()
            junk = [b"\x00", b"\x02ab", self.rng.randbytes(self.rng.randint(1, 300))][i % 3]
            if i % 7 == 6:
                junk = split_wire(record.value)[1]  # the body twice
            self.add(
                "trailing-bytes",
                self.resign(record, split_wire(record.value)[1] + junk),
                ReasonCode.DECODE_ERROR,
            )

    def _ascii_positions(self, concern: ConcernModel, body: bytes) -> list[int]:
        """Body offsets of ASCII bytes inside the concern's free text and names."""
        positions: list[int] = []
        child = (concern.children() or list(concern.subjects))[0]
        for text in (
            concern.narrative,
            concern.source_ref,
            concern.officer.name,
            child.given_name,
            child.family_name,
            concern.concern_id,
        ):
            raw = text.encode()
            start = body.find(raw)
            assert start >= 0, "a string of the concern is not in its body"
            positions += [start + i for i, byte in enumerate(raw) if byte < 0x80]
        return positions

    def bit_flips(self) -> None:
        """Flips in the body (text: still decodes), the signature, the key id, the id header."""
        for _ in range(12):
            concern = self.fresh()
            record = self.signed(concern)
            schema_id, body = split_wire(record.value)
            positions = self._ascii_positions(concern, body)
            for pos in self.rng.sample(positions, 10):
                flipped = _flip(body, pos, self.rng.randrange(7))  # stays ASCII
                self.add(
                    "bitflip-body",
                    OutRecord(
                        self.topic, record.key, wire_frame(schema_id, flipped), record.headers
                    ),
                    ReasonCode.SIGNATURE_INVALID,
                )
        for i in range(64):
            record = self.signed()
            sig = _header(record, Headers.SIGNATURE)
            flipped = _flip(sig, i, self.rng.randrange(8))
            headers = _replace_header(record.headers, Headers.SIGNATURE, flipped)
            self.add(
                "bitflip-signature",
                OutRecord(self.topic, record.key, record.value, headers),
                _form_or(Headers.SIGNATURE, flipped, ReasonCode.SIGNATURE_INVALID),
            )
        for fixed in (bytes(64), b"\xff" * 64, None, None, None):
            record = self.signed()
            real = _header(record, Headers.SIGNATURE)
            value = (
                fixed
                if fixed is not None
                else self.rng.choice([real[:63], real + b"\x00", real[:32]])
            )
            self.add(
                "bitflip-signature",
                OutRecord(
                    self.topic,
                    record.key,
                    record.value,
                    _replace_header(record.headers, Headers.SIGNATURE, value),
                ),
                _form_or(Headers.SIGNATURE, value, ReasonCode.SIGNATURE_INVALID),
            )
        for _ in range(20):
            record = self.signed()
            kid = _header(record, Headers.KEY_ID)
            flipped = _flip(kid, self.rng.randrange(len(kid)), self.rng.randrange(8))
            self.add(
                "bitflip-key-id",
                OutRecord(
                    self.topic,
                    record.key,
                    record.value,
                    _replace_header(record.headers, Headers.KEY_ID, flipped),
                ),
                _form_or(Headers.KEY_ID, flipped, ReasonCode.UNKNOWN_PUBLISHER),
            )
        for _ in range(20):
            record = self.signed()
            cid = _header(record, Headers.CONCERN_ID)
            flipped = _flip(cid, self.rng.randrange(len(cid)), self.rng.randrange(8))
            self.add(
                "bitflip-concern-id-header",
                OutRecord(
                    self.topic,
                    record.key,
                    record.value,
                    _replace_header(record.headers, Headers.CONCERN_ID, flipped),
                ),
                _form_or(Headers.CONCERN_ID, flipped, ReasonCode.SIGNATURE_INVALID),
            )

    def invalid_utf8(self) -> None:
        """Invalid UTF-8 inside Avro strings: a top bit flipped, or a bad sequence, re-signed."""
        for i in range(40):
            concern = self.fresh()
            record = self.signed(concern)
            schema_id, body = split_wire(record.value)
            pos = self.rng.choice(self._ascii_positions(concern, body))
            damaged = _flip(body, pos, 7)  # 0xxxxxxx -> 1xxxxxxx: never valid on its own
            out = (
                self.resign(record, damaged)
                if i % 2
                else OutRecord(
                    self.topic, record.key, wire_frame(schema_id, damaged), record.headers
                )
            )
            self.add("invalid-utf8", out, ReasonCode.DECODE_ERROR)
        sequences = [
            b"\xc0\xaf",  # overlong '/'
            b"\xe0\x80\xaf",  # overlong, three bytes
            b"\xed\xa0\x80",  # a UTF-16 surrogate
            b"\xf4\x90\x80\x80",  # above U+10FFFF
            b"\xff",
            b"\xfe\xfe",
            b"\x80",  # a lone continuation byte
            b"\xe2\x82",  # a sequence cut short
        ]
        for i in range(32):
            concern = self.fresh()
            record = self.signed(concern)
            _, body = split_wire(record.value)
            child = (concern.children() or list(concern.subjects))[0]
            text = [concern.narrative, child.family_name, concern.officer.name, concern.source_ref][
                i % 4
            ]
            raw = text.encode()
            start = body.find(raw)
            bad = sequences[i % len(sequences)]
            if len(bad) > len(raw):
                bad = bad[: len(raw)] if len(raw) > 1 else b"\xff"
            at = start + self.rng.randrange(len(raw) - len(bad) + 1)
            damaged = body[:at] + bad + body[at + len(bad) :]
            self.add("invalid-utf8", self.resign(record, damaged), ReasonCode.DECODE_ERROR)

    def framing(self) -> None:
        """Wrong magic byte; schema ids nobody registered; not Avro at all."""
        for magic in self.rng.sample(range(1, 256), 40):
            record = self.signed()
            value = bytes([magic]) + record.value[1:]
            self.add(
                "wrong-magic",
                OutRecord(self.topic, record.key, value, record.headers),
                ReasonCode.DECODE_ERROR,
            )
        concern = self.fresh()
        police_json = concern.model_dump_json().encode()
        csv = (
            b"concern_id,source_agency\n" + concern.concern_id.encode() + b"," + POLICE_ID.encode()
        )
        for value in (police_json, csv, b"not avro at all", b"\x1f\x8b\x08\x00gzip", b"\xff" * 64):
            record = self.signed(concern)
            self.add(
                "wrong-magic",
                OutRecord(self.topic, record.key, value, record.headers),
                ReasonCode.DECODE_ERROR,
            )
        known = {content_schema_id(v.source) for vs in catalogue().values() for v in vs}
        ids = [0, 1, 2**31 - 1, 2**32 - 1, *(k + 1 for k in sorted(known)[:5])]
        while len(ids) < 40:
            ids.append(self.rng.getrandbits(32))
        for schema_id in ids:
            if schema_id in known:
                continue
            record = self.signed()
            body = split_wire(record.value)[1]
            # Signed over the unknown id too: only the registry can refuse it.
            self.add(
                "unknown-schema",
                self.resign(record, body, schema_id=schema_id),
                ReasonCode.UNKNOWN_SCHEMA,
            )

    def wrong_subject(self) -> None:
        """Valid Avro of every other subject and version, signed by the police key."""
        for subject, versions in sorted(catalogue().items()):
            if subject == CONCERN:
                continue
            for version in versions:
                schema_id = content_schema_id(version.source)
                for _ in range(2):
                    datum = _minimal_datum(version.source, self.rng)
                    buffer = io.BytesIO()
                    fastavro.schemaless_writer(buffer, version.parsed, datum)
                    record = self.signed()
                    self.add(
                        "wrong-subject",
                        self.resign(record, buffer.getvalue(), schema_id=schema_id),
                        ReasonCode.UNKNOWN_SCHEMA,
                    )

    def oversize(self) -> None:
        """Over the router's limit but under the topics' (TOO_LARGE); over the topics' (refused)."""
        limit = SIZE_LIMITS.inbound_value_bytes
        for size in (
            limit + 1,
            limit + 1000,
            int(limit * 1.25),
            int(limit * 1.5),
            int(limit * 1.9),
        ):
            record = self.signed()
            padded = record.value + b"\x00" * (size - len(record.value))
            self.add(
                "oversize",
                OutRecord(self.topic, record.key, padded, record.headers),
                ReasonCode.TOO_LARGE,
            )
        for chars in (
            limit + 10,
            int(limit * 1.4),
        ):  # a real signed concern, its narrative too long
            record = self.signed(self.fresh(narrative=self._prose(chars)))
            self.add("oversize", record, ReasonCode.TOO_LARGE)
        record = self.signed()
        junk = self.rng.randbytes(int(limit * 1.1))
        self.add(
            "oversize",
            OutRecord(self.topic, record.key, junk, record.headers),
            ReasonCode.TOO_LARGE,
        )
        top = SIZE_LIMITS.message_bytes
        for size, by in (
            (top + 1, "producer"),
            (3 * 1024 * 1024, "producer"),
            (5_000_000, "producer"),
            (top + 1, "broker"),
            (3 * 1024 * 1024, "broker"),
            (5_000_000, "broker"),
        ):
            record = self.signed()
            padded = record.value + b"\x00" * (size - len(record.value))
            self.add(
                "oversize-first-hop",
                OutRecord(self.topic, record.key, padded, record.headers),
                REFUSED,
                refused_by=by,
                if_delivered=ReasonCode.TOO_LARGE,
            )
        record = self.signed()  # a 3 MB header: the producer refuses the record
        self.add(
            "oversize-first-hop",
            OutRecord(
                self.topic,
                record.key,
                record.value,
                (*record.headers, (Headers.TRACE_ID, b"x" * 3_000_000)),
            ),
            REFUSED,
            refused_by="producer",
            if_delivered=ReasonCode.HEADER_INVALID,
        )

    def _prose(self, chars: int) -> str:
        """Exactly ``chars`` characters of plausible words."""
        words = ["the", "child", "said", "officers", "attended", "and", "spoke", "with", "family"]
        out: list[str] = []
        size = -1
        while size < chars:
            word = self.rng.choice(words)
            out.append(word)
            size += len(word) + 1
        text = " ".join(out)[:chars]
        assert len(text) == chars
        return text

    def header_abuse(self) -> None:
        """Unknown header names carrying personal data; repeated, empty, oversized, missing."""
        names = [
            "name",
            "nhs_number",
            "x-subject",
            "dob",
            "address",
            "traceparent",
            "X-Forwarded-For",
            "Safer-Concern-Id",
            "SAFER-KEY-ID",
            "safer-concern-id ",
            " safer-sig",
            "safer\u2010sig",  # a unicode hyphen
            "safer-sig\x00",
            "safer-subject",
            "",
        ]
        for i in range(60):
            concern = self.fresh()
            record = self.signed(concern)
            values = self.person(concern)
            value = self.rng.choice(values).encode()
            name = names[i % len(names)] if i < 45 else values[0]  # a name as the header *name*
            extended = list(record.headers)
            extended.insert(self.rng.randint(0, len(extended)), (name, value))
            self.add(
                "header-unknown",
                OutRecord(self.topic, record.key, record.value, tuple(extended)),
                ReasonCode.PID_IN_METADATA,
            )
        allowed = [Headers.SCHEMA_ID, Headers.KEY_ID, Headers.SIGNATURE, Headers.CONCERN_ID]
        for i in range(32):
            record = self.signed()
            name = allowed[i % 4]
            value = _header(record, name)
            if i % 8 >= 4:  # a second, different value
                value = {
                    Headers.SCHEMA_ID: b"1",
                    Headers.KEY_ID: self.police_identity.key_id.encode()[::-1],
                    Headers.SIGNATURE: bytes(64),
                    Headers.CONCERN_ID: self.uuid().encode(),
                }[name]
            repeated = list(record.headers)
            for _ in range(1 + i % 3):
                repeated.insert(self.rng.randint(0, len(repeated)), (name, value))
            self.add(
                "header-repeated",
                OutRecord(self.topic, record.key, record.value, tuple(repeated)),
                ReasonCode.HEADER_INVALID,
            )
        for extra in (Headers.TRACE_ID, Headers.DISCLOSURE_ID, Headers.REPLAY_OF):
            record = self.signed()
            headers = (*record.headers, (extra, b"a" * 32), (extra, b"b" * 32))
            self.add(
                "header-repeated",
                OutRecord(self.topic, record.key, record.value, headers),
                ReasonCode.HEADER_INVALID,
            )
        every = [*allowed, Headers.TRACE_ID, Headers.DISCLOSURE_ID, Headers.REPLAY_OF]
        for i in range(42):
            concern = self.fresh()
            record = self.signed(concern)
            name = every[i % len(every)]
            length = [0, 129, 1024, 100_000, 129, 4096][i // len(every)]
            if length and i % 2:  # personal data, long enough to be refused
                filler = " ".join(self.person(concern)).encode() or b"x"
                value = (filler * (length // len(filler) + 1))[:length]
            else:
                value = b"7" * length
            headers = (
                _replace_header(record.headers, name, value)
                if name in allowed
                else (*record.headers, (name, value))
            )
            self.add(
                "header-invalid-value",
                OutRecord(self.topic, record.key, record.value, headers),
                ReasonCode.HEADER_INVALID,
            )
        for i in range(24):  # personal data in an allowed header, short enough to pass
            concern = self.fresh()
            record = self.signed(concern)
            values = self.person(concern)
            value = values[i % len(values)].encode()[:MAX_SHOWN]
            name, code = [
                (Headers.KEY_ID, ReasonCode.UNKNOWN_PUBLISHER),
                (Headers.CONCERN_ID, ReasonCode.SIGNATURE_INVALID),
                (Headers.SIGNATURE, ReasonCode.SIGNATURE_INVALID),
            ][i % 3]
            self.add(
                "header-pid-in-allowed",
                OutRecord(
                    self.topic,
                    record.key,
                    record.value,
                    _replace_header(record.headers, name, value),
                ),
                _form_or(name, value, code),
            )
        missing: list[tuple[str, ...]] = [
            (Headers.SIGNATURE,),
            (Headers.KEY_ID,),
            (Headers.CONCERN_ID,),
            (Headers.SIGNATURE, Headers.KEY_ID),
            (Headers.SIGNATURE, Headers.KEY_ID, Headers.CONCERN_ID, Headers.SCHEMA_ID),
        ]
        for i in range(25):
            record = self.signed()
            self.add(
                "header-missing",
                OutRecord(
                    self.topic, record.key, record.value, _without(record.headers, *missing[i % 5])
                ),
                ReasonCode.SIGNATURE_INVALID,
            )

    def key_abuse(self) -> None:
        """Keys that are not subject pseudonyms: names, NHS numbers, near-pseudonyms."""
        for i in range(50):
            concern = self.fresh()
            record = self.signed(concern)
            assert record.key is not None
            pseudonym = record.key.decode()
            values = self.person(concern)
            nhs = concern.subjects[0].nhs_number or "9990000000"
            keys = [
                self.rng.choice(values).encode(),
                f"nhs:{nhs}".encode(),
                pseudonym.upper().encode(),
                pseudonym[:31].encode(),
                (pseudonym + "0").encode(),
                ("g" * 32).encode(),
                (pseudonym + "\n").encode(),
                b"",
                b"\xff" * 32,
                str(uuid.UUID(pseudonym)).encode(),
                (pseudonym * 2).encode(),
                (" " + pseudonym[1:]).encode(),
                values[0].encode(),
            ]
            key = keys[i % len(keys)]
            self.add(
                "key-abuse",
                OutRecord(self.topic, key, record.value, record.headers),
                ReasonCode.PID_IN_METADATA,
            )

    def spoofing(self) -> None:
        """Unknown keys, a rogue key under the police key id, other agencies, id mismatches."""
        rogues = [
            SigningIdentity(POLICE_ID, Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32)))
            for _ in range(5)
        ]
        for i in range(20):  # signed by a key nobody knows, under its own key id
            record = self.signed()
            self.add(
                "spoof-unknown-key",
                self.resign(record, split_wire(record.value)[1], identity=rogues[i % 5]),
                ReasonCode.UNKNOWN_PUBLISHER,
            )
        for i in range(20):  # a rogue key claiming the police key id
            record = self.signed()
            forged = self.resign(record, split_wire(record.value)[1], identity=rogues[i % 5])
            headers = _replace_header(
                forged.headers, Headers.KEY_ID, self.police_identity.key_id.encode()
            )
            self.add(
                "spoof-rogue-claims-police-key",
                OutRecord(self.topic, forged.key, forged.value, headers),
                ReasonCode.SIGNATURE_INVALID,
            )
        directory = self.runtime.deployment.directory
        recipients = [r.id for r in directory.recipients]
        for other in self.rng.sample(recipients, 12):  # police key, another agency as source
            self.add(
                "spoof-other-agency",
                self.signed(self.fresh(source_agency=other)),
                ReasonCode.UNKNOWN_PUBLISHER,
            )
        for i, other in enumerate(self.rng.sample(recipients, 8)):  # a recipient's own key
            identity = self.runtime.keys.signing_identity(other)
            source = POLICE_ID if i % 2 else other
            record = self.signed(self.fresh(source_agency=source))
            self.add(
                "spoof-other-agency",
                self.resign(record, split_wire(record.value)[1], identity=identity),
                ReasonCode.UNKNOWN_PUBLISHER,
            )
        router = self.runtime.keys.signing_identity("safer-router")
        for _ in range(3):
            record = self.signed()
            self.add(
                "spoof-other-agency",
                self.resign(record, split_wire(record.value)[1], identity=router),
                ReasonCode.UNKNOWN_PUBLISHER,
            )
        for _ in range(10):  # the id header swapped, the signature left alone
            record = self.signed()
            headers = _replace_header(record.headers, Headers.CONCERN_ID, self.uuid().encode())
            self.add(
                "spoof-concern-id",
                OutRecord(self.topic, record.key, record.value, headers),
                ReasonCode.SIGNATURE_INVALID,
            )
        for _ in range(10):  # signed by the police key over an id that is not the body's
            record = self.signed()
            other = self.uuid()
            resigned = self.resign(record, split_wire(record.value)[1], record_id=other)
            headers = _replace_header(resigned.headers, Headers.CONCERN_ID, other.encode())
            self.add(
                "spoof-concern-id",
                OutRecord(self.topic, resigned.key, resigned.value, headers),
                ReasonCode.SIGNATURE_INVALID,
            )
        for _ in range(4):  # a name where the concern id goes, signed over it
            concern = self.fresh()
            record = self.signed(concern)
            name = self.person(concern)[0]
            resigned = self.resign(record, split_wire(record.value)[1], record_id=name)
            headers = _replace_header(resigned.headers, Headers.CONCERN_ID, name.encode())
            self.add(
                "spoof-concern-id",
                OutRecord(self.topic, resigned.key, resigned.value, headers),
                _form_or(Headers.CONCERN_ID, name.encode(), ReasonCode.SIGNATURE_INVALID),
            )

    def replays(self, valid: Sequence[ConcernModel], records: Sequence[OutRecord]) -> None:
        """Exact replays (REPLAY) and different bodies under a routed concern_id (conflict)."""
        picks = self.rng.sample(range(len(valid)), 40)
        for n, i in enumerate(picks[:20]):
            for _ in range(1 + (n % 3 == 0)):
                self.add("replay-exact", records[i], REPLAY, original=valid[i].concern_id)
        for n, i in enumerate(picks[20:]):
            original = valid[i]
            changes: list[dict[str, Any]] = [
                {"narrative": original.narrative + " Updated later."},
                {
                    "risk_grade": RiskGrade.HIGH
                    if original.risk_grade is not RiskGrade.HIGH
                    else RiskGrade.LOW
                },
                {"source_ref": original.source_ref + "1"},
                {"child_present": not original.child_present},
                {"reported_at": original.reported_at - timedelta(minutes=1)},
            ]
            changed = changes[n % len(changes)]
            record = self.police.prepare(original.model_copy(update=changed))
            # The same key as the original: the same partition, so it comes after it.
            record = OutRecord(record.topic, records[i].key, record.value, record.headers)
            self.add(
                "replay-conflict",
                record,
                ReasonCode.CONCERN_ID_CONFLICT,
                original=original.concern_id,
            )

    def _with_subject(self, concern: ConcernModel, index: int, **changes: Any) -> ConcernModel:
        subjects = list(concern.subjects)
        subjects[index] = subjects[index].model_copy(update=changes)
        return self.fresh(concern, subjects=tuple(subjects))

    def _child_index(self, concern: ConcernModel) -> int:
        return next(i for i, s in enumerate(concern.subjects) if s.role is SubjectRole.CHILD)

    def absurd_dates(self) -> None:
        """Dates that cannot be true: births in 1800, 2100 or 9999; reports in 1800 or 3000..."""
        far = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
        births = [
            date(1800, 1, 1),
            date(1899, 12, 31),
            date(2100, 1, 1),
            date(9999, 12, 31),
            date(1, 1, 1),
        ]
        for i in range(20):
            concern = self.base()
            index = i % len(concern.subjects)
            born = births[i % len(births)] if i < 15 else (self.now + timedelta(days=400)).date()
            self.add(
                "absurd-dates",
                self.signed(self._with_subject(concern, index, date_of_birth=born)),
                ReasonCode.IMPLAUSIBLE_DATE,
            )
        reported = [
            datetime(1800, 1, 1, tzinfo=UTC),
            datetime(3000, 1, 1, tzinfo=UTC),
            far,
            self.now + timedelta(days=1),
            self.now - timedelta(days=3 * 365),
        ]
        for i in range(15):
            self.add(
                "absurd-dates",
                self.signed(self.fresh(reported_at=reported[i % 5])),
                ReasonCode.IMPLAUSIBLE_DATE,
            )
        for i in range(15):
            concern = self.base()
            occurred = [
                datetime(1800, 1, 1, tzinfo=UTC),
                datetime(1949, 12, 31, tzinfo=UTC),
                concern.reported_at + timedelta(days=1),  # an incident after its report
                concern.reported_at + timedelta(minutes=16),
                far,
            ][i % 5]
            self.add(
                "absurd-dates",
                self.signed(self.fresh(concern, occurred_at=occurred)),
                ReasonCode.IMPLAUSIBLE_DATE,
            )

    def absurd_ages(self) -> None:
        """A child aged 40, a parent aged 6, anyone aged 130."""
        for i in range(30):
            concern = self.base(
                lambda c: any(s.role is SubjectRole.PARENT_CARER for s in c.subjects)
            )
            when = concern.occurred_at.date()
            if i % 3 == 0:
                index = self._child_index(concern)
                years = [25, 40, 60, 30, 99][i // 3 % 5]
                code = ReasonCode.AGE_ROLE_MISMATCH
            elif i % 3 == 1:
                index = next(
                    j for j, s in enumerate(concern.subjects) if s.role is SubjectRole.PARENT_CARER
                )
                years = [6, 0, 10, 3, 1][i // 3 % 5]
                code = ReasonCode.AGE_ROLE_MISMATCH
            else:
                index = i % len(concern.subjects)
                years = [121, 130, 150, 125, 200][i // 3 % 5]
                code = ReasonCode.IMPLAUSIBLE_DATE
            born = date(when.year - years, when.month, min(when.day, 28)) - timedelta(days=30)
            self.add(
                "absurd-ages",
                self.signed(self._with_subject(concern, index, date_of_birth=born)),
                code,
            )

    def absurd_sizes(self) -> None:
        """Counts and lengths over their bounds, all within the router's 1 MiB."""
        concern = self.base()
        child = concern.subjects[self._child_index(concern)]
        many = [child.model_copy(update={"subject_ref": f"S{i}"}) for i in range(1, 5001)]
        self.add(
            "absurd-sizes",
            self.signed(self.fresh(concern, subjects=tuple(many))),
            ReasonCode.LIMIT_EXCEEDED,
        )
        self.add(
            "absurd-sizes",
            self.signed(self.fresh(concern, subjects=tuple(many[: LIMITS.subjects + 1]))),
            ReasonCode.LIMIT_EXCEEDED,
        )
        for count in (300_000, 100_000, LIMITS.third_party_protection + 1):
            refs = tuple(f"S{1 + i % 9}" for i in range(count))
            self.add(
                "absurd-sizes",
                self.signed(self.fresh(third_party_protection=refs)),
                ReasonCode.LIMIT_EXCEEDED,
            )
        texts: list[tuple[str, int]] = [
            ("narrative", 900_000),
            ("narrative", LIMITS.narrative_chars + 1),
            ("immediate_actions", LIMITS.statement_chars + 1),
            ("immediate_actions", 500_000),
            ("source_ref", LIMITS.identifier_chars + 1),
        ]
        for name, chars in texts:
            self.add(
                "absurd-sizes",
                self.signed(self.fresh(**{name: self._prose(chars)})),
                ReasonCode.LIMIT_EXCEEDED,
            )
        for name in ("said", "observed"):
            for chars in (LIMITS.statement_chars + 1, 200_000):
                concern = self.base(lambda c: c.voice_of_child is not None)
                assert concern.voice_of_child is not None
                voice = concern.voice_of_child.model_copy(update={name: self._prose(chars)})
                self.add(
                    "absurd-sizes",
                    self.signed(self.fresh(concern, voice_of_child=voice)),
                    ReasonCode.LIMIT_EXCEEDED,
                )
        subject_fields = [
            ("given_name", LIMITS.short_chars + 1),
            ("family_name", 50_000),
            ("nhs_number", LIMITS.identifier_chars + 1),
            ("police_person_id", LIMITS.identifier_chars + 1),
            ("phone", 5_000),
        ]
        for name, chars in subject_fields:
            concern = self.base()
            value = "9" * chars if name in ("nhs_number", "phone") else self._prose(chars)
            self.add(
                "absurd-sizes",
                self.signed(
                    self._with_subject(concern, self._child_index(concern), **{name: value})
                ),
                ReasonCode.LIMIT_EXCEEDED,
            )
        for name, chars in (
            ("line1", LIMITS.short_chars + 1),
            ("postcode", LIMITS.identifier_chars + 1),
        ):
            concern = self.base(lambda c: c.subjects[self._child_index(c)].address is not None)
            index = self._child_index(concern)
            address = concern.subjects[index].address
            assert address is not None
            changed = address.model_copy(update={name: self._prose(chars)})
            self.add(
                "absurd-sizes",
                self.signed(self._with_subject(concern, index, address=changed)),
                ReasonCode.LIMIT_EXCEEDED,
            )
        for name in ("name", "email", "unit"):
            concern = self.base()
            officer = concern.officer.model_copy(update={name: self._prose(LIMITS.short_chars + 1)})
            self.add(
                "absurd-sizes",
                self.signed(self.fresh(concern, officer=officer)),
                ReasonCode.LIMIT_EXCEEDED,
            )
        concern = self.base()
        consent = concern.consent.model_copy(update={"reason": self._prose(20_000)})
        self.add(
            "absurd-sizes",
            self.signed(self.fresh(concern, consent=consent)),
            ReasonCode.LIMIT_EXCEEDED,
        )
        concern = self.base(lambda c: c.incident_location is not None)
        assert concern.incident_location is not None
        location = concern.incident_location.model_copy(update={"description": self._prose(2_000)})
        self.add(
            "absurd-sizes",
            self.signed(self.fresh(concern, incident_location=location)),
            ReasonCode.LIMIT_EXCEEDED,
        )

    def agency_ids(self) -> None:
        """source_agency and subject_ref with whitespace, case and look-alike tricks."""
        agencies = [
            POLICE_ID + " ",
            " " + POLICE_ID,
            POLICE_ID + "\n",
            POLICE_ID + "\t",
            "Hampshire-Constabulary",
            POLICE_ID.upper(),
            POLICE_ID.replace("a", "\u0430", 1),  # Cyrillic a
            POLICE_ID.replace("o", "\u03bf"),  # Greek omicron
            POLICE_ID.replace("-", "\u2011"),  # a non-breaking hyphen
            POLICE_ID.replace("-", "\u200b-"),  # a zero-width space
            POLICE_ID.replace("-", "\u00a0"),
            POLICE_ID.replace("-", "--"),
            POLICE_ID.replace("-", "_"),
            "\uff48ampshire-constabulary",  # fullwidth h
            "",
            POLICE_ID + "\u0301",  # a combining accent
        ]
        for i in range(32):
            self.add(
                "id-not-canonical",
                self.signed(self.fresh(source_agency=agencies[i % len(agencies)])),
                ReasonCode.ID_NOT_CANONICAL,
            )
        refs = ["S 1", "", "S1 ", " S1", "S1\n", "S" * 17, "S1;DROP", "Ş1", "S\u200b1", "-S1"]
        for i in range(20):
            concern = self.base()
            self.add(
                "id-not-canonical",
                self.signed(
                    self._with_subject(concern, i % len(concern.subjects), subject_ref=refs[i % 10])
                ),
                ReasonCode.ID_NOT_CANONICAL,
            )

    def schema_invalid(self) -> None:
        """Decodes and is signed, but is not a concern: the model refuses it."""
        for i in range(30):
            concern = self.base()
            index = self._child_index(concern)
            variant = i % 10
            if variant == 0:  # a concern_id that is not a UUID, signed as such
                bad_id = ["not-a-uuid", "12345", "../../etc/passwd"][i // 10]
                data = self.fresh(concern).to_avro() | {"concern_id": bad_id}
                self.add(
                    "schema-invalid",
                    self.sign_dict(data, key=self.signed(concern).key, record_id=bad_id),
                    # Its id header is not a UUID either: that is caught first.
                    _form_or(Headers.CONCERN_ID, bad_id.encode(), ReasonCode.SCHEMA_INVALID),
                )
                continue
            fresh: ConcernModel
            if variant == 1:
                fresh = self.fresh(concern, narrative=["", "   ", "\n"][i // 10])
            elif variant == 2:
                fresh = self._with_subject(
                    concern, index, nhs_number=["12345", "999 123 456X", "99912345678"][i // 10]
                )
            elif variant == 3:  # nobody at all (the adapter could not even key it)
                empty = self.fresh(concern).to_avro() | {"subjects": []}
                self.add(
                    "schema-invalid",
                    self.sign_dict(
                        empty, key=self.signed(concern).key, record_id=empty["concern_id"]
                    ),
                    ReasonCode.SCHEMA_INVALID,
                )
                continue
            elif variant == 4:  # two subjects share a subject_ref
                subjects = (*concern.subjects, concern.subjects[0])
                fresh = self.fresh(concern, subjects=subjects)
            elif variant == 5:  # third-party protection names nobody
                fresh = self.fresh(concern, third_party_protection=("S99",))
            elif variant == 6:
                fresh = self._with_subject(concern, index, given_name="")
            elif variant == 7:
                consent = concern.consent.model_copy(update={"recorded_by": " "})
                fresh = self.fresh(concern, consent=consent)
            elif variant == 8:
                address = Address.model_construct(
                    line1="1 High Street", town="Ryde", postcode="P", la_code=None, line2=None
                )
                fresh = self._with_subject(concern, index, address=address)
            else:
                officer = concern.officer.model_copy(update={"name": ""})
                fresh = self.fresh(concern, officer=officer)
            self.add("schema-invalid", self.signed(fresh), ReasonCode.SCHEMA_INVALID)

    def minimum_dataset(self) -> None:
        """Valid, plausible and signed, but missing what the router needs to route."""
        for i in range(30):
            concern = self.base()
            index = self._child_index(concern)
            variant = i % 5
            if variant == 0:  # no CHILD at all
                subjects = tuple(
                    s.model_copy(update={"role": SubjectRole.SIBLING})
                    if s.role is SubjectRole.CHILD
                    else s
                    for s in concern.subjects
                )
                fresh = self.fresh(concern, subjects=subjects)
            elif variant == 1:
                fresh = self._with_subject(
                    concern, index, date_of_birth=None, nhs_number=None, police_person_id=None
                )
            elif variant == 2:  # nowhere to route: no address, no usable incident location
                subjects = tuple(
                    s.model_copy(update={"address": None}) if s.role is SubjectRole.CHILD else s
                    for s in concern.subjects
                )
                location = IncidentLocation(description="a car park", postcode=None, la_code=None)
                fresh = self.fresh(concern, subjects=subjects, incident_location=location)
            elif variant == 3:
                officer = concern.officer.model_copy(update={"email": None, "phone": None})
                fresh = self.fresh(concern, officer=officer)
            else:
                officer = concern.officer.model_copy(update={"email": " ", "phone": ""})
                fresh = self.fresh(concern, officer=officer)
            self.add(
                "minimum-dataset-missing", self.signed(fresh), ReasonCode.MINIMUM_DATASET_MISSING
            )

    def unresolvable(self) -> None:
        """Every child and the incident outside HIPS: no partnership to send to."""
        elsewhere = [
            ("M1 1AE", "E08000003"),  # Manchester
            ("LS1 4AP", None),  # Leeds, no LA code
            ("CF10 1EP", "W06000015"),  # Cardiff
            ("BT1 5GS", None),
            ("ZZ99 3VZ", None),
        ]
        for i in range(20):
            concern = self.base()
            postcode, la = elsewhere[i % len(elsewhere)]
            address = Address(
                line1="1 Elsewhere Road", town="Elsewhere", postcode=postcode, la_code=la
            )
            subjects = tuple(
                s.model_copy(
                    update={"address": address, "looked_after": False, "responsible_la": None}
                )
                if s.role is SubjectRole.CHILD
                else s
                for s in concern.subjects
            )
            location = IncidentLocation(description="street", postcode=postcode, la_code=la)
            self.add(
                "address-unresolved",
                self.signed(self.fresh(concern, subjects=subjects, incident_location=location)),
                ReasonCode.ADDRESS_UNRESOLVED,
            )

    def avro_structure(self) -> None:
        """Structural lies inside a signed body: enum and union indices, lengths, counts, dates."""
        for i in range(30):
            concern = self.fresh(self.base(lambda c: len(c.subjects) >= 2))
            record = self.signed(concern)
            _, body = split_wire(record.value)
            variant = i % 6
            if variant == 0:  # concern_type enum index out of range
                other = self.police.prepare(
                    concern.model_copy(update={"concern_type": _other_type(concern)})
                )
                at = _first_difference(body, split_wire(other.value)[1])
                damaged = body[:at] + zigzag(13 + i) + body[_varint_end(body, at) :]
            elif variant == 1:  # the subjects count says a billion
                fewer = self.police.prepare(
                    concern.model_copy(update={"subjects": concern.subjects[:-1]})
                )
                at = _first_difference(body, split_wire(fewer.value)[1])
                damaged = body[:at] + zigzag(10**9) + body[_varint_end(body, at) :]
            elif variant == 2:  # the narrative's length says a terabyte, or less than nothing
                raw = concern.narrative.encode()
                end = body.find(raw)
                at = end - len(zigzag(len(raw)))
                damaged = body[:at] + zigzag([2**40, -5, 2**62][i // 6 % 3]) + body[end:]
            elif variant == 3:  # reported_at beyond any calendar
                later = self.police.prepare(
                    concern.model_copy(
                        update={"reported_at": concern.reported_at + timedelta(milliseconds=1)}
                    )
                )
                at = _first_difference(body, split_wire(later.value)[1])
                damaged = body[:at] + zigzag(10**17) + body[_varint_end(body, at) :]
            elif variant == 4:  # the first subject's date_of_birth union index out of range
                index = 0
                older = self._with_subject(concern, index, date_of_birth=date(1990, 1, 1))
                younger = self._with_subject(concern, index, date_of_birth=date(1990, 1, 2))
                a = split_wire(
                    self.police.prepare(
                        older.model_copy(update={"concern_id": concern.concern_id})
                    ).value
                )[1]
                b = split_wire(
                    self.police.prepare(
                        younger.model_copy(update={"concern_id": concern.concern_id})
                    ).value
                )[1]
                at = _first_difference(a, b) - 1  # the union branch index just before the date
                body = a
                record = self.police.prepare(
                    older.model_copy(update={"concern_id": concern.concern_id})
                )
                damaged = body[:at] + zigzag(7) + body[at + 1 :]
            else:  # a date of birth beyond year 9999
                older = self._with_subject(concern, 0, date_of_birth=date(1990, 1, 1))
                younger = self._with_subject(concern, 0, date_of_birth=date(1990, 1, 2))
                same = {"concern_id": concern.concern_id}
                record = self.police.prepare(older.model_copy(update=same))
                body = split_wire(record.value)[1]
                b = split_wire(self.police.prepare(younger.model_copy(update=same)).value)[1]
                at = _first_difference(body, b)
                damaged = body[:at] + zigzag(10**8) + body[_varint_end(body, at) :]
            self.add("avro-structure", self.resign(record, damaged), ReasonCode.DECODE_ERROR)

    def huge_arrays(self) -> None:
        """Legal but hostile Avro: an array as 150,000 one-item blocks; negative block counts."""
        for count, blocks in (
            (150_000, 150_000),
            (LIMITS.third_party_protection + 5, 45),
            (60_000, 60_000),
        ):
            # No risk assessment: its "S1" subject_ref would match the search below.
            concern = self.fresh(third_party_protection=("S1",), risk_assessments=())
            record = self.signed(concern)
            _, body = split_wire(record.value)
            one = zigzag(1) + zigzag(2) + b"S1" + zigzag(0)  # [ "S1" ] as it is encoded
            at = body.rfind(one)
            assert at > 0
            per_block = count // blocks
            block = zigzag(per_block) + (zigzag(2) + b"S1") * per_block
            damaged = body[:at] + block * blocks + zigzag(0) + body[at + len(one) :]
            self.add("huge-arrays", self.resign(record, damaged), ReasonCode.LIMIT_EXCEEDED)
        for blocks in (41, 100):  # subjects in blocks of one, with negative counts and sizes
            concern = self.base()
            child = concern.subjects[self._child_index(concern)]
            subjects = tuple(
                child.model_copy(update={"subject_ref": f"S{i}"}) for i in range(1, blocks + 1)
            )
            fresh = self.fresh(concern, subjects=subjects)
            record = self.signed(fresh)
            _, body = split_wire(record.value)
            fewer = self.police.prepare(fresh.model_copy(update={"subjects": subjects[:-1]}))
            at = _first_difference(body, split_wire(fewer.value)[1])
            items_start = _varint_end(body, at)
            encoded = [self._encode_subject(s) for s in subjects]
            assert body[items_start : items_start + sum(map(len, encoded))] == b"".join(encoded)
            chunked = b"".join(zigzag(-1) + zigzag(len(e)) + e for e in encoded)
            tail = body[items_start + sum(map(len, encoded)) :]
            assert tail[:1] == b"\x00"
            damaged = body[:at] + chunked + tail
            self.add("huge-arrays", self.resign(record, damaged), ReasonCode.LIMIT_EXCEEDED)

    def risk_invalid(self) -> None:
        """Issue 16: risk assessments the adapter would refuse, signed anyway."""
        for i in range(3):
            concern = self.base(lambda c: not missing_minimum_dataset(c))
            child = concern.subjects[self._child_index(concern)]
            adult = next((s for s in concern.subjects if s.role is not SubjectRole.CHILD), None)
            good = RiskAssessment(
                subject_ref=child.subject_ref,
                grade=RiskGrade.MEDIUM,
                rationale="repeat incidents",
                assessed_by="PC 1",
                assessed_at=concern.reported_at,
            )
            bad: list[tuple[tuple[RiskAssessment, ...], ReasonCode]] = [
                (
                    (good.model_copy(update={"grade": RiskGrade.HIGH, "rationale": r}),),
                    ReasonCode.RISK_RATIONALE_MISSING,
                )
                for r in (None, "", "   \n")[i : i + 1]
            ]
            bad += [
                (
                    (
                        good.model_copy(
                            update={"subject_ref": adult.subject_ref if adult and i else "S99"}
                        ),
                    ),
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                ),
                ((good, good), ReasonCode.RISK_ASSESSMENT_INVALID),
                (
                    (good.model_copy(update={"method": RiskMethod.DASH, "dash_score": None}),),
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                ),
                (
                    (good.model_copy(update={"method": RiskMethod.OTHER_TOOL}),),
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                ),
                (
                    (good.model_copy(update={"dash_score": [28, -1, 2**31 - 1][i]}),),
                    ReasonCode.SCHEMA_INVALID,
                ),
                (
                    (good.model_copy(update={"rationale": "x" * (LIMITS.statement_chars + 1)}),),
                    ReasonCode.LIMIT_EXCEEDED,
                ),
                ((good,) * (LIMITS.subjects + 1), ReasonCode.LIMIT_EXCEEDED),
            ]
            for assessments, code in bad:
                fresh = self.fresh(concern, risk_assessments=assessments)
                self.add("risk-invalid", self.signed(fresh), code)

    def _encode_subject(self, subject: Subject) -> bytes:
        schema = next(
            f["type"]["items"]
            for f in catalogue()[CONCERN][-1].source["fields"]
            if f["name"] == "subjects"
        )
        buffer = io.BytesIO()
        fastavro.schemaless_writer(
            buffer, fastavro.parse_schema(schema), subject.model_dump(mode="python")
        )
        return buffer.getvalue()


def _other_type(concern: ConcernModel) -> ConcernType:
    types = list(ConcernType)
    return types[(types.index(concern.concern_type) + 1) % len(types)]


def _is_recent_date(value: str) -> bool:
    """An ISO date from the last two years could match a timestamp by chance: not a needle."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return False
    return day.year >= datetime.now(UTC).year - 1


def _people(concerns: Sequence[ConcernModel]) -> set[str]:
    people = synthetic_people([c.model_dump(mode="json") for c in concerns])
    found: set[str] = set()
    for kind, values in people.items():
        for value in values:
            if kind == "names" and len(value) < 4:
                continue  # very short names match random bytes by chance
            if kind == "dates_of_birth" and _is_recent_date(value):
                continue
            found.add(value)
    return found


def build_corpus(
    runtime: Runtime, *, seed: int = 11, now: datetime, valid: int = 120, bases: int = 80
) -> Corpus:
    """The hostile corpus for ``runtime``'s keys, and ``valid`` concerns to interleave."""
    # Not random.Random(seed): synthetic_concerns draws its concern ids from that stream.
    rng = random.Random(f"safer-hostile-corpus-{seed}")
    police = runtime.police_adapter()
    good = [ConcernModel.model_validate(d) for d in synthetic_concerns(valid, seed=seed, now=now)]
    base = [
        ConcernModel.model_validate(d) for d in synthetic_concerns(bases, seed=seed + 7919, now=now)
    ]
    builder = _Builder(
        runtime=runtime,
        seed=seed,
        now=now,
        rng=rng,
        police=police,
        police_identity=runtime.keys.signing_identity(police.publisher_id),
        bases=base,
        topic=runtime.settings.topics.inbound("police"),
    )
    good_records = [police.prepare(c) for c in good]
    steps: list[Callable[[], None]] = [
        builder.truncations,
        builder.trailing,
        builder.bit_flips,
        builder.invalid_utf8,
        builder.framing,
        builder.wrong_subject,
        builder.oversize,
        builder.header_abuse,
        builder.key_abuse,
        builder.spoofing,
        lambda: builder.replays(good, good_records),
        builder.absurd_dates,
        builder.absurd_ages,
        builder.absurd_sizes,
        builder.agency_ids,
        builder.schema_invalid,
        builder.minimum_dataset,
        builder.unresolvable,
        builder.avro_structure,
        builder.huge_arrays,
        builder.risk_invalid,
    ]
    for step in steps:
        step()
    personal = _people([*good, *base]) | builder.personal
    return Corpus(
        seed=seed,
        valid=tuple(good_records),
        valid_concerns=tuple(good),
        cases=tuple(builder.cases),
        personal_data=frozenset(personal),
    )
