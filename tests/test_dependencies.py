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


# ------------------------------------------------------------------ floors and extras (issue 21)

FLOORS_FILE = ROOT / ".ci" / "floors.txt"
#: Declared but not pinned in .ci/floors.txt: CI installs torch's CPU build (2.13.0) first, and
#: ndx-subspace comes from ./ndx-subspace in the same pip command.
NOT_PINNED = {"torch", "ndx-subspace"}
#: Extras the floors job installs (through [test]); their floors are pinned too.
PINNED_EXTRAS = ("batch", "zarr")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _floors_declared() -> dict[str, str]:
    """Distribution -> its ``>=`` floor, of the dependencies and the pinned extras."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in PINNED_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    floors: dict[str, str] = {}
    for text in reqs:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{text!r} needs exactly one '>=' floor"
        floors[_canonical(req.name)] = lows[0]
    return floors


def _floors_pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in FLOORS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{FLOORS_FILE.name}: {line!r} is not NAME==VERSION"
            pins[_canonical(name.strip())] = version.strip()
    return pins


def test_ci_floors_equal_the_declared_floors():
    from packaging.version import Version

    declared, pinned = _floors_declared(), _floors_pinned()
    assert set(pinned) == set(declared) - NOT_PINNED, (
        f"pinned only in .ci/floors.txt: {sorted(set(pinned) - set(declared))}; "
        f"declared, not pinned: {sorted(set(declared) - NOT_PINNED - set(pinned))}"
    )
    drift = {n: (declared[n], v) for n, v in pinned.items() if Version(v) != Version(declared[n])}
    assert not drift, f"pyproject floor != .ci/floors.txt pin: {drift}"
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-c .ci/floors.txt" in run and '-m "not slow"' in run


def test_dask_is_imported_only_inside_batch_functions():
    """``run`` and every other command work without the [batch] extra."""
    where = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        inside = {id(x) for f in funcs for x in ast.walk(f)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("dask", "distributed") for n in names):
                where.append((path.relative_to(ROOT).as_posix(), id(node) in inside))
    assert where and all(p == "nwb_subspace/batch.py" and f for p, f in where), where
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [r for r in project["dependencies"] if r.startswith("dask")]
    assert "nwb-subspace[batch,zarr]" in project["optional-dependencies"]["test"]


def test_batch_without_dask_says_what_to_install(tmp_path):
    """With Dask unavailable (None in sys.modules: its import fails), the package and the CLI
    still load, and ``batch`` ends with a one-line error naming the extra, before any work."""
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['dask'] = sys.modules['distributed'] = None\n"
        "import nwb_subspace, nwb_subspace.pipeline\n"
        "from nwb_subspace.cli.main import main\n"
        f"sys.exit(main(['batch', {str(tmp_path / 'x.nwb')!r}, '--outdir', "
        f"{str(tmp_path / 'out')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()[-1]
    assert err.startswith("nwb-subspace: error:") and 'pip install "nwb-subspace[batch]"' in err
    assert not (tmp_path / "out").exists()  # refused before any work
