"""Canonical JSON (sorted keys, no whitespace, UTF-8): the bytes decision-input and
payload hashes are taken over.

The specification is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False).encode("utf-8")``. orjson writes the same bytes for the plain
JSON types (exactly ``dict`` with ``str`` keys, ``list``, ``tuple``, ``str``, ``bool``,
``None`` and 64-bit ``int``; a test checks every code point) about ten times faster,
so it is used only for a value made of nothing else. Anything else (a float, whose
spelling differs; an enum, a subclass, a datetime, which orjson would write where
``json`` refuses) and anything orjson refuses (a lone surrogate) takes the
``json`` path, which gives the specified bytes or raises the specified error.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import orjson

from schemas import ConcernModel

__all__ = ["canonical_json", "concern_document"]

_SPEC = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_INT64 = (-(2**63), 2**64 - 1)


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only the plain JSON types (exact types, no subclass)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    if kind is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    return False


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes (see the module docstring)."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # e.g. a lone surrogate: the specification raises its own error
    return _SPEC.encode(value).encode("utf-8")


#: The JSON form of the last few concerns. The router hashes a concern (its decision
#: inputs) and minimises it for each recipient: one ``model_dump`` serves all. Keyed
#: by identity (a ConcernModel is frozen), holding the concern so its id is not reused
#: while cached.
_DOCUMENTS: OrderedDict[int, tuple[ConcernModel, dict[str, Any]]] = OrderedDict()
_DOCUMENTS_SIZE = 8


def concern_document(concern: ConcernModel) -> dict[str, Any]:
    """``concern.model_dump(mode="json")``, shared: callers must never change it."""
    hit = _DOCUMENTS.get(id(concern))
    if hit is not None and hit[0] is concern:
        return hit[1]
    document = concern.model_dump(mode="json")
    _DOCUMENTS[id(concern)] = (concern, document)
    # Oldest first out; another thread may be trimming too (the web app's replays).
    while len(_DOCUMENTS) > _DOCUMENTS_SIZE:
        try:
            _DOCUMENTS.popitem(last=False)
        except KeyError:
            break
    return document
