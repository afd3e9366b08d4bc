"""Property tests of what hostile input meets first (issue 11, point 6): pure, no I/O.

* The decoder (``split_wire``, ``Codec.decode``): for any bytes, and for every
  kind of damage to a real concern, it returns a record or raises a
  ``SaferError`` with a reason code; never another exception. Inputs are
  bounded, so a hang shows as the test's timeout.
* The validators (``limit_problems``, ``plausibility_problems``,
  ``missing_minimum_dataset``, and ``verify_origin``'s header checks): on any
  JSON-like input or header list they never raise anything but a ``SaferError``;
  every problem has a ``ReasonCode``; and no text they produce repeats an input
  value. Every generated string carries a marker character (``SENTINEL``) so
  that an echoed value is found wherever it lands.
* The minimiser (``consent.minimise``): for generated concerns whose free text
  names their people (in the spellings officers use) and every shipped profile,
  no person the recipient may not see (withheld, a role outside the profile, or
  a kind of identifier the profile does not share) is findable in any shared free
  text; the output has only profile fields; and it is deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from broker import HEADER_NAMES, Headers, Keyring, OutRecord, SigningIdentity, signed_record
from broker import verify_origin as verify_origin_
from consent import FREE_TEXT_PATHS, Profile, minimise, missing_minimum_dataset
from schemas import (
    CONCERN,
    LA_CODES,
    Codec,
    ConcernModel,
    ConcernType,
    ConsentState,
    DecodeError,
    EmbeddedRegistry,
    Problem,
    ReasonCode,
    RiskGrade,
    SaferError,
    SubjectRole,
    catalogue,
    content_schema_id,
    limit_problems,
    plausibility_problems,
    split_wire,
)

from .test_consent_properties import POLICY, assert_within_profile

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
EXAMPLE: dict[str, Any] = json.loads(
    (ROOT / "deploy/examples/concern-domestic-abuse.json").read_text(encoding="utf-8")
)
CODEC = Codec(EmbeddedRegistry(None))  # in memory: every schema of the repo, no file
POLICE = SigningIdentity("hampshire-constabulary", Ed25519PrivateKey.from_private_bytes(bytes(32)))
KEYRING = Keyring()
KEYRING.add(POLICE.agency_id, POLICE.public_key)
SIGNED: OutRecord = signed_record(
    CODEC,
    POLICE,
    CONCERN,
    ConcernModel.model_validate(EXAMPLE).to_avro(),
    topic="hips.inbound.police",
    key=b"0" * 32,
    record_id=EXAMPLE["concern_id"],
    id_header=Headers.CONCERN_ID,
)
SCHEMA_IDS = sorted(content_schema_id(v.source) for vs in catalogue().values() for v in vs)
CODES = frozenset(ReasonCode)
#: Every generated string carries this character; no error or problem text may.
SENTINEL = "\u2603"
PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------- the decoder


def _decodes_or_says_why(data: bytes, expect: str | None) -> None:
    try:
        decoded = CODEC.decode(data, expect=expect)
    except SaferError as exc:
        assert exc.code in CODES
        assert exc.code in (ReasonCode.DECODE_ERROR, ReasonCode.UNKNOWN_SCHEMA), exc.code
        assert not exc.retriable
        return
    assert isinstance(decoded.record, dict)
    if expect is not None:
        assert decoded.subject == expect


@pytest.mark.timeout(120)
@PROPERTIES
@given(data=st.binary(max_size=4096))
def test_split_wire_returns_a_frame_or_a_decode_error(data: bytes) -> None:
    try:
        schema_id, body = split_wire(data)
    except DecodeError as exc:
        assert exc.code is ReasonCode.DECODE_ERROR
        assert len(data) < 5 or data[0] != 0
        return
    assert data[0] == 0 and data[1:5] == schema_id.to_bytes(4, "big") and data[5:] == body


@pytest.mark.timeout(120)
@PROPERTIES
@given(
    data=st.one_of(
        st.binary(max_size=4096),
        st.builds(
            lambda sid, body: b"\x00" + sid.to_bytes(4, "big") + body,
            st.sampled_from(SCHEMA_IDS),
            st.binary(max_size=4096),
        ),
    ),
    expect=st.sampled_from([None, CONCERN, "audit_record", "quarantine"]),
)
def test_the_codec_decodes_any_bytes_or_says_why(data: bytes, expect: str | None) -> None:
    _decodes_or_says_why(data, expect)


def _mutate(value: bytes, data: st.DataObject) -> bytes:
    draw = data.draw
    out = bytearray(value)
    for _ in range(draw(st.integers(1, 6))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "repeat", "varint"]))
        if op == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[at:]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif op == "repeat":
            out[at:at] = out[at : at + draw(st.integers(1, 256))] * draw(st.integers(1, 20))
        else:  # a huge or negative Avro length or count (zig-zag varint)
            n = draw(st.sampled_from([2**31, 2**40, 2**62, -1, -(2**40), 10**9]))
            zz = (n << 1) ^ (n >> 63)
            varint = bytearray()
            while zz & ~0x7F:
                varint.append((zz & 0x7F) | 0x80)
                zz >>= 7
            varint.append(zz)
            out[at : at + 1] = varint
    return bytes(out)


@pytest.mark.timeout(180)
@PROPERTIES
@given(data=st.data(), expect=st.sampled_from([None, CONCERN]))
def test_the_codec_survives_any_damage_to_a_real_concern(
    data: st.DataObject, expect: str | None
) -> None:
    damaged = _mutate(SIGNED.value, data)
    _decodes_or_says_why(damaged, expect)


def test_the_decoder_property_sees_real_records() -> None:
    # Guard: the undamaged record decodes, so the mutations start from a real concern.
    assert CODEC.decode(SIGNED.value, expect=CONCERN).record["concern_id"] == EXAMPLE["concern_id"]


# ------------------------------------------------------------------- the validators


def _marked(text: str) -> str:
    return f"{text}{SENTINEL}" if len(text) % 2 else f"{SENTINEL}{text}"


hostile_text = st.text(max_size=40).map(_marked)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | hostile_text
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(hostile_text | st.sampled_from(sorted(EXAMPLE)), children, max_size=6)
    ),
    max_leaves=40,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _paths(inner, (*prefix, i))
    return found


@st.composite
def damaged_concerns(draw: st.DrawFn) -> dict[str, Any]:
    """The example concern as a raw dict, with values anywhere replaced by anything."""
    record: dict[str, Any] = json.loads(json.dumps(EXAMPLE))
    paths = _paths(record)[1:]
    for path in draw(st.lists(st.sampled_from(paths), max_size=8)):
        parent: Any = record
        try:
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = draw(
                json_like
                | st.lists(st.none() | hostile_text, min_size=41, max_size=45)
                | st.text(min_size=1, max_size=8).map(lambda t: _marked(t) * 400)
            )
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement changed the shape
    return record


def _check_problems(problems: Sequence[Problem]) -> None:
    assert isinstance(problems, list)
    for problem in problems:
        assert isinstance(problem, Problem) and problem.code in CODES
        assert SENTINEL not in problem.field + problem.reason + problem.describe()


@pytest.mark.timeout(120)
@PROPERTIES
@given(record=json_like | damaged_concerns())
def test_limit_problems_never_raises_and_never_echoes_a_value(record: Any) -> None:
    if not isinstance(record, dict):
        record = {"narrative": record}
    _check_problems(limit_problems(record))


@st.composite
def wild_concerns(draw: st.DrawFn) -> ConcernModel:
    """Valid models with any dates, roles, references and marked names."""
    edges = [datetime.min, datetime(1899, 12, 31, 23, 59), datetime.max - timedelta(minutes=1)]
    moments = st.datetimes(
        min_value=datetime.min, max_value=datetime.max, timezones=st.just(UTC)
    ) | st.sampled_from([edge.replace(tzinfo=UTC) for edge in edges])
    refs = st.sampled_from(["S1", "S2", "S3", "S99"])
    subjects = []
    for ref in draw(st.lists(refs, min_size=1, max_size=5)):
        subjects.append(
            {
                "subject_ref": ref,
                "role": draw(st.sampled_from(list(SubjectRole))).value,
                "given_name": draw(hostile_text),
                "family_name": draw(hostile_text),
                "date_of_birth": draw(st.none() | st.dates()),
                "nhs_number": draw(st.none() | st.from_regex(r"\A9[0-9]{9}\Z")),
                "police_person_id": draw(st.none() | hostile_text),
                "address": draw(
                    st.none()
                    | st.fixed_dictionaries(
                        {
                            "line1": hostile_text,
                            "town": hostile_text,
                            "postcode": hostile_text,
                            "la_code": st.none() | st.sampled_from(sorted(LA_CODES)),
                        }
                    )
                ),
            }
        )
    data = {
        **EXAMPLE,
        "reported_at": draw(moments),
        "occurred_at": draw(moments),
        "subjects": subjects,
        "third_party_protection": draw(st.lists(refs, max_size=3)),
        "narrative": draw(hostile_text),
        "incident_location": draw(
            st.none()
            | st.fixed_dictionaries(
                {
                    "description": hostile_text,
                    "postcode": st.none() | hostile_text,
                    "la_code": st.none() | st.sampled_from(sorted(LA_CODES)),
                }
            )
        ),
        "officer": {
            "name": draw(hostile_text),
            "email": draw(st.none() | hostile_text),
            "phone": draw(st.none() | hostile_text),
        },
    }
    try:
        return ConcernModel.model_validate(data)
    except ValueError:
        assume(False)
        raise


_MINIMUM_FIELD = re.compile(
    r"\A(subjects\[role=CHILD\]|subjects\[\d+\]\.(date_of_birth_or_identifier"
    r"|address_or_incident_location)|narrative|officer\.name|officer\.email_or_phone)\Z"
)


@pytest.mark.timeout(120)
@PROPERTIES
@given(
    concern=wild_concerns(),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_plausibility_and_minimum_dataset_never_raise_and_never_echo(
    concern: ConcernModel, now: datetime
) -> None:
    problems = plausibility_problems(concern, now)
    _check_problems(problems)
    text = " ".join(p.describe() for p in problems)
    for moment in (concern.reported_at, concern.occurred_at):
        assert moment.isoformat() not in text and moment.date().isoformat() not in text
    for subject in concern.subjects:
        if subject.date_of_birth is not None:
            assert subject.date_of_birth.isoformat() not in text
    missing = missing_minimum_dataset(concern)
    assert all(_MINIMUM_FIELD.match(m) for m in missing), missing


def test_the_extremes_of_the_calendar_are_implausible_not_a_crash() -> None:
    # Found by the hostile corpus: a report at 9999-12-31 23:59 overflowed.
    for moment in (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)):
        concern = ConcernModel.model_validate({**EXAMPLE, "reported_at": moment.isoformat()})
        (problem, *_) = plausibility_problems(concern, NOW)
        assert problem.code is ReasonCode.IMPLAUSIBLE_DATE


header_names = (
    st.sampled_from(sorted(HEADER_NAMES))
    | hostile_text
    | st.sampled_from(["Safer-Concern-Id", "safer-sig ", "", "name", "traceparent"])
)
header_values = (
    st.sampled_from([v for _, v in SIGNED.headers])
    | st.sampled_from([b"Poppy Walker", b"9992048719", b"PO2 8RL", b"27 Albert Road"])
    | st.binary(max_size=200)
    | hostile_text.map(lambda t: t.encode())
    | st.just(b"")
)


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    headers = list(SIGNED.headers)
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(["drop", "repeat", "replace", "insert", "rename"]))
        at = draw(st.integers(0, max(len(headers) - 1, 0)))
        if op == "insert" or not headers:
            headers.insert(at, (draw(header_names), draw(header_values)))
        elif op == "drop":
            del headers[at]
        elif op == "repeat":
            headers.insert(draw(st.integers(0, len(headers))), headers[at])
        elif op == "replace":
            headers[at] = (headers[at][0], draw(header_values))
        else:
            headers[at] = (draw(header_names), headers[at][1])
    return headers


@pytest.mark.timeout(120)
@PROPERTIES
@given(headers=header_lists())
def test_header_checks_never_raise_anything_else_and_never_echo(
    headers: list[tuple[str, bytes]],
) -> None:
    names = [name for name, _ in headers]
    try:
        origin = verify_origin_(KEYRING, SIGNED.value, headers, id_header=Headers.CONCERN_ID)
    except SaferError as exc:
        assert exc.code in CODES
        assert SENTINEL not in str(exc)
        for _, value in headers:  # no header value is echoed (a key id of its form may be)
            if len(value) >= 4 and not re.fullmatch(rb"[0-9a-f]{16}", value):
                for text in (value.decode("utf-8", "replace"), value.decode("ascii", "replace")):
                    assert text not in exc.message
        if any(name not in HEADER_NAMES for name in names):
            assert exc.code is ReasonCode.PID_IN_METADATA
        elif len(set(names)) != len(names) or not all(v for _, v in headers):
            assert exc.code is ReasonCode.HEADER_INVALID
        return
    # Accepted: only allowed names, each once, none empty or oversized, and what the
    # signature covers untouched.
    assert set(names) <= HEADER_NAMES and len(set(names)) == len(names)
    assert all(0 < len(value) <= 128 for _, value in headers)
    original = dict(SIGNED.headers)
    given_ = dict(headers)
    for name in (Headers.KEY_ID, Headers.SIGNATURE, Headers.CONCERN_ID):
        assert given_[name] == original[name]
    assert origin.agency_id == POLICE.agency_id


# ------------------------------------------------------------------- the minimiser

GIVEN = ["Dorian", "Maisie", "Tobias", "Keira", "Ezra", "Ottilie", "Rufus", "Imogen"]
FAMILY = ["Quennell", "Thornbury", "Ashdown", "Pemberton", "Okafor", "Lindqvist"]
NHS = ["9434765919", "9990117285", "9993185620", "9992048719", "9876544321"]
POLICE_IDS = ["HC-P-3047719", "HC-P-1186402", "HC-P-5550173"]
PHONES = ["07700 900123", "07700 900461", "01632 960777"]
LINES = ["3 Tamarisk Walk", "27 Albert Road", "Flat 6 Kingfisher Court"]
POSTCODES = ["PO4 8QT", "PO2 8RL", "SO16 4QQ", "PO30 1AA"]
FILLER = ["officers", "attended", "and", "spoke", "with", "at", "the", "home", "said", "that"]
SEPARATORS = [" ", ", ", ". ", " (", ") ", "'s ", "\n", "; ", ": ", " - "]


def _spellings(kind: str, value: str) -> list[str]:
    """How officers write a value in prose: other case, other spacing, other punctuation."""
    if kind in ("nhs_number", "phone", "postcode", "police_person_id"):
        compact = "".join(ch for ch in value if ch.isalnum())
        spellings = [value, compact, value.lower()]
        if kind == "nhs_number":
            spellings += [
                f"{compact[:3]} {compact[3:6]} {compact[6:]}",
                "-".join((compact[:3], compact[3:6], compact[6:])),
            ]
        return spellings
    words = value.split()
    return [value, value.upper(), value.lower(), "  ".join(words), "\n".join(words)]


_KINDS_OF: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "full_name": lambda s: f"{s['given_name']} {s['family_name']}",
    "family_name": lambda s: s["family_name"],
    "given_name": lambda s: s["given_name"],
    "nhs_number": lambda s: s["nhs_number"],
    "police_person_id": lambda s: s["police_person_id"],
    "phone": lambda s: s["phone"],
    "address_line": lambda s: s["address"]["line1"] if s["address"] else None,
    "postcode": lambda s: s["address"]["postcode"] if s["address"] else None,
}


@st.composite
def concerns_naming_people(draw: st.DrawFn) -> ConcernModel:
    roles = draw(st.lists(st.sampled_from(list(SubjectRole)), min_size=1, max_size=5))
    roles[0] = SubjectRole.CHILD
    subjects = []
    for i, role in enumerate(roles):
        home = draw(st.none() | st.tuples(st.sampled_from(LINES), st.sampled_from(POSTCODES)))
        subjects.append(
            {
                "subject_ref": f"S{i + 1}",
                "role": role.value,
                "given_name": draw(st.sampled_from(GIVEN)),
                "family_name": draw(st.sampled_from(FAMILY)),
                "date_of_birth": "2015-05-05" if role is SubjectRole.CHILD else "1985-05-05",
                "nhs_number": draw(st.none() | st.sampled_from(NHS)),
                "police_person_id": draw(st.none() | st.sampled_from(POLICE_IDS)),
                "phone": draw(st.none() | st.sampled_from(PHONES)),
                "address": None
                if home is None
                else {"line1": home[0], "town": "Portsmouth", "postcode": home[1], "la_code": None},
            }
        )

    def prose() -> str:
        tokens: list[str] = []
        for _ in range(draw(st.integers(1, 8))):
            if draw(st.booleans()):
                subject = draw(st.sampled_from(subjects))
                kind = draw(st.sampled_from(sorted(_KINDS_OF)))
                value = _KINDS_OF[kind](subject)
                if value:
                    tokens.append(draw(st.sampled_from(_spellings(kind, value))))
                    continue
            tokens.append(draw(st.sampled_from(FILLER)))
        text = tokens[0]
        for token in tokens[1:]:
            text += draw(st.sampled_from(SEPARATORS)) + token
        return text

    refs = [s["subject_ref"] for s in subjects]
    data = {
        **EXAMPLE,
        "concern_type": draw(st.sampled_from(list(ConcernType))).value,
        "risk_grade": draw(st.sampled_from(list(RiskGrade))).value,
        "subjects": subjects,
        "narrative": prose(),
        "immediate_actions": prose(),
        "voice_of_child": {"said": prose(), "observed": prose()},
        "incident_location": {"description": prose(), "postcode": "PO2 8RL", "la_code": None},
        "consent": {**EXAMPLE["consent"], "reason": prose(), "state": ConsentState.GIVEN.value},
        "third_party_protection": draw(st.lists(st.sampled_from(refs), max_size=2, unique=True)),
    }
    return ConcernModel.model_validate(data)


_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "full_name": ("subjects.given_name", "subjects.family_name"),
    "family_name": ("subjects.family_name",),
    "given_name": ("subjects.given_name",),
    "nhs_number": ("subjects.nhs_number",),
    "police_person_id": ("subjects.police_person_id",),
    "phone": ("subjects.phone",),
    "address_line": ("subjects.address.line1", "subjects.address"),
    "postcode": ("subjects.address.postcode", "subjects.address"),
}


def _sees(profile: Profile, kind: str) -> bool:
    """The documented rule: a kind of a visible person's text is shared by these fields."""
    fields = set(profile.fields)
    if "subjects" in fields:
        return True
    wanted = _KIND_FIELDS[kind]
    if kind == "full_name":
        return all(f in fields for f in wanted)
    return any(f in fields for f in wanted)


def _normal(kind: str, text: str) -> str:
    if kind in ("nhs_number", "phone", "postcode", "police_person_id"):
        return "".join(ch for ch in text.lower() if ch.isalnum())
    return " ".join(text.lower().split())


def _word(text: str) -> re.Pattern[str]:
    spaced = r"\s+".join(re.escape(w) for w in text.split())
    return re.compile(rf"(?<!\w){spaced}(?!\w)", re.IGNORECASE)


def _shared_free_text(data: dict[str, Any]) -> list[str]:
    texts = []
    for path in FREE_TEXT_PATHS:
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            texts.append(node)
    return texts


@pytest.mark.timeout(300)
@PROPERTIES
@given(
    concern=concerns_naming_people(),
    name=st.sampled_from(sorted(p.name for p in POLICY.profiles)),
    extra=st.lists(st.sampled_from(["S1", "S2", "S3", "S4", "S5"]), max_size=2),
)
def test_minimise_hides_everyone_a_recipient_may_not_see_from_free_text(
    concern: ConcernModel, name: str, extra: list[str]
) -> None:
    profile = POLICY.profile(name)
    withheld = sorted({*concern.third_party_protection, *extra})
    payload = minimise(concern, profile, withheld)
    assert_within_profile(payload.data, profile)
    assert set(payload.fields) <= {"concern_id", *profile.fields}
    # Deterministic, whatever was minimised in between (the scrubbers are cached).
    again = minimise(concern, profile, list(reversed(withheld)))
    assert again.canonical_bytes() == payload.canonical_bytes()
    assert again.redaction_reasons == payload.redaction_reasons

    roles = {r.value for r in profile.subject_roles}
    shares = any(f == "subjects" or f.startswith("subjects.") for f in profile.fields)
    subjects = [s.model_dump(mode="json") for s in concern.subjects]
    visible = [
        s for s in subjects if s["subject_ref"] not in withheld and s["role"] in roles and shares
    ]
    # What the recipient sees of the people it may see stays: their names as a whole,
    # a given name or an identifier they share with someone hidden (not a lone family name).
    kept = {
        (kind, _normal(kind, value))
        for s in visible
        for kind, get in _KINDS_OF.items()
        if kind != "family_name" and _sees(profile, kind) and (value := get(s))
    }
    text = "\n".join(_shared_free_text(payload.data))
    for kind, normal in kept:
        if kind == "full_name":
            text = _word(normal).sub(" ", text)
    hidden = [
        (kind, value)
        for s in subjects
        for kind, get in _KINDS_OF.items()
        if (value := get(s))
        and (s not in visible or not _sees(profile, kind))
        and (kind, _normal(kind, value)) not in kept
    ]
    for kind, value in hidden:
        for spelling in _spellings(kind, value):
            if kind in ("nhs_number", "phone", "postcode", "police_person_id"):
                compact = re.sub(r"[\W_]+", "", text.lower())
                assert _normal(kind, spelling) not in compact, f"{kind} of a hidden person"
            else:
                assert not _word(spelling).search(text), f"{kind} of a hidden person"
    # Each redaction is recorded by kind and subject, never by value.
    for reason in payload.redaction_reasons:
        for s in subjects:
            for kind, get in _KINDS_OF.items():
                value = get(s)
                assert not value or value.lower() not in reason.lower(), kind


def test_the_minimiser_property_sees_hidden_people_named() -> None:
    # Guard: the strategy really names hidden people in the free text, and they go.
    @settings(max_examples=40, deadline=None)
    @given(concern=concerns_naming_people())
    def count(concern: ConcernModel) -> None:
        profile = POLICY.profile("encompass-notification")  # the child only
        payload = minimise(concern, profile, ())
        found.append(len(payload.redactions))

    found: list[int] = []
    count()
    assert sum(1 for n in found if n) > 10
