"""Every third-party module the package imports is declared in pyproject.toml, and every
declared dependency is imported somewhere (issue 21: scikit-learn was declared and never
used; pandas and probeinterface were used and not declared)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nwb_subspace"
#: Imported only inside ``try: ... except ImportError`` with a fallback: not required.
OPTIONAL_WITH_FALLBACK = {"psutil"}
#: Declared for what they bring, not imported by name.
DECLARED_NOT_IMPORTED = {
    "pyarrow",  # pandas' Parquet engine (summarize writes Parquet tables)
}


def _third_party_imports() -> set[str]:
    mods: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "nwb_subspace"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for name, extra in project.get("optional-dependencies", {}).items():
        if name != "test":
            reqs += extra
    return {re.split(r"[\s<>=!~\[;@]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


@cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def _distribution(module: str) -> str:
    dists = _distributions().get(module, [module])
    return dists[0].lower().replace("_", "-")


def test_every_import_is_declared():
    declared = _declared()
    missing = {
        m: _distribution(m)
        for m in _third_party_imports() - OPTIONAL_WITH_FALLBACK
        if _distribution(m) not in declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_dependency_is_used():
    used = {_distribution(m) for m in _third_party_imports()} | DECLARED_NOT_IMPORTED
    unused = _declared() - used
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"
