"""The canonical input of one decision, and its hash (issue 15.4).

Each decision's audit record carries ``input_sha256``: the SHA-256 of the
canonical JSON of everything ``decide`` (and the minimiser) was given:

* ``concern_sha256``: the hash of the whole concern's canonical JSON (every
  field the rules and the minimisation profile may read, in one value, so the
  input holds no personal data in clear) and the PID-free ``considered``
  summary (type, grade, restricted flag, age bands, agency types);
* ``recipient``: id, agency type, partnership, front door;
* ``consent``: the consent position (state, where it came from, reason codes,
  record id and times);
* ``policy_revision`` and the ``agreement_ids`` the decision rests on;
* ``decided_at``: the decision time in milliseconds (ages, expiry, deadlines).

Pure, like the rest of ``consent``. ``safer policy explain --replay`` builds the
same document from the audit log and the stored concern and compares hashes.
The concern hash covers its free text too, so a hash cannot be used to confirm
a guess at one field (a date of birth) without knowing every other field.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from schemas import ConcernModel

from ._canonical import canonical_json, concern_document
from ._decision import Decision
from ._recipient import Recipient
from ._state import Consent

__all__ = ["INPUT_VERSION", "concern_sha256", "decision_input", "input_sha256"]

#: Tag of the canonical input's shape; a change of shape is a new tag.
INPUT_VERSION = "safer-decision-input-v1"


def _canonical(value: Any) -> bytes:
    return canonical_json(value)


def _ms_text(utc: datetime) -> str:
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


#: The last instant ``_ms`` formatted, and its text: a router decides a batch at one
#: ``now``, so most calls repeat it. One tuple, replaced whole (threads may share it).
_last_ms: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000Z")


def _ms(value: datetime | None) -> str | None:
    global _last_ms
    if value is None:
        return None
    # Compared in UTC: two equal times in one zone may be different instants.
    utc = value.astimezone(UTC)
    last = _last_ms
    if last[0] == utc:
        return last[1]
    text = _ms_text(utc)
    _last_ms = (utc, text)
    return text


def concern_sha256(concern: ConcernModel) -> str:
    """SHA-256 of the concern's canonical JSON (sorted keys, no whitespace, UTF-8)."""
    return hashlib.sha256(_canonical(concern_document(concern))).hexdigest()


def decision_input(
    concern: ConcernModel,
    recipient: Recipient,
    decision: Decision,
    consent: Consent,
    now: datetime,
    *,
    concern_digest: str | None = None,
) -> dict[str, Any]:
    """The canonical input document of ``decision`` (no personal data in clear).

    ``concern_digest`` is ``concern_sha256(concern)`` when the caller already has it:
    the router decides one concern for several recipients and hashes it once.
    """
    return {
        "v": INPUT_VERSION,
        "concern_id": concern.concern_id,
        "concern_sha256": concern_digest or concern_sha256(concern),
        "considered": decision.summary.to_dict(),
        "recipient": {
            "id": recipient.id,
            "agency_type": recipient.agency_type.value,
            "lscp": recipient.lscp.value,
            "front_door": recipient.is_front_door,
        },
        "consent": {
            "state": consent.state.value,
            "source": consent.source,
            "not_sought_reason": None
            if consent.not_sought_reason is None
            else consent.not_sought_reason.value,
            "justification": None if consent.justification is None else consent.justification.value,
            "justified": consent.justified,
            "record_id": consent.record_id,
            "recorded_at": _ms(consent.recorded_at),
            "expires_at": _ms(consent.expires_at),
        },
        "policy_revision": decision.policy_revision,
        "agreement_ids": list(decision.agreement_ids),
        "decided_at": _ms(now),
    }


def input_sha256(document: dict[str, Any]) -> str:
    """The hex SHA-256 of a ``decision_input`` document's canonical JSON."""
    return hashlib.sha256(_canonical(document)).hexdigest()
