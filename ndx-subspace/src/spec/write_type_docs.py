"""Write the type reference of ``ndx-subspace`` into its README, from the spec YAML.

Run ``python src/spec/write_type_docs.py`` (from the ``ndx-subspace`` folder) after
regenerating the YAML: it replaces the text between the ``<!-- types -->`` and
``<!-- /types -->`` markers of ``README.md`` with one table of every type and, per type, a
table of every field (attributes, datasets or columns, groups, links) with its doc, dtype,
dims and unit. ``--check`` only compares, and exits 1 if the README is stale. The tests
run the same comparison.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent
DIST = HERE.parent.parent
EXTENSIONS = DIST / "spec" / "ndx-subspace.extensions.yaml"
README = DIST / "README.md"
START, END = "<!-- types -->", "<!-- /types -->"
COLUMN_TYPES = {"VectorData", "DynamicTableRegion", "VectorIndex"}


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _dims(node: dict) -> str:
    dims = node.get("dims")
    if not dims:
        return "scalar" if "dtype" in node else ""
    if isinstance(dims[0], list):  # alternatives: one shape per rank
        ranks = [len(d) for d in dims]
        return f"rank {min(ranks)} to {max(ranks)}"
    return "(" + ", ".join(dims) + ")"


def _dtype(node: dict) -> str:
    dtype = node.get("dtype", "")
    if isinstance(dtype, dict):  # a reference, e.g. {target_type: ..., reftype: object}
        return f"reference to {dtype.get('target_type', '?')}"
    return str(dtype)


def _unit(node: dict) -> str:
    for attr in node.get("attributes", []) or []:
        if attr.get("name") == "unit":
            return str(attr.get("default_value", attr.get("value", "given per file")))
    return ""


def _required(node: dict, kind: str) -> str:
    if kind == "attribute":
        return "yes" if node.get("required", True) else "no"
    quantity = node.get("quantity", 1)
    return {1: "yes", "?": "no", "*": "any number", "+": "one or more"}.get(quantity, quantity)


def _field_rows(top: dict, is_table: bool) -> list[str]:
    rows = []

    def add(name: str, kind: str, node: dict) -> None:
        rows.append(
            f"| `{name}` | {kind} | {_cell(_dtype(node))} | {_cell(_dims(node))} | "
            f"{_cell(_unit(node))} | {_required(node, kind.split()[0])} | {_cell(node['doc'])} |"
        )

    for attr in top.get("attributes", []) or []:
        add(attr["name"], "attribute", attr)
    for ds in top.get("datasets", []) or []:
        inc = ds.get("neurodata_type_inc")
        if is_table and inc in COLUMN_TYPES:
            kind = "column" if inc != "DynamicTableRegion" else "column (region into a table)"
        else:
            kind = f"dataset ({inc})" if inc else "dataset"
        add(ds.get("name", f"<{inc}>"), kind, ds)
        for attr in ds.get("attributes", []) or []:
            add(f"{ds.get('name', inc)}.{attr['name']}", "attribute", attr)
    for group in top.get("groups", []) or []:
        inc = group.get("neurodata_type_inc")
        add(group.get("name", f"<{inc}>"), f"group ({inc})", group)
    for link in top.get("links", []) or []:
        add(link["name"], f"link to {link['target_type']}", link)
    return rows


def render(extensions: Path = EXTENSIONS) -> str:
    """Return the markdown type reference of the spec in ``extensions``.

    Parameters
    ----------
    extensions : pathlib.Path
        The ``ndx-subspace.extensions.yaml`` to document.

    Returns
    -------
    str
        The summary table and one field table per type, ending with a newline.
    """
    spec = YAML(typ="safe", pure=True).load(extensions)
    types = (spec.get("groups", []) or []) + (spec.get("datasets", []) or [])
    lines = [
        "| type | extends | what it holds |",
        "| --- | --- | --- |",
        *(
            f"| [`{t['neurodata_type_def']}`](#{t['neurodata_type_def'].lower()}) | "
            f"`{t['neurodata_type_inc']}` | {_cell(t['doc'])} |"
            for t in types
        ),
    ]
    for t in types:
        is_table = t["neurodata_type_inc"] == "DynamicTable" or any(
            d.get("neurodata_type_inc") in COLUMN_TYPES for d in t.get("datasets", []) or []
        )
        lines += [
            "",
            f"### {t['neurodata_type_def']}",
            "",
            f"Extends `{t['neurodata_type_inc']}`. {_cell(t['doc'])}",
            "",
        ]
        if t.get("dtype"):
            lines += [f"Data: {_cell(_dtype(t))}, {_cell(_dims(t))}.", ""]
        lines += [
            "| field | kind | dtype | dims | unit | required | doc |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *_field_rows(t, is_table),
        ]
    return "\n".join(lines) + "\n"


def section(readme_text: str) -> str:
    """Return the text between the type markers of a README (raises if they are missing)."""
    if readme_text.count(START) != 1 or readme_text.count(END) != 1:
        raise ValueError(f"README must hold {START} and {END} exactly once each")
    return readme_text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    fresh = render()
    if "--check" in argv:
        if section(text) != fresh:
            print(f"{README} is stale: run python src/spec/write_type_docs.py", file=sys.stderr)
            return 1
        return 0
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    tmp = README.with_name(f".{README.name}.tmp")  # a temp beside it, then an atomic swap
    tmp.write_text(f"{before}{START}\n{fresh}{END}{after}", encoding="utf-8")
    os.replace(tmp, README)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
