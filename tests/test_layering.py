"""The layering rule: itc's core imports nothing above it; prm/ nothing from strategies/ or evals/."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package -> the top-level packages it must not import; only itc/cli and itc/runner.py wire
# the layers together.
RULES = {"itc": ("prm", "strategies", "evals"), "prm": ("strategies", "evals")}
WIRING = ("itc/cli/", "itc/runner.py")


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Absolute imports of a module, wherever they stand (also inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def violations() -> list[str]:
    found = []
    for package, banned in RULES.items():
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(WIRING):
                continue
            found += [
                f"{rel}:{line}: imports {module}"
                for module, line in imported_modules(path)
                if module.split(".")[0] in banned
            ]
    return found


def test_core_and_prm_import_nothing_above_them():
    assert violations() == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from strategies.base import Strategy\n")
    assert imported_modules(module) == [("strategies.base", 2)]
