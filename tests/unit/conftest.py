"""Fixtures for unit tests: real files in tmp_path, no network."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from broker import Settings
from safer import Runtime
from safer import _logging as safer_logging

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def example_concern() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (REPO / "deploy/examples/concern-domestic-abuse.json").read_text()
    )
    return data


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    """Keys, registry and deployment on disk; no broker (bootstrap is never used)."""
    settings = Settings(data_dir=tmp_path / "data", deploy_dir=REPO / "deploy")
    rt = Runtime(settings, bootstrap="127.0.0.1:1")
    rt.init_keys()
    return rt


@pytest.fixture
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A CLI ``main`` configures logging for the process; give later tests the set-up
    they had."""
    monkeypatch.setattr(safer_logging, "_handle", None)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
