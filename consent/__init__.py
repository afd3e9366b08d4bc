"""Consent: the lawful-basis and consent filter of SAFER Exchange (DESIGN §9).

Floor 2. **This package is pure**: it does no I/O of any kind (no files,
network, clock or randomness). Everything arrives as arguments: policy and
directory files as text, and the current time as ``now``. The same inputs
always give the same decision, so every rule can be tested exhaustively and
fast. It imports only ``schemas``, pydantic and the standard library.

Public surface:

* ``parse_directory`` → ``Directory`` of ``Publisher`` and ``Recipient``;
* ``parse_policy`` → ``PolicySet`` of ``Agreement`` and ``Profile``, with the
  ``LAWFUL_BASES`` catalogue;
* ``Consent`` (consent as a state with reasons), ``current_consent`` and
  ``ConsentRecord`` (the ``hips.consent`` record);
* ``decide`` → ``Decision`` (``Permit`` | ``Deny`` | ``Refer``);
* ``minimise`` → ``MinimisedPayload`` (with the ``Redaction`` of free text it made);
* ``missing_minimum_dataset`` → the fields a concern lacks to be routable;
* ``decision_input``/``input_sha256`` → the canonical input of a decision and its hash;
* ``deadline_for`` (with ``parse_calendars`` and ``parse_local_timeliness``) → deadlines.
* ``risk_problems`` / ``risk_warnings`` → what refuses a concern's risk
  assessments, and what is only recorded (a DASH score against its grade);
* ``CumulativeThreshold``, ``SignalEvent``, ``cumulative_flag`` → the
  cumulative-concern signal's window arithmetic (issue 16).
"""

from ._dataset import missing_minimum_dataset
from ._deadlines import (
    DEFAULT_ENCOMPASS_NOTICE,
    ENCOMPASS_TIME,
    LONDON,
    WORKING_DAY_END,
    WORKING_DAY_START,
    AlertPoints,
    Calendar,
    CalendarKind,
    Calendars,
    Closure,
    Deadline,
    DeadlineRule,
    LocalRule,
    LocalTimeliness,
    alert_points,
    deadline_for,
    parse_calendar,
    parse_calendars,
    parse_local_timeliness,
    parse_response_duration,
)
from ._decide import AT_RISK, decide, effective_consent
from ._decision import Decision, DecisionInput, Deny, Permit, Refer, decision_id_for
from ._inputs import INPUT_VERSION, concern_sha256, decision_input, input_sha256
from ._minimise import FREE_TEXT_PATHS, WITHHELD_REASON, MinimisedPayload, Redaction, minimise
from ._policy import (
    LAWFUL_BASES,
    Agreement,
    ConsentRule,
    LawfulBasis,
    PolicyProblems,
    PolicySet,
    Profile,
    SubjectAges,
    concern_field_paths,
    parse_policy,
)
from ._recipient import Directory, Publisher, Recipient, parse_directory
from ._record import ConsentRecord, consent_record_id_for
from ._retention import add_retention, governing_agreement, retention_days
from ._risk import (
    ASSESSED_ROLES,
    DASH_HIGH,
    DASH_MEDIUM,
    dash_band,
    risk_problems,
    risk_warnings,
)
from ._signal import (
    CumulativeFlag,
    CumulativeThreshold,
    SignalEvent,
    ThresholdMet,
    cumulative_flag,
    in_window,
    prune_events,
)
from ._state import (
    NOT_SOUGHT_CITATIONS,
    Consent,
    ConsentSource,
    current_consent,
    justification_from_text,
    not_sought_reason_from_text,
)
from ._timeliness import (
    AlertLevel,
    DueAlert,
    Tracked,
    alerts_due,
    completed_at,
    is_overdue,
)

__all__ = [
    "ASSESSED_ROLES",
    "AT_RISK",
    "DASH_HIGH",
    "DASH_MEDIUM",
    "DEFAULT_ENCOMPASS_NOTICE",
    "ENCOMPASS_TIME",
    "FREE_TEXT_PATHS",
    "INPUT_VERSION",
    "LAWFUL_BASES",
    "LONDON",
    "NOT_SOUGHT_CITATIONS",
    "WITHHELD_REASON",
    "WORKING_DAY_END",
    "WORKING_DAY_START",
    "Agreement",
    "AlertLevel",
    "AlertPoints",
    "Calendar",
    "CalendarKind",
    "Calendars",
    "Closure",
    "Consent",
    "ConsentRecord",
    "ConsentRule",
    "ConsentSource",
    "CumulativeFlag",
    "CumulativeThreshold",
    "Deadline",
    "DeadlineRule",
    "Decision",
    "DecisionInput",
    "Deny",
    "Directory",
    "DueAlert",
    "LawfulBasis",
    "LocalRule",
    "LocalTimeliness",
    "MinimisedPayload",
    "Permit",
    "PolicyProblems",
    "PolicySet",
    "Profile",
    "Publisher",
    "Recipient",
    "Redaction",
    "Refer",
    "SignalEvent",
    "SubjectAges",
    "ThresholdMet",
    "Tracked",
    "add_retention",
    "alert_points",
    "alerts_due",
    "completed_at",
    "concern_field_paths",
    "concern_sha256",
    "consent_record_id_for",
    "cumulative_flag",
    "current_consent",
    "dash_band",
    "deadline_for",
    "decide",
    "decision_id_for",
    "decision_input",
    "effective_consent",
    "governing_agreement",
    "in_window",
    "input_sha256",
    "is_overdue",
    "justification_from_text",
    "minimise",
    "missing_minimum_dataset",
    "not_sought_reason_from_text",
    "parse_calendar",
    "parse_calendars",
    "parse_directory",
    "parse_local_timeliness",
    "parse_policy",
    "parse_response_duration",
    "prune_events",
    "retention_days",
    "risk_problems",
    "risk_warnings",
]
