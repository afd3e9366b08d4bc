"""structlog JSON logging. Log lines carry ids and reason codes, never personal data."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

__all__ = ["configure_logging"]

_handle: TextIO | None = None


def configure_logging(*, log_file: Path | None = None, level: str = "INFO") -> None:
    """JSON lines to ``log_file`` (appended) or to stderr; stdout stays for results."""
    global _handle
    if _handle is not None and _handle not in (sys.stderr, sys.stdout):
        _handle.close()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _handle = log_file.open("a", encoding="utf-8", buffering=1)
    else:
        _handle = sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.WriteLoggerFactory(file=_handle),
        cache_logger_on_first_use=False,
    )
    # aiokafka logs through the stdlib; route its warnings to the same place.
    logging.basicConfig(stream=_handle, level=logging.WARNING, force=True)
