"""The practitioner's inbox flow: one code path for `safer inbox` and `safer web`.

Both front ends call these functions and only render the results:

- ``listing``: a recipient's disclosures with their deadline and time left,
  overdue ones first, then the soonest due, then those with no deadline;
- ``open_disclosure``: the minimised content (decrypted for this recipient
  when the adapter stored it) and the OPENED receipt, queued and sent;
- ``action_disclosure``: an outcome code and an optional note encrypted to the
  sending agency, and the ACTIONED receipt, queued and sent.

A receipt is queued in the recipient's inbox first (so it is never lost),
then sent at once when a broker is reachable; otherwise the running adapter
sends it. Nothing here prints: results carry what a front end shows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters import Inbox, InboxItem, publish_receipts
from broker import KeyStore, Settings, make_producer, seal
from schemas import BrokerError, ConfigError, ReasonCode, ValidationError

from ._runtime import Runtime, resolve_bootstrap

__all__ = [
    "OUTCOME_CODES",
    "ActionResult",
    "InboxRow",
    "OpenResult",
    "SendOutcome",
    "action_disclosure",
    "inbox_exists",
    "inboxes",
    "listing",
    "open_disclosure",
    "open_inbox",
    "resolve",
    "send_now",
    "time_left",
]

#: What a recipient did about a disclosure (stable codes; shown in `--help` and the web form).
OUTCOME_CODES = {
    "NFA": "no further action needed",
    "ADVICE_GIVEN": "advice given to the family or the referrer",
    "EARLY_HELP": "early help offered",
    "SCHOOL_SUPPORT": "support put in place at school (Operation Encompass)",
    "HEALTH_FOLLOW_UP": "health visitor, school nurse or GP follow-up",
    "S17_ASSESSMENT": "child in need assessment (Children Act 1989 s.17)",
    "STRATEGY_DISCUSSION": "strategy discussion held or arranged",
    "S47_ENQUIRY": "child protection enquiry (Children Act 1989 s.47)",
    "YJS_ASSESSMENT": "youth justice assessment",
    "REFERRED_ON": "referred on to another service",
    "ALREADY_KNOWN": "already known; added to the existing plan",
}


def inboxes(settings: Settings) -> list[str]:
    """Recipient ids that have an inbox in this data directory."""
    folder = settings.inbox_dir
    return sorted(p.stem for p in folder.glob("*.db")) if folder.is_dir() else []


def inbox_exists(settings: Settings, recipient: str) -> bool:
    return (settings.inbox_dir / f"{recipient}.db").is_file()


def open_inbox(settings: Settings, recipient: str) -> Inbox:
    """The recipient's inbox, which must exist (opening never creates an empty one)."""
    if not inbox_exists(settings, recipient):
        known = ", ".join(inboxes(settings)[:6]) or "none yet"
        raise ConfigError(
            f"no inbox for recipient {recipient!r} in {settings.inbox_dir}",
            code=ReasonCode.NO_RECIPIENT,
            hint=f"run `safer inbox list` to see the inboxes (found: {known})",
        )
    return Inbox(settings.inbox_dir / f"{recipient}.db")


def time_left(deadline: str | None, now: datetime | None = None) -> str:
    """``"3h05m left"``, ``"OVERDUE by 1h00m"``, or ``"-"`` with no deadline."""
    seconds = _seconds_left(deadline, now)
    if seconds is None:
        return "-"
    hours, rest = divmod(abs(int(seconds)), 3600)
    text = f"{hours}h{rest // 60:02d}m"
    return f"OVERDUE by {text}" if seconds < 0 else f"{text} left"


def _seconds_left(deadline: str | None, now: datetime | None) -> float | None:
    if not deadline:
        return None
    due = datetime.fromisoformat(deadline)
    return (due - (now or datetime.now(UTC))).total_seconds()


@dataclass(frozen=True)
class InboxRow:
    item: InboxItem
    seconds_left: float | None  # None: no deadline
    time_left: str

    @property
    def overdue(self) -> bool:
        return (
            self.seconds_left is not None
            and self.seconds_left < 0
            and self.item.status != "ACTIONED"
        )


def listing(
    inbox: Inbox, *, include_actioned: bool = False, now: datetime | None = None
) -> list[InboxRow]:
    """The inbox's disclosures, overdue first, then by time left; no deadline last.

    Actioned disclosures are left out unless ``include_actioned``; they sort
    after every open one.
    """
    moment = now or datetime.now(UTC)
    rows = [
        InboxRow(item, _seconds_left(item.deadline, moment), time_left(item.deadline, moment))
        for item in inbox.items()
        if include_actioned or item.status != "ACTIONED"
    ]

    def order(row: InboxRow) -> tuple[int, float, str]:
        done = row.item.status == "ACTIONED"
        left = row.seconds_left
        return (
            2 if done else (0 if row.overdue else 1),
            float("inf") if left is None else left,
            row.item.received_at,
        )

    return sorted(rows, key=order)


def resolve(inbox: Inbox, ref: str) -> InboxItem:
    """The one disclosure whose id is or starts with ``ref`` (8 characters are enough)."""
    matches = inbox.find(ref)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(
            f"no disclosure starting with {ref!r} in this inbox",
            code=ReasonCode.NO_RECIPIENT,
            hint="run `safer inbox list --recipient ID` to see the ids",
        )
    raise ConfigError(
        f"{len(matches)} disclosures start with {ref!r}",
        code=ReasonCode.NO_RECIPIENT,
        hint="type more characters of the id",
    )


@dataclass(frozen=True)
class SendOutcome:
    sent: int  # receipts the broker acknowledged now
    queued_reason: str | None  # why they stay queued (None when sent)

    @property
    def message(self) -> str:
        if self.queued_reason is None:
            return f"{self.sent} receipt(s) sent"
        return f"receipt queued: {self.queued_reason}; it is sent when `safer up` runs"


def send_now(settings: Settings, recipient: str, inbox: Inbox) -> SendOutcome:
    """Send queued receipts if a broker is reachable; otherwise leave them queued.

    Runs its own event loop: call it from a worker thread when inside one.
    """
    try:
        bootstrap = resolve_bootstrap(settings)
    except BrokerError:
        return SendOutcome(0, "no broker running")
    runtime = Runtime(settings, bootstrap)

    async def send() -> int:
        producer = make_producer(bootstrap, **runtime.security_for(recipient))
        await producer.start()
        try:
            return await publish_receipts(
                producer,
                inbox,
                codec=runtime.codec,
                identity=runtime.keys.signing_identity(recipient),
                topic=settings.topics.receipts,
            )
        finally:
            await producer.stop()

    try:
        sent = asyncio.run(send())
    except Exception as exc:  # best effort: the receipt stays queued for the adapter
        return SendOutcome(0, f"broker unreachable ({type(exc).__name__})")
    return SendOutcome(sent, None)


@dataclass(frozen=True)
class OpenResult:
    item: InboxItem  # as it was before opening (its status may have moved on)
    marked: bool  # True: this call moved it to OPENED and queued the receipt
    send: SendOutcome | None  # None when nothing was queued


def open_disclosure(
    settings: Settings, recipient: str, ref: str, *, mark: bool = True
) -> OpenResult:
    """Read one disclosure of ``recipient``'s own inbox; mark it OPENED and send the receipt."""
    with open_inbox(settings, recipient) as inbox:
        item = resolve(inbox, ref)
        marked = mark and inbox.advance(item.disclosure_id, "OPENED")
        sent = send_now(settings, recipient, inbox) if marked else None
    return OpenResult(item, marked, sent)


@dataclass(frozen=True)
class ActionResult:
    item: InboxItem
    marked: bool  # False: it was already ACTIONED; nothing changed
    note_sealed: bool
    send: SendOutcome | None


def _sealed_note(settings: Settings, item: InboxItem, note: str) -> dict[str, object]:
    publisher = item.source_agency or "hampshire-constabulary"
    sealed = seal(
        note.encode("utf-8"),
        KeyStore(settings.keys_dir).encryption_public(publisher),
        disclosure_id=item.disclosure_id,
        recipient_id=publisher,
    )
    return {
        "ciphertext": sealed.ciphertext.hex(),
        "nonce": sealed.nonce.hex(),
        "wrapped_key": sealed.wrapped_key.hex(),
        "wrap_nonce": sealed.wrap_nonce.hex(),
        "ephemeral_public_key": sealed.ephemeral_public_key.hex(),
        "recipient_key_id": sealed.recipient_key_id,
        "algorithm": sealed.algorithm,
    }


def action_disclosure(
    settings: Settings, recipient: str, ref: str, *, outcome: str, note: str | None
) -> ActionResult:
    """Record what the recipient did (ACTIONED, with an outcome code) and send the receipt.

    A note is encrypted to the sending agency: only they can read it.
    """
    if outcome not in OUTCOME_CODES:
        raise ValidationError(
            f"unknown outcome code {outcome!r}",
            fields=("outcome",),
            hint=f"one of: {', '.join(sorted(OUTCOME_CODES))}",
        )
    with open_inbox(settings, recipient) as inbox:
        item = resolve(inbox, ref)
        sealed = _sealed_note(settings, item, note) if note and note.strip() else None
        marked = inbox.advance(item.disclosure_id, "ACTIONED", outcome_code=outcome, note=sealed)
        sent = send_now(settings, recipient, inbox) if marked else None
    return ActionResult(item, marked, sealed is not None, sent)
