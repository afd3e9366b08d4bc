"""Size limits at every hop, in one place (issue 11; DESIGN §4.7).

A record too large for the next hop must never stall the path. These numbers
are consistent by construction, and a test checks them together:

* a publisher's producer refuses a record over ``message_bytes`` (aiokafka
  ``max_request_size``), and the broker refuses it too (topic
  ``max.message.bytes``), so an oversize concern is stopped at the first hop;
* the router quarantines an inbound value over ``inbound_value_bytes`` as
  TOO_LARGE (``inbound_value_bytes`` < ``message_bytes``: a record that got in
  with headers and framing still has a quarantine path);
* a quarantine record keeps the original bytes inline only up to
  ``quarantine_inline_bytes``; above that it keeps their SHA-256, size, the
  allowed headers and the source position where the full bytes stay (for the
  inbound topic's retention), so the quarantine record always fits;
* every consumer can fetch the largest record a topic admits
  (``max_partition_fetch_bytes`` = ``fetch_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIZE_LIMITS", "SizeLimits"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class SizeLimits:
    #: Largest concern value the router decodes (TOO_LARGE above).
    inbound_value_bytes: int = _MIB
    #: Original bytes a quarantine record carries inline; above this, hash + reference.
    quarantine_inline_bytes: int = 64 * 1024
    #: Topic ``max.message.bytes`` (a record batch) and a producer's largest record.
    message_bytes: int = 2 * _MIB
    #: A consumer's per-partition fetch: at least the largest record a topic admits.
    fetch_bytes: int = 2 * _MIB + 64 * 1024

    def __post_init__(self) -> None:
        if not (
            self.quarantine_inline_bytes < self.inbound_value_bytes < self.message_bytes
            and self.fetch_bytes >= self.message_bytes
        ):
            raise ValueError("size limits must satisfy inline < inbound < message <= fetch")


SIZE_LIMITS = SizeLimits()
