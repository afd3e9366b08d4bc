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
* ``decide`` → ``Decision`` (``Permit`` | ``Deny`` | ``Refer``);
* ``minimise`` → ``MinimisedPayload``;
* ``missing_minimum_dataset`` → the fields a concern lacks to be routable.
"""

from ._dataset import missing_minimum_dataset
from ._decide import decide
from ._decision import Decision, DecisionInput, Deny, Permit, Refer, decision_id_for
from ._minimise import WITHHELD_REASON, MinimisedPayload, minimise
from ._policy import (
    LAWFUL_BASES,
    Agreement,
    ConsentRule,
    LawfulBasis,
    PolicySet,
    Profile,
    SubjectAges,
    concern_field_paths,
    parse_policy,
)
from ._recipient import Directory, Publisher, Recipient, parse_directory

__all__ = [
    "LAWFUL_BASES",
    "WITHHELD_REASON",
    "Agreement",
    "ConsentRule",
    "Decision",
    "DecisionInput",
    "Deny",
    "Directory",
    "LawfulBasis",
    "MinimisedPayload",
    "Permit",
    "PolicySet",
    "Profile",
    "Publisher",
    "Recipient",
    "Refer",
    "SubjectAges",
    "concern_field_paths",
    "decide",
    "decision_id_for",
    "minimise",
    "missing_minimum_dataset",
    "parse_directory",
    "parse_policy",
]
