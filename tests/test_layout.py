"""The layering the README's Layout promises, checked on the source: data/ never imports model/,
bench/ never imports tests/, and nothing edits sys.path (the packages are installed)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def importers(folder: str, package: str) -> list[str]:
    return [
        str(path.relative_to(REPO))
        for path in sorted((REPO / folder).rglob("*.py"))
        if any(m == package or m.startswith(f"{package}.") for m in imported_modules(path))
    ]


def test_data_never_imports_model() -> None:
    assert importers("data", "model") == []


def test_bench_never_imports_tests() -> None:
    assert importers("bench", "tests") == []


def edits_sys_path(path: Path) -> bool:
    """A call such as ``sys.path.insert(...)``."""
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and ast.unparse(node.func.value) == "sys.path"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    )


def test_no_sys_path_edits() -> None:
    sources = list(REPO.glob("*.py"))
    for folder in ("config", "data", "model", "demo", "bench", "experiments", "tests"):
        sources += (REPO / folder).rglob("*.py")
    assert [str(p.relative_to(REPO)) for p in sources if edits_sys_path(p)] == []
