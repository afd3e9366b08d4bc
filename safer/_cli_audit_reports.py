"""`safer audit trail|report|sar|stats|export|shred`: the questions auditors and DPOs ask."""

from __future__ import annotations

from typing import Any

__all__ = ["register_reports"]


def register_reports(audit_sub: Any) -> None:
    """Adds the reporting actions to the `audit` command group."""
