"""DESIGN §2: imports flow up the floors only, and there is no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"schemas": 1, "consent": 2, "audit": 2, "broker": 3, "adapters": 4, "safer": 5}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(FLOORS)


def _package_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in FLOORS:
        deps: set[str] = set()
        for path in (ROOT / package).rglob("*.py"):
            deps |= _imports(path)
        graph[package] = deps - {package}
    return graph


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_no_import_from_a_higher_or_same_floor(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        for imported in _imports(path):
            if imported == package:
                continue
            assert FLOORS[imported] < FLOORS[package], (
                f"{path.relative_to(ROOT)} imports {imported} "
                f"(floor {FLOORS[imported]}) from floor {FLOORS[package]}"
            )


def test_no_import_cycle() -> None:
    graph = _package_imports()
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        assert node not in visiting, f"import cycle: {' -> '.join([*trail, node])}"
        if node in done:
            return
        visiting.add(node)
        for dep in graph[node]:
            visit(dep, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for package in graph:
        visit(package, [])


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from broker import Router\nimport safer.cli\n")
    assert _imports(bad) == {"broker", "safer"}


def test_consent_and_audit_never_import_kafka() -> None:
    for package in ("schemas", "consent", "audit"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "aiokafka" not in text, f"{path} mentions aiokafka"
