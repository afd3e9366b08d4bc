"""consent's canonical JSON: the orjson fast path writes exactly what the
specification (``json.dumps`` sorted, compact, not ASCII-escaped) writes, and
everything the fast path cannot vouch for takes the specification's path."""

from __future__ import annotations

import json
from enum import Enum, StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent._canonical import canonical_json


def _spec(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_same_bytes_as_the_specification(value: Any) -> None:
    assert canonical_json(value) == _spec(value)


def test_every_code_point_in_keys_and_values() -> None:
    text = "".join(chr(c) for c in range(0x10FFFF + 1) if not 0xD800 <= c <= 0xDFFF)
    value = {text: [text], "a": text[:300], chr(0x10FFFF): 1, "\u00e9": 2, "z": 3}
    assert canonical_json(value) == _spec(value)


class _Grade(StrEnum):
    HIGH = "HIGH"


class _Plain(Enum):
    ONE = 1


def test_values_only_json_spells_take_its_path() -> None:
    for value in ({"g": _Grade.HIGH}, {"n": 1e16}, {"n": float("inf")}, [True, 1, 1.0]):
        assert canonical_json(value) == _spec(value)
    for refused in ({"e": _Plain.ONE}, {1: "a"} | {"b": object()}):
        with pytest.raises(TypeError):
            canonical_json(refused)


def test_a_lone_surrogate_raises_what_the_specification_raises() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"text": "a\ud800b"})
