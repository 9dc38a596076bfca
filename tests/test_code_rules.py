"""Rules the package's code keeps, checked on its source with :mod:`ast` (nothing is imported).

- No module imports a ``_private`` name from another :mod:`nwb_subspace` module, nor reaches
  one through an imported module (``module._name``): what another module needs has a public
  name.
- No function is longer than :data:`MAX_FUNCTION_LINES` lines unless its ``def`` line, or the
  line above it, says why with a ``# long: <reason>`` comment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nwb_subspace"
#: Lines of a function body, its docstring not counted (issue 17: "no function over ~80
#: lines without a reason written next to it").
MAX_FUNCTION_LINES = 80

#: Functions over the limit in files this change did not own, by "path::name"; their owners
#: split them (or add ``# long:``) and remove the entry. Entries that are no longer over the
#: limit are ignored.
ALLOWED_LONG: dict[str, str] = {}

#: Private imports in files this change did not own that were still in progress when the
#: rule was added, by "path: import"; their owners give the name a public one and remove
#: the entry. Any other private import fails.
ALLOWED_PRIVATE: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ``ImportFrom`` names, with relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """``from X import _name`` and ``X._name`` uses, X another nwb_subspace module, in ``path``."""
    module = _module_name(path, package)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    aliases: set[str] = set()  # local names bound to nwb_subspace modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            if source.split(".")[0] != "nwb_subspace" or source == module:
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {source} import {alias.name}")
                elif (package.parent / source.replace(".", "/") / f"{alias.name}.py").exists():
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nwb_subspace" and alias.name != module:
                    aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions of ``path`` longer than ``limit`` lines (docstring not counted) without a
    ``# long:`` reason on the ``def`` line or the line above."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        n_lines = node.end_lineno - node.lineno + 1
        doc = node.body[0] if node.body else None
        if isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant):
            if isinstance(doc.value.value, str):
                n_lines -= doc.end_lineno - doc.lineno + 1
        if n_lines <= limit:
            continue
        near = lines[max(node.lineno - 2, 0) : node.lineno]
        if any("# long:" in line for line in near):
            continue
        out.append(f"{node.name} (line {node.lineno}, {n_lines} lines)")
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_across_modules(path: Path) -> None:
    rel = path.relative_to(PACKAGE).as_posix()
    found = [
        f for f in private_imports(path) if f"{rel}: {f.split(': ', 1)[1]}" not in ALLOWED_PRIVATE
    ]
    assert found == [], f"give these names a public name where they are defined: {found}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_long_functions_without_a_reason(path: Path) -> None:
    rel = path.relative_to(PACKAGE).as_posix()
    found = [f for f in long_functions(path) if f"{rel}::{f.split(' ')[0]}" not in ALLOWED_LONG]
    assert found == [], f"split these or add '# long: <reason>' on or above the def: {found}"


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    pkg = tmp_path / "nwb_subspace" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "other.py").write_text("def _x():\n    pass\n")
    bad = pkg / "bad.py"
    body = "\n".join(f"    y = {i}" for i in range(MAX_FUNCTION_LINES))
    bad.write_text(
        "from nwb_subspace.sub.other import _x\n"
        "from . import other\n"
        "from nwb_subspace.sub import other as o2\n"
        "other._x()\n"
        "o2._x()\n"
        f"def too_long():\n{body}\n"
        f"# long: one table\ndef long_with_reason():\n{body}\n"
    )
    assert private_imports(bad, tmp_path / "nwb_subspace") == [
        "line 1: from nwb_subspace.sub.other import _x",
        "line 4: other._x",
        "line 5: o2._x",
    ]
    assert long_functions(bad) == [f"too_long (line 6, {MAX_FUNCTION_LINES + 1} lines)"]
