"""`safer policy …`: check data-sharing agreements and explain decisions (issue 3)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Adds the `policy` command group (filled in by the consent engine work)."""
