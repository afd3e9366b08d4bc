"""Minimisation: project a concern onto a profile ("share only what the recipient needs").

``minimise`` keeps exactly the profile's fields of the concern's JSON form,
drops subjects whose role the profile does not cover, and replaces withheld
subjects (third-party protection) by a stub that says only that someone was
withheld. Free-text fields that survive are scrubbed, per recipient, of the
names and identifiers of everyone that recipient may not see, so prose cannot
undo the projection (issue 11: an alleged perpetrator's name once reached a
school through the child's own words).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import ConcernModel, Subject

from ._canonical import canonical_json, concern_document
from ._policy import Profile

__all__ = [
    "FREE_TEXT_PATHS",
    "REDACTED",
    "WITHHELD_REASON",
    "MinimisedPayload",
    "Redaction",
    "minimise",
]

#: The marker a withheld subject's stub carries.
WITHHELD_REASON = "third-party protection"
#: What replaces a withheld subject's name or identifier in free text.
REDACTED = "[withheld]"
#: Free-text fields (officer-written prose) that are scrubbed per recipient.
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
    #: What was cut out of the shared free text, and why (no values).
    redactions: tuple[Redaction, ...] = ()

    @property
    def redaction_reasons(self) -> tuple[str, ...]:
        """One line per redacted person, for the decision's recorded reasons."""
        return tuple(r.describe() for r in self.redactions)

    def canonical_bytes(self) -> bytes:
        """Sorted-key, compact JSON in UTF-8."""
        return canonical_json(self.data)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of ``canonical_bytes()``."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


#: The path a profile must name for a recipient to see a person's ethnicity.
ETHNICITY_PATH = "subjects.ethnicity"


@functools.lru_cache(maxsize=64)
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


#: What each kind of identifying text is called in a redaction reason (never the value).
_KIND_TEXT = {
    "full_name": "full name",
    "family_name": "family name",
    "given_name": "given name",
    "nhs_number": "NHS number",
    "police_person_id": "police person id",
    "phone": "phone number",
    "address_line": "address line",
    "postcode": "postcode",
}
#: Which profile path lets a recipient see each kind of a person's identifying text.
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "full_name": ("subjects.given_name", "subjects.family_name"),
    "family_name": ("subjects.family_name",),
    "given_name": ("subjects.given_name",),
    "nhs_number": ("subjects.nhs_number",),
    "police_person_id": ("subjects.police_person_id",),
    "phone": ("subjects.phone",),
    "address_line": ("subjects.address.line1", "subjects.address.line2"),
    "postcode": ("subjects.address.postcode",),
}
_LOOSE_IDENTIFIERS = frozenset({"nhs_number", "police_person_id", "phone", "postcode"})


@dataclass(frozen=True)
class Redaction:
    """Identifying text of one person removed from the free text one recipient sees.

    It names the person only by ``subject_ref`` and role, and the text only by its
    kind ("family name", "NHS number"): a redaction record never holds a value.
    """

    subject_ref: str
    role: str
    why: str
    kinds: tuple[str, ...]
    paths: tuple[str, ...]
    count: int

    def describe(self) -> str:
        kinds = ", ".join(_KIND_TEXT[k] for k in self.kinds)
        return (
            f"free text: {self.count} mention(s) of {self.role} subject {self.subject_ref} "
            f"({self.why}) redacted from {', '.join(self.paths)}: {kinds}"
        )


def _sees(profile_fields: frozenset[str], kind: str) -> bool:
    """Whether a visible subject's ``kind`` of text is shared by the profile."""
    if "subjects" in profile_fields:
        return True
    wanted = _KIND_FIELDS[kind]
    if kind in ("address_line", "postcode") and "subjects.address" in profile_fields:
        return True
    # A full name is visible only when both of its parts are.
    if kind == "full_name":
        return all(f in profile_fields for f in wanted)
    return any(f in profile_fields for f in wanted)


def _texts(subject: Subject) -> list[tuple[str, str]]:
    """(kind, text) of every piece of identifying text a subject has."""
    found = [
        ("full_name", f"{subject.given_name} {subject.family_name}"),
        ("family_name", subject.family_name),
        ("given_name", subject.given_name),
    ]
    for kind, value in (
        ("nhs_number", subject.nhs_number),
        ("police_person_id", subject.police_person_id),
        ("phone", subject.phone),
    ):
        if value:
            found.append((kind, value))
    if subject.address is not None:
        found.append(("address_line", subject.address.line1))
        if subject.address.line2:
            found.append(("address_line", subject.address.line2))
        found.append(("postcode", subject.address.postcode))
    return [(kind, text) for kind, text in found if len(text.strip()) >= 2]


#: Word tokens of free text and of names. Compiled once: minimisation compiles nothing
#: per concern (compiling per-concern patterns was most of the router's CPU).
_WORD = re.compile(r"\w+")
#: What may separate the parts of an identifier as officers write it: "943 476 5919",
#: "HC-P-3047719", "07700.900123".
_LOOSE_GAP = frozenset(" \t\r\n-./")


@functools.lru_cache(maxsize=256)
def _tokens(text: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, casefolded word) of every word in ``text`` (memoised: one concern's
    free text is scanned for several recipients)."""
    return tuple((m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(text))


def _gap_key(gap: str) -> str:
    """What must match between two words of a name: punctuation, not spacing."""
    return "".join(gap.split())


@dataclass(frozen=True)
class _Needle:
    """Text to find: a name (words and the punctuation between them) or an identifier
    (its letters and digits, however spaced). ``owner`` None: keep it as written."""

    kind: str
    owner: int | None
    words: tuple[str, ...] = ()
    gaps: tuple[str, ...] = ()
    compact: str = ""

    @property
    def size(self) -> int:
        return len(self.compact) if self.compact else sum(map(len, self.words))


def _needle(kind: str, text: str, owner: int | None) -> _Needle | None:
    if kind in _LOOSE_IDENTIFIERS:
        compact = "".join(filter(str.isalnum, text.casefold()))  # no generator frame per char
        return _Needle(kind, owner, compact=compact) if len(compact) >= 2 else None
    spans = list(_WORD.finditer(text))
    if not spans:
        return None
    words = tuple(m.group().casefold() for m in spans)
    gaps = tuple(_gap_key(text[x.end() : y.start()]) for x, y in itertools.pairwise(spans))
    return _Needle(kind, owner, words=words, gaps=gaps)


def _match_at(
    text: str, tokens: tuple[tuple[int, int, str], ...], i: int, needle: _Needle
) -> int | None:
    """The end (exclusive) of ``needle`` matched from token ``i``, or None."""
    if needle.compact:
        built = ""
        j = i
        while j < len(tokens):
            if j > i and any(ch not in _LOOSE_GAP for ch in text[tokens[j - 1][1] : tokens[j][0]]):
                return None
            built += tokens[j][2]
            if built == needle.compact:
                return tokens[j][1]
            if not needle.compact.startswith(built):
                return None
            j += 1
        return None
    if i + len(needle.words) > len(tokens):
        return None
    for k, word in enumerate(needle.words):
        if tokens[i + k][2] != word:
            return None
        if k and _gap_key(text[tokens[i + k - 1][1] : tokens[i + k][0]]) != needle.gaps[k - 1]:
            return None
    return tokens[i + len(needle.words) - 1][1]


def _redact(
    text: str, by_first: dict[str, list[_Needle]], counts: dict[tuple[int, str], int]
) -> str:
    """``text`` with every owned needle replaced by ``[withheld]``; the longest match wins
    at each position, and a kept needle (a visible person's full name) is left as written."""
    tokens = _tokens(text)
    out: list[str] = []
    last = 0
    i = 0
    while i < len(tokens):
        start, _, word = tokens[i]
        best: tuple[int, _Needle] | None = None
        for needle in by_first.get(word[:1], ()):
            end = _match_at(text, tokens, i, needle)
            if end is not None and (best is None or end > best[0]):
                best = (end, needle)
        if best is None:
            i += 1
            continue
        end, needle = best
        if needle.owner is not None:
            out.append(text[last:start])
            out.append(REDACTED)
            last = end
            key = (needle.owner, needle.kind)
            counts[key] = counts.get(key, 0) + 1
        while i < len(tokens) and tokens[i][0] < end:
            i += 1
    out.append(text[last:])
    return "".join(out)


@dataclass(frozen=True)
class _Hidden:
    position: int  # the subject's index in ``concern.subjects`` (owns its needles)
    subject: Subject
    why: str
    kinds: frozenset[str]


def _normal(kind: str, text: str) -> str:
    """How two spellings of the same text compare (case, spacing, punctuation)."""
    if kind in _LOOSE_IDENTIFIERS:
        return "".join(filter(str.isalnum, text.lower()))
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class _Person:
    """One subject's identifying texts and their needles, worked out once per concern."""

    texts: tuple[tuple[str, str, str], ...]  # (kind, text as written, normalised)
    needles: tuple[_Needle | None, ...]  # aligned with texts, owned by the subject's index


@dataclass(frozen=True)
class _Prepared:
    """What minimisation needs of a concern whatever the recipient (computed once)."""

    doc: dict[str, Any]  # the concern's JSON form; never mutated
    people: tuple[_Person, ...]


#: The last few concerns prepared. A concern is minimised for each of its recipients in
#: turn, so one concern's work is reused several times; keyed by identity, and the
#: concern itself is kept so its id cannot be reused while cached.
_PREPARED: OrderedDict[int, tuple[ConcernModel, _Prepared]] = OrderedDict()
_PREPARED_SIZE = 8


def _prepare(concern: ConcernModel) -> _Prepared:
    hit = _PREPARED.get(id(concern))
    if hit is not None and hit[0] is concern:
        _PREPARED.move_to_end(id(concern))
        return hit[1]
    people = []
    for position, subject in enumerate(concern.subjects):
        texts = tuple((kind, text, _normal(kind, text)) for kind, text in _texts(subject))
        people.append(
            _Person(texts, tuple(_needle(kind, text, position) for kind, text, _ in texts))
        )
    prepared = _Prepared(concern_document(concern), tuple(people))
    _PREPARED[id(concern)] = (concern, prepared)
    while len(_PREPARED) > _PREPARED_SIZE:
        _PREPARED.popitem(last=False)
    return prepared


@functools.lru_cache(maxsize=1024)
def _kept_needle(normal_full_name: str) -> _Needle | None:
    return _needle("full_name", normal_full_name, None)


def _hidden_texts(
    concern: ConcernModel, prepared: _Prepared, profile: Profile, withheld: set[str]
) -> tuple[list[_Hidden], set[tuple[str, str]]]:
    """Who must not be findable in this recipient's free text, and what it sees anyway.

    Returns the hidden people with the kinds of their text to hide, and the
    (kind, normalised text) pairs the recipient sees of the people it may see.
    Those stay: a visible full name is kept whole (a hidden person's family name
    is not cut out of a visible child's name), a given name is hidden alone only
    where unambiguous (no visible person has it too), and an identifier a visible
    person shares (the home address of a child and a protected parent) is the
    visible person's too. A lone family name is always hidden (issue 11).
    """
    roles = {role.value for role in profile.subject_roles}
    fields = frozenset(profile.fields)
    shares_subjects = "subjects" in fields or any(f.startswith("subjects.") for f in fields)
    hidden: list[_Hidden] = []
    kept: set[tuple[str, str]] = set()
    for position, (subject, person) in enumerate(
        zip(concern.subjects, prepared.people, strict=True)
    ):
        kinds_all = frozenset(kind for kind, _, _ in person.texts)
        if subject.subject_ref in withheld:
            hidden.append(
                _Hidden(position, subject, "withheld for third-party protection", kinds_all)
            )
            continue
        if subject.role.value not in roles or not shares_subjects:
            why = f"profile {profile.name} leaves this person out"
            hidden.append(_Hidden(position, subject, why, kinds_all))
            continue
        unseen = frozenset(kind for kind in kinds_all if not _sees(fields, kind))
        if unseen:
            why = f"profile {profile.name} does not share it"
            hidden.append(_Hidden(position, subject, why, unseen))
        kept.update(
            (kind, normal)
            for kind, _, normal in person.texts
            if kind not in unseen and kind != "family_name"
        )
    return hidden, kept


def _own_copy(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The dict holding ``path``'s leaf, copied along the way: the projection may share
    dicts with the cached concern document, which scrubbing must never change."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            return None
        child = dict(child)
        node[part] = child
        node = child
    return node


def _scrub(
    data: dict[str, Any],
    concern: ConcernModel,
    prepared: _Prepared,
    profile: Profile,
    withheld: set[str],
) -> tuple[Redaction, ...]:
    """Redact, from every shared free-text field, the identifying text of every person
    (or part of a person) this recipient's profile leaves out; report what was redacted."""
    texts: list[tuple[tuple[str, ...], str]] = []
    for path in FREE_TEXT_PATHS:
        parent: Any = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), str):
            texts.append((path, parent[path[-1]]))
    # Issue 16: each shared risk rationale is free text too (a list, so copied whole).
    assessments = data.get("risk_assessments")
    if isinstance(assessments, list) and any(
        isinstance(a, dict) and isinstance(a.get("rationale"), str) for a in assessments
    ):
        copied = [dict(a) for a in assessments]
        data["risk_assessments"] = copied
        for index, item in enumerate(copied):
            if isinstance(item.get("rationale"), str):
                texts.append((("risk_assessments", str(index), "rationale"), item["rationale"]))
    if not texts:
        return ()
    hidden, kept = _hidden_texts(concern, prepared, profile, withheld)
    if not hidden:
        return ()
    needles: list[_Needle] = []
    for kind, normal in sorted(kept):
        if kind == "full_name":
            kept_name = _kept_needle(normal)
            if kept_name is not None:
                needles.append(kept_name)
    seen: set[tuple[str, str]] = set()
    for person in hidden:
        prepared_person = prepared.people[person.position]
        for (kind, _, normal), needle in zip(
            prepared_person.texts, prepared_person.needles, strict=True
        ):
            if kind not in person.kinds or (kind, normal) in kept or (kind, normal) in seen:
                continue
            seen.add((kind, normal))
            if needle is not None:
                needles.append(needle)
    if all(n.owner is None for n in needles):
        return ()
    by_first: dict[str, list[_Needle]] = {}
    for needle in needles:
        first = needle.compact[:1] if needle.compact else needle.words[0][:1]
        by_first.setdefault(first, []).append(needle)
    counts: dict[tuple[int, str], int] = {}
    where: dict[int, list[str]] = {}
    for path, text in texts:
        before = dict(counts)
        scrubbed = _redact(text, by_first, counts)
        if scrubbed == text:
            continue
        if path[0] == "risk_assessments":
            data["risk_assessments"][int(path[1])]["rationale"] = scrubbed
            dotted_path: tuple[str, ...] = ("risk_assessments", "rationale")
        else:
            dotted_path = path
            parent = _own_copy(data, path)
            if parent is not None:
                parent[path[-1]] = scrubbed
        for owner, _ in {k for k, v in counts.items() if before.get(k, 0) != v}:
            paths = where.setdefault(owner, [])
            dotted = ".".join(dotted_path)
            if dotted not in paths:
                paths.append(dotted)
    by_position = {person.position: person for person in hidden}
    return tuple(
        Redaction(
            subject_ref=by_position[position].subject.subject_ref,
            role=by_position[position].subject.role.value,
            why=by_position[position].why,
            kinds=tuple(k for k in _KIND_TEXT if (position, k) in counts),
            paths=tuple(where[position]),
            count=sum(v for (o, _), v in counts.items() if o == position),
        )
        for position in sorted({owner for owner, _ in counts})
    )


def _risk_view(
    doc: dict[str, Any],
    tree: _Tree,
    profile: Profile,
    withheld: set[str],
    present: set[str],
) -> list[dict[str, Any]]:
    """The risk assessments this recipient sees (issue 16; docs/RISK.md).

    Only assessments of children the recipient sees at all (a role the profile
    covers, not withheld); only the profile's paths of each; and only the
    profile's ``risk_factors`` (the count of missing episodes goes with its
    factor). An assessment left with nothing but its subject_ref is dropped.
    """
    roles = {role.value for role in profile.subject_roles}
    role_of = {s["subject_ref"]: s["role"] for s in doc["subjects"]}
    allowed = None if profile.risk_factors is None else {f.value for f in profile.risk_factors}
    out: list[dict[str, Any]] = []
    for assessment in doc.get("risk_assessments") or ():
        ref = assessment["subject_ref"]
        if ref in withheld or role_of.get(ref) not in roles:
            continue
        if allowed is not None:
            assessment = dict(assessment)
            assessment["factors"] = [f for f in assessment["factors"] if f in allowed]
            if "MISSING_EPISODES" not in allowed:
                assessment["missing_episodes"] = None
            if not assessment["factors"]:
                assessment["factors"] = None
        seen: set[str] = set()
        kept = _project(assessment, tree, "risk_assessments", seen)
        if kept is None or set(kept) <= {"subject_ref"}:
            continue
        present.update(seen)
        out.append(kept)
    return out


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
    * Kept free text (narrative, voice of the child, immediate actions, the
      incident description, the consent reason) is scrubbed, for *this*
      recipient, of the identifying text of every person it may not see:
      withheld subjects, subjects whose role the profile leaves out, and the
      parts of a visible subject that the profile does not share (a school sees
      the child's name but not the NHS number). Full names, family names alone,
      given names alone (unless a visible person has the same one), NHS
      numbers, police person ids, phone numbers, address lines and postcodes,
      each as written with any spacing or case, become ``[withheld]``.
      ``redactions`` says who and what kind, never the value.
    """
    withheld = set(withheld_subject_refs)
    prepared = _prepare(concern)
    doc = prepared.doc
    tree = _tree(profile.fields)
    present: set[str] = set()
    data: dict[str, Any] = {}
    for key, sub in tree.items():
        if key in ("subjects", "risk_assessments"):
            continue
        kept = _project(doc.get(key), sub, key, present)
        if kept is not None:
            data[key] = kept

    if "risk_assessments" in tree:
        assessments = _risk_view(doc, tree["risk_assessments"], profile, withheld, present)
        if assessments:
            data["risk_assessments"] = assessments

    if "subjects" in tree:
        roles = {role.value for role in profile.subject_roles}
        subjects: list[dict[str, Any]] = []
        # Ethnicity (concern v4) is special category data kept for aggregate equality
        # monitoring: it reaches a recipient only if the profile names
        # subjects.ethnicity itself, never through a bare "subjects" (docs/EQUALITY.md).
        ethnicity_listed = ETHNICITY_PATH in profile.fields
        for subject in doc["subjects"]:
            if not ethnicity_listed:
                subject = {k: v for k, v in subject.items() if k != "ethnicity"}
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

    redactions = _scrub(data, concern, prepared, profile, withheld)
    fields = tuple(dict.fromkeys(p for p in ("concern_id", *profile.fields) if p in present))
    return MinimisedPayload(data=data, fields=fields, redactions=redactions)
