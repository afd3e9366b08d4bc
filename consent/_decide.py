"""``decide()``: may this concern go to this recipient, what of it, and why?

An ordered list of rules over the data-sharing agreements (``deploy/policy/``).
Each rule is a separate function below so that one stage can change without
touching the others.

The golden rules (the 2024 information-sharing advice, DESIGN §9) and where
each is honoured:

* *Protecting a child takes priority over privacy*: rule 4 shares despite a
  refusal or withdrawal when the agreement allows it and a risk of significant
  harm is recorded (grade MEDIUM or HIGH); a refusal that cannot be overridden
  still reaches the front door as a referral, for a professional to weigh.
* *Consent is not needed where a child is at risk*: rule 4 shares when consent
  was not sought (and says which of the four reasons applied), if the
  agreement is ``overridable_at_risk``.
* *Seek advice when unsure*: every REFER goes to the partnership's front door
  for a professional decision (a restricted record; a refusal at low risk).
* *Share only what the recipient needs*: rules 2 and 3 (an agreement must cover
  the parties, the concern type, the age and the grade), and the profile the
  agreement names (applied by ``minimise``).
* *Protect third parties*: rule 5 (withheld subjects become stubs).
* *Record every decision, including not to share*: every path returns a
  ``Decision`` with reasons; nothing here drops a case silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas import (
    AgencyType,
    ConcernModel,
    ConsentState,
    ReasonCode,
    RiskGrade,
    Subject,
    SubjectRole,
    age_on,
)

from ._decision import Decision, DecisionInput, Deny, Permit, Refer, decision_id_for
from ._policy import LAWFUL_BASES, Agreement, PolicySet, Profile
from ._recipient import Recipient
from ._signal import CumulativeFlag
from ._state import Consent

__all__ = ["AT_RISK", "decide", "effective_consent"]

#: Grades at which a risk of significant harm is recorded (PPN RAG amber or red).
AT_RISK = RiskGrade.MEDIUM
#: ``RiskGrade.rank`` as a table (the property builds a dict on every call).
_RANK = {grade: grade.rank for grade in RiskGrade}
_AT_RISK_RANK = _RANK[AT_RISK]


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the rules look at, computed once per call."""

    concern: ConcernModel
    recipient: Recipient
    policy: PolicySet
    consent: Consent
    source: AgencyType
    children: tuple[tuple[Subject, int | None], ...]
    decision_id: str
    summary: DecisionInput


@dataclass(frozen=True, slots=True)
class _Match:
    """An agreement that covers the concern, and the CHILD subjects it covers."""

    agreement: Agreement
    children: tuple[Subject, ...]


def _band(age: int | None) -> str:
    if age is None:
        return "unknown"
    if age < 18:
        return "child"
    return "young_adult" if age <= 24 else "adult"


def effective_consent(
    concern: ConcernModel, consent_state: ConsentState | Consent, now: datetime
) -> Consent:
    """The consent position ``decide()`` uses, at ``now``.

    A ``Consent`` is used as given (the router builds one from the newest of the
    concern's statement and the subject's consent record). A bare state equal to
    the concern's own statement is read with that statement's reason; any other
    bare state has nothing to explain it (an OVERRIDDEN state without a recorded
    justification does not override).
    """
    if isinstance(consent_state, Consent):
        consent = consent_state
    elif consent_state is concern.consent.state:
        consent = Consent.from_statement(concern.consent)
    else:
        consent = Consent(state=ConsentState(consent_state))
    return consent.on(now)


def _facts(
    concern: ConcernModel,
    recipient: Recipient,
    policy: PolicySet,
    consent: Consent,
    now: datetime,
    source: AgencyType,
) -> _Facts:
    children = tuple(
        (s, age_on(s.date_of_birth, now) if s.date_of_birth is not None else None)
        for s in concern.subjects
        if s.role is SubjectRole.CHILD
    )
    summary = DecisionInput(
        concern_type=concern.concern_type,
        risk_grade=concern.risk_grade,
        restricted=concern.restricted,
        source_agency_type=source,
        recipient_agency_type=recipient.agency_type,
        recipient_lscp=recipient.lscp,
        front_door=recipient.is_front_door,
        age_bands=tuple(_band(age) for _, age in children),
        consent_source=consent.source,
        consent_reason=consent.reason_code,
    )
    return _Facts(
        concern,
        recipient,
        policy,
        consent,
        source,
        children,
        decision_id_for(concern.concern_id, recipient.id, policy.revision),
        summary,
    )


def _deny(
    facts: _Facts,
    reason: ReasonCode,
    reasons: Sequence[str],
    agreements: Sequence[Agreement] = (),
    extra_codes: Sequence[ReasonCode] = (),
) -> Deny:
    return Deny(
        decision_id=facts.decision_id,
        concern_id=facts.concern.concern_id,
        recipient_id=facts.recipient.id,
        policy_revision=facts.policy.revision,
        agreement_ids=tuple(a.id for a in agreements),
        reasons=tuple(reasons),
        reason_codes=(reason, *extra_codes),
        consent_state=facts.consent.state,
        summary=facts.summary,
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class _Share:
    """What a PERMIT or REFER shares under one agreement."""

    profile: Profile
    lawful_basis: str
    purpose: str
    retention: str
    withheld_subject_refs: tuple[str, ...]
    notes: tuple[str, ...]


def _basis_text(agreement: Agreement) -> str:
    basis = LAWFUL_BASES[agreement.lawful_bases[0]]
    text = f"lawful basis {basis.id}: {basis.citation} ({basis.kind_text})"
    others = agreement.lawful_bases[1:]
    if others:
        text += f"; the agreement also relies on {', '.join(others)}"
    return text


def _share(facts: _Facts, match: _Match) -> _Share:
    """Rule 5 and the agreement's terms: profile, basis, purpose, withheld subjects."""
    agreement = match.agreement
    withheld = list(dict.fromkeys(facts.concern.third_party_protection))
    notes = [_basis_text(agreement)]
    if withheld:
        present = {s.subject_ref for s in facts.concern.subjects}
        protected = sum(1 for ref in withheld if ref in present)
        if protected:
            notes.append(f"{protected} subject(s) withheld to protect third parties")
    if agreement.requires_school_match or agreement.requires_home_educated:
        covered = {c.subject_ref for c in match.children}
        others = [
            c.subject_ref
            for c, _ in facts.children
            if c.subject_ref not in covered and c.subject_ref not in withheld
        ]
        if others:
            withheld.extend(others)
            notes.append(
                f"{len(others)} other CHILD subject(s) withheld: agreement '{agreement.id}' "
                "covers only the child(ren) this recipient is responsible for"
            )
    return _Share(
        profile=facts.policy.profile(agreement.profile),
        lawful_basis=agreement.lawful_bases[0],
        purpose=agreement.purpose,
        retention=agreement.retention,
        withheld_subject_refs=tuple(withheld),
        notes=tuple(notes),
    )


def _covers_text(facts: _Facts, agreement: Agreement) -> str:
    return (
        f"agreement '{agreement.id}' ({agreement.title}) covers {facts.source} to "
        f"{facts.recipient.agency_type} for concern type "
        f"{facts.concern.concern_type} and {agreement.age_text()}"
    )


def _origin(facts: _Facts) -> list[str]:
    if facts.consent.source == "consent-record":
        return [f"consent position taken from {facts.consent.origin_text()}"]
    return []


def _permit(facts: _Facts, match: _Match, consent_reasons: Sequence[str]) -> Permit:
    share = _share(facts, match)
    agreement = match.agreement
    reasons = [
        _covers_text(facts, agreement),
        f"risk grade {facts.concern.risk_grade} meets the minimum {agreement.min_risk_grade}",
        *consent_reasons,
        *_origin(facts),
        *share.notes,
    ]
    return Permit(
        decision_id=facts.decision_id,
        concern_id=facts.concern.concern_id,
        recipient_id=facts.recipient.id,
        policy_revision=facts.policy.revision,
        agreement_ids=(agreement.id,),
        reasons=tuple(reasons),
        reason_codes=(),
        consent_state=facts.consent.state,
        summary=facts.summary,
        profile=share.profile,
        lawful_basis=share.lawful_basis,
        purpose=share.purpose,
        retention=share.retention,
        withheld_subject_refs=share.withheld_subject_refs,
    )


def _refer(facts: _Facts, match: _Match, reason: ReasonCode, why: Sequence[str]) -> Refer:
    share = _share(facts, match)
    reasons = [
        *why,
        _covers_text(facts, match.agreement),
        "referred to the partnership's front door for a professional decision "
        "(seek advice when unsure)",
        *share.notes,
    ]
    return Refer(
        decision_id=facts.decision_id,
        concern_id=facts.concern.concern_id,
        recipient_id=facts.recipient.id,
        policy_revision=facts.policy.revision,
        agreement_ids=(match.agreement.id,),
        reasons=tuple(reasons),
        reason_codes=(reason,),
        consent_state=facts.consent.state,
        summary=facts.summary,
        reason=reason,
        profile=share.profile,
        lawful_basis=share.lawful_basis,
        purpose=share.purpose,
        retention=share.retention,
        withheld_subject_refs=share.withheld_subject_refs,
    )


# ---- rule 2: is there a lawful basis at all? ----


def _why_not(facts: _Facts, agreement: Agreement) -> str:
    """Which subject condition of ``agreement`` no CHILD subject meets (policy words only)."""
    if not facts.children:
        return f"agreement '{agreement.id}' needs a CHILD subject; the concern has none"
    aged = [c for c, age in facts.children if agreement.admits_age(age)]
    if not aged:
        return f"agreement '{agreement.id}' covers {agreement.age_text()}; no CHILD subject is"
    if agreement.requires_school_match:
        return (
            f"agreement '{agreement.id}' needs {agreement.age_text()} on this school's roll "
            "(the child's school URN must equal the recipient's); none is"
        )
    if agreement.requires_home_educated:
        return (
            f"agreement '{agreement.id}' needs {agreement.age_text()} who is home-educated; none is"
        )
    return f"agreement '{agreement.id}' needs {agreement.age_text()} who is a care leaver; none is"


def _qualifying(facts: _Facts, agreement: Agreement) -> tuple[Subject, ...]:
    school = facts.recipient.school_urn
    return tuple(
        child
        for child, age in facts.children
        if agreement.admits_age(age)
        and (
            not agreement.requires_school_match
            or (school is not None and child.school_urn == school)
        )
        and (not agreement.requires_home_educated or child.home_educated)
        and (not agreement.requires_care_leaver or child.care_leaver)
    )


def _lawful_matches(facts: _Facts) -> list[_Match] | Deny:
    """Rule 2: agreements whose parties, concern type and subjects match, sorted by id."""
    recipient_type = facts.recipient.agency_type
    parties = facts.policy.between(facts.source, recipient_type)
    if not parties:
        return _deny(
            facts,
            ReasonCode.NO_LAWFUL_BASIS,
            [f"no data-sharing agreement lets {facts.source} share with {recipient_type}"],
        )
    concern_type = facts.concern.concern_type
    typed = [a for a in parties if a.covers(concern_type)]
    if not typed:
        ids = ", ".join(f"'{a.id}'" for a in parties)
        return _deny(
            facts,
            ReasonCode.NO_LAWFUL_BASIS,
            [
                f"no agreement between {facts.source} and {recipient_type} "
                f"covers concern type {concern_type} (considered {ids})"
            ],
            parties,
        )
    matches: list[_Match] = []
    missing: list[str] = []
    for agreement in typed:
        children = _qualifying(facts, agreement)
        if children:
            matches.append(_Match(agreement, children))
        else:
            missing.append(_why_not(facts, agreement))
    if not matches:
        return _deny(facts, ReasonCode.NO_LAWFUL_BASIS, missing, typed)
    return matches


# ---- rule 3: risk threshold ----


def _above_threshold(facts: _Facts, matches: list[_Match]) -> list[_Match] | Deny:
    grade = facts.concern.risk_grade
    rank = _RANK[grade]
    above = [m for m in matches if rank >= _RANK[m.agreement.min_risk_grade]]
    if above:
        return above
    return _deny(
        facts,
        ReasonCode.BELOW_THRESHOLD,
        [
            f"risk grade {grade} is below the minimum {m.agreement.min_risk_grade} "
            f"of agreement '{m.agreement.id}' ({m.agreement.title})"
            for m in matches
        ],
        [m.agreement for m in matches],
    )


# ---- rule 4: consent ----


def _at_risk(agreement: Agreement) -> str:
    if agreement.subject_ages == "child":
        return "a child is at risk"
    return "a young adult is at risk of significant harm"


def _protecting(agreement: Agreement) -> str:
    if agreement.subject_ages == "child":
        return "protecting a child takes priority over privacy"
    return "protecting a young adult at risk of significant harm takes priority over privacy"


def _consent(facts: _Facts, match: _Match) -> Decision:
    """Rule 4 for one agreement."""
    agreement = match.agreement
    rule = agreement.consent_rule
    consent = facts.consent
    state = consent.state
    grade = facts.concern.risk_grade
    described = consent.describe()
    if rule == "not_required":
        basis = LAWFUL_BASES[agreement.lawful_bases[0]]
        why = "a statutory duty" if basis.kind == "duty" else "the law allows it without consent"
        return _permit(
            facts,
            match,
            [f"consent is not required by agreement '{agreement.id}' ({why}); {described}"],
        )
    if state is ConsentState.GIVEN:
        return _permit(facts, match, [described])
    overrides = rule == "overridable_at_risk"
    if state is ConsentState.OVERRIDDEN and consent.justified:
        if overrides:
            return _permit(
                facts,
                match,
                [
                    f"{described}: agreement '{agreement.id}' allows a professional to share "
                    "without consent (consent rule overridable_at_risk)"
                ],
            )
        return _refuse(
            facts,
            match,
            f"{described}, but agreement '{agreement.id}' requires consent: an override is "
            "not consent (if the risk is significant, grade it MEDIUM or HIGH)",
        )
    if state is ConsentState.NOT_SOUGHT:
        if overrides:
            return _permit(
                facts,
                match,
                [
                    f"{described}: consent is not needed where {_at_risk(agreement)} "
                    f"(agreement '{agreement.id}' consent rule overridable_at_risk)"
                ],
            )
        return _refuse(
            facts, match, f"agreement '{agreement.id}' requires consent, and {described}"
        )
    # REFUSED, WITHDRAWN, EXPIRED, an unjustified OVERRIDDEN, and any state added
    # later: the person's wish not to share stands unless a risk overrides it.
    if state is ConsentState.OVERRIDDEN:
        described += ", so the refusal it claims to override stands; that refusal is"
    if overrides and _RANK[grade] >= _AT_RISK_RANK:
        return _permit(
            facts,
            match,
            [
                f"{described} overridden: risk grade {grade} records a risk of "
                f"significant harm, and {_protecting(agreement)} "
                f"(agreement '{agreement.id}' consent rule overridable_at_risk)"
            ],
        )
    why = (
        f"{described} and agreement '{agreement.id}' requires consent"
        if not overrides
        else f"{described} and risk grade {grade} does not record a risk of "
        "significant harm, so it cannot be overridden"
    )
    return _refuse(facts, match, why)


def _refuse(facts: _Facts, match: _Match, why: str) -> Decision:
    """A refusal that stands: the front door weighs it (REFER); anyone else is denied."""
    if facts.recipient.is_front_door:
        return _refer(facts, match, ReasonCode.CONSENT_REFUSED, [why, *_origin(facts)])
    return _deny(facts, ReasonCode.CONSENT_REFUSED, [why, *_origin(facts)], [match.agreement])


def decide(
    concern: ConcernModel,
    recipient: Recipient,
    agreements: PolicySet,
    consent_state: ConsentState | Consent,
    now: datetime,
    *,
    source_agency_type: AgencyType = AgencyType.POLICE,
    cumulative: Sequence[CumulativeFlag] = (),
) -> Decision:
    """Decide whether ``concern`` may go to ``recipient``, and what of it.

    Pure: the result depends only on the arguments (``now`` fixes ages and
    consent expiry). ``source_agency_type`` is the publisher's agency type (the
    router looks it up in the directory). ``consent_state`` is passed separately
    from ``concern.consent`` so that a later consent record can be applied: pass
    a ``Consent`` (state, reason, justification, origin), or a bare state (see
    ``effective_consent``).

    Rules, in order (the first that settles the case wins):

    1. **Restricted record.** A restricted concern goes only to the front door
       (the partnership's children's social care MASH), as a REFER
       (RESTRICTED_RECORD) for human review, whatever the grade or consent,
       using the profile of the first agreement that covers it; everyone else
       gets DENY(RESTRICTED_RECORD). If no agreement covers the front door
       either, DENY(RESTRICTED_RECORD) with NO_LAWFUL_BASIS also recorded.
    2. **Lawful basis.** Ages come from the CHILD subjects' dates of birth on
       ``now`` (under 18: child; 18 to 24: young adult; no date of birth:
       taken as a child, as the role says). An agreement applies when its
       source and recipient agency types, concern types and age band (and
       ``min_age``/``max_age``) match a CHILD subject, who must also be on the
       recipient school's roll (``requires_school_match``), home-educated
       (``requires_home_educated``) or a care leaver (``requires_care_leaver``)
       where the agreement says so. None → DENY(NO_LAWFUL_BASIS), with reasons
       naming what was missing.
    3. **Threshold.** The risk grade must reach the agreement's
       ``min_risk_grade``; else DENY(BELOW_THRESHOLD).
    4. **Consent**, per agreement:

       * ``not_required`` → PERMIT, whatever the state;
       * GIVEN → PERMIT (GIVEN past its ``expires_at`` is EXPIRED);
       * OVERRIDDEN with a recorded justification → PERMIT if
         ``overridable_at_risk``; under ``required`` an override is not consent;
       * NOT_SOUGHT → PERMIT if ``overridable_at_risk`` ("consent is not needed
         where a child is at risk"; the reason that applied is named), else
         DENY(CONSENT_REFUSED);
       * REFUSED, WITHDRAWN, EXPIRED, or OVERRIDDEN without a justification →
         PERMIT if ``overridable_at_risk`` and the grade is MEDIUM or HIGH (a
         risk of significant harm is recorded: "protecting a child takes
         priority over privacy"); else REFER(CONSENT_REFUSED) to a front door
         and DENY(CONSENT_REFUSED) to anyone else.
    5. **Third parties.** ``concern.third_party_protection`` refs become
       ``withheld_subject_refs`` (``minimise`` stubs them). For a school or
       LA-education agreement, CHILD subjects the recipient is not responsible
       for are withheld too.

    Agreements are tried in id order; the first whose consent rule permits is
    used (an agreement that lawfully permits is enough), otherwise the first
    one's REFER or DENY stands. The agreement's first lawful basis is cited; the
    policy loader has checked that every basis an agreement cites is in the
    catalogue and fits the agreement's parties and subjects.

    6. **Cumulative concern** (issue 16). ``cumulative`` holds the flags of the
       partnership's thresholds met for the concern's children (the router
       passes them only for the front door of that partnership). A front door
       then gets a REFER(CUMULATIVE_CONCERN), whatever the concern's own grade:
       a PERMIT becomes a referral under the same agreement; a DENY(BELOW_THRESHOLD)
       becomes one under the first agreement that covered the concern; a REFER
       keeps its reason and adds CUMULATIVE_CONCERN. A DENY for another reason
       (no lawful basis, restricted) stands: the flag is recorded in its reasons.
    """
    outcome = _decide(concern, recipient, agreements, consent_state, now, source_agency_type)
    if not cumulative or not recipient.is_front_door:
        return outcome
    return _escalate(outcome, cumulative, concern, recipient, agreements, consent_state, now)


def _escalate(
    outcome: Decision,
    flags: Sequence[CumulativeFlag],
    concern: ConcernModel,
    recipient: Recipient,
    agreements: PolicySet,
    consent_state: ConsentState | Consent,
    now: datetime,
) -> Decision:
    """Rule 6: a front door gets a flagged concern as a referral."""
    why = tuple(r for flag in flags for r in flag.reasons())
    code = ReasonCode.CUMULATIVE_CONCERN
    if isinstance(outcome, Refer):
        return dataclasses.replace(
            outcome,
            reasons=(*outcome.reasons, *why),
            reason_codes=(*outcome.reason_codes, code),
        )
    if isinstance(outcome, Permit):
        return Refer(
            decision_id=outcome.decision_id,
            concern_id=outcome.concern_id,
            recipient_id=outcome.recipient_id,
            policy_revision=outcome.policy_revision,
            agreement_ids=outcome.agreement_ids,
            reasons=(*why, *outcome.reasons),
            reason_codes=(code,),
            consent_state=outcome.consent_state,
            summary=outcome.summary,
            reason=code,
            profile=outcome.profile,
            lawful_basis=outcome.lawful_basis,
            purpose=outcome.purpose,
            retention=outcome.retention,
            withheld_subject_refs=outcome.withheld_subject_refs,
        )
    if outcome.reason is ReasonCode.BELOW_THRESHOLD and outcome.agreement_ids:
        consent = effective_consent(concern, consent_state, now)
        facts = _facts(
            concern, recipient, agreements, consent, now, outcome.summary.source_agency_type
        )
        agreement = agreements.agreement(outcome.agreement_ids[0])
        if agreement is not None:
            match = _Match(agreement, _qualifying(facts, agreement))
            refer = _refer(
                facts,
                match,
                code,
                [*why, *outcome.reasons, "the cumulative concern outweighs the single grade"],
            )
            return refer
    return dataclasses.replace(
        outcome,
        reasons=(
            *outcome.reasons,
            *why,
            "the cumulative-concern flag could not be shared: the reason above stands",
        ),
    )


def _decide(
    concern: ConcernModel,
    recipient: Recipient,
    agreements: PolicySet,
    consent_state: ConsentState | Consent,
    now: datetime,
    source_agency_type: AgencyType,
) -> Decision:
    """Rules 1 to 5 (see ``decide``)."""
    consent = effective_consent(concern, consent_state, now)
    facts = _facts(concern, recipient, agreements, consent, now, source_agency_type)

    if concern.restricted and not recipient.is_front_door:
        return _deny(
            facts,
            ReasonCode.RESTRICTED_RECORD,
            [
                "the record is restricted: only the partnership's front door may receive it, "
                "for human review"
            ],
        )

    lawful = _lawful_matches(facts)
    if concern.restricted:
        if isinstance(lawful, Deny):
            return _deny(
                facts,
                ReasonCode.RESTRICTED_RECORD,
                ["the record is restricted", *lawful.reasons],
                extra_codes=(ReasonCode.NO_LAWFUL_BASIS,),
            )
        return _refer(
            facts,
            lawful[0],
            ReasonCode.RESTRICTED_RECORD,
            ["the record is restricted: the front door reviews it before anyone else sees it"],
        )
    if isinstance(lawful, Deny):
        return lawful

    above = _above_threshold(facts, lawful)
    if isinstance(above, Deny):
        return above

    first: Decision | None = None
    for match in above:
        outcome = _consent(facts, match)
        if isinstance(outcome, Permit):
            return outcome
        if first is None:
            first = outcome
    assert first is not None  # ``above`` is never empty
    return first
