"""Minimisation: project a concern onto a profile ("share only what the recipient needs").

``minimise`` keeps exactly the profile's fields of the concern's JSON form,
drops subjects whose role the profile does not cover, and replaces withheld
subjects (third-party protection) by a stub that says only that someone was
withheld. Free-text fields that survive are scrubbed of the withheld
subjects' names, identifiers and address, so a narrative cannot undo the
stub.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from schemas import ConcernModel, Subject

from ._policy import Profile

__all__ = ["FREE_TEXT_PATHS", "REDACTED", "WITHHELD_REASON", "MinimisedPayload", "minimise"]

#: The marker a withheld subject's stub carries.
WITHHELD_REASON = "third-party protection"
#: What replaces a withheld subject's name or identifier in free text.
REDACTED = "[withheld]"
#: Free-text fields (officer-written prose) that are scrubbed of withheld subjects.
FREE_TEXT_PATHS: tuple[tuple[str, ...], ...] = (
    ("narrative",),
    ("immediate_actions",),
    ("voice_of_child", "said"),
    ("voice_of_child", "observed"),
    ("incident_location", "description"),
    ("consent", "reason"),
)

_Tree = dict[str, "_Tree"]


@dataclass(frozen=True)
class MinimisedPayload:
    """The minimised, JSON-ready content of one disclosure.

    ``data`` is the projection (dates as ISO strings); ``fields`` lists the
    profile paths that actually carried a value. ``canonical_bytes()`` is what
    gets encrypted and ``sha256`` what the audit record binds to.
    """

    data: dict[str, Any]
    fields: tuple[str, ...]

    def canonical_bytes(self) -> bytes:
        """Sorted-key, compact JSON in UTF-8."""
        return json.dumps(
            self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of ``canonical_bytes()``."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


@lru_cache(maxsize=64)
def _tree(fields: tuple[str, ...]) -> _Tree:
    root: _Tree = {}
    for path in ("concern_id", *fields):
        node = root
        for part in path.split("."):
            node = node.setdefault(part, {})
    return root


def _project(value: Any, tree: _Tree, path: str, present: set[str]) -> Any:
    """Keep only ``tree``'s paths of ``value``; None where nothing is left."""
    if value is None:
        return None
    if not tree:
        present.add(path)
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in tree.items():
            kept = _project(value.get(key), sub, f"{path}.{key}", present)
            if kept is not None:
                out[key] = kept
        return out or None
    if isinstance(value, list):
        items = [_project(item, tree, path, present) for item in value]
        kept_items = [i for i in items if i is not None]
        return kept_items or None
    return None  # a scalar where the profile expects structure: nothing to keep


@lru_cache(maxsize=1024)
def _needles(subject: Subject) -> list[re.Pattern[str]]:
    """Patterns that find a withheld subject in prose.

    Memoised: one concern is minimised for several recipients, and compiling
    these patterns is most of minimisation's cost. Subjects are frozen and
    hashable, so the cache cannot return another person's patterns.
    """
    words: list[str] = [subject.given_name, subject.family_name]
    words.insert(0, f"{subject.given_name} {subject.family_name}")
    patterns = [
        re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE)
        for w in words
        if len(w.strip()) >= 2
    ]
    digits = [subject.nhs_number, subject.police_person_id]
    if subject.address is not None:
        digits.append(subject.address.postcode)
        patterns.append(
            re.compile(rf"(?<!\w){re.escape(subject.address.line1)}(?!\w)", re.IGNORECASE)
        )
    for ident in digits:
        if ident and len(ident.strip()) >= 2:
            compact = "".join(ident.split())
            loose = r"\s*".join(re.escape(ch) for ch in compact)
            patterns.append(re.compile(rf"(?<!\w){loose}(?!\w)", re.IGNORECASE))
    return patterns


def _scrub(data: dict[str, Any], withheld: list[Subject]) -> None:
    patterns = [p for s in withheld for p in _needles(s)]
    for path in FREE_TEXT_PATHS:
        parent: Any = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        text = parent.get(path[-1])
        if isinstance(text, str):
            for pattern in patterns:
                text = pattern.sub(REDACTED, text)
            parent[path[-1]] = text


def minimise(
    concern: ConcernModel, profile: Profile, withheld_subject_refs: Iterable[str]
) -> MinimisedPayload:
    """Project ``concern`` onto ``profile``, withholding ``withheld_subject_refs``.

    * Only the profile's dotted paths are kept (a path through a list applies
      to every item); ``concern_id`` is always kept. Absent or null values are
      left out, and ``fields`` lists only paths that carried a value.
    * Subjects whose role is not in ``profile.subject_roles`` are left out.
    * A withheld subject (whose role is covered) becomes
      ``{"subject_ref", "role", "withheld": "third-party protection"}``.
    * Kept free text (narrative, voice of the child, ...) has every withheld
      subject's names, identifiers, postcode and first address line replaced
      by ``[withheld]``.
    """
    withheld = set(withheld_subject_refs)
    doc = concern.model_dump(mode="json")
    tree = _tree(profile.fields)
    present: set[str] = set()
    data: dict[str, Any] = {}
    for key, sub in tree.items():
        if key == "subjects":
            continue
        kept = _project(doc.get(key), sub, key, present)
        if kept is not None:
            data[key] = kept

    if "subjects" in tree:
        roles = {role.value for role in profile.subject_roles}
        subjects: list[dict[str, Any]] = []
        for subject in doc["subjects"]:
            if subject["role"] not in roles:
                continue
            if subject["subject_ref"] in withheld:
                subjects.append(
                    {
                        "subject_ref": subject["subject_ref"],
                        "role": subject["role"],
                        "withheld": WITHHELD_REASON,
                    }
                )
                present.update(("subjects", "subjects.subject_ref", "subjects.role"))
                continue
            kept = _project(subject, tree["subjects"], "subjects", present)
            if kept is not None:
                subjects.append(kept)
        if subjects:
            data["subjects"] = subjects

    hidden = [s for s in concern.subjects if s.subject_ref in withheld]
    if hidden:
        _scrub(data, hidden)
    fields = tuple(dict.fromkeys(p for p in ("concern_id", *profile.fields) if p in present))
    return MinimisedPayload(data=data, fields=fields)
