"""The NWB extension catalog's checks on the ``ndx-subspace`` spec (issue 21).

- the YAML passes hdmf's ``validate_hdmf_spec`` against the NWB schema language
  (``nwb.schema.json`` shipped with pynwb), and a broken copy fails it;
- the namespace carries what the catalog asks for (name, version, doc, author, contact);
- every group, dataset, attribute and link has a non-empty doc;
- every numeric field is classified as a physical quantity or not, every dataset holding a
  physical quantity has a ``unit`` attribute, and every attribute holding one names its unit
  in its doc (HDMF attributes cannot carry attributes); since spec 0.2.0 there are no
  exceptions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pynwb
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "ndx-subspace" / "spec"
NAMESPACE_YAML = SPEC_DIR / "ndx-subspace.namespace.yaml"
EXTENSIONS_YAML = SPEC_DIR / "ndx-subspace.extensions.yaml"
META_SCHEMA = Path(pynwb.__file__).parent / "nwb-schema" / "nwb.schema.json"

#: Numeric datasets and attributes holding a physical quantity, with their unit.
QUANTITIES = {
    "Spectrogram/data": "a.u. (compressed filterbank energy)",
    "Spectrogram/frequencies": "Hz",
    "Spectrogram/f_min": "Hz",
    "Spectrogram/f_max": "Hz",
    "Spectrogram/window_s": "seconds",
    "Spectrogram/starting_time": "seconds",
    "Spectrogram/timestamps": "seconds",
    "EncodingModel/bin_size_s": "seconds",
    "TuningSubspaceTable/frequencies": "Hz",
    "TuningSubspaceTable/lags": "seconds",
    "TuningSubspaceTable/mean_dstrf": "(spikes/bin) per spectrogram unit",
    "SubspaceRFTable/response_map": "spikes/s",
    "SubspaceRFTable/response_map_sem": "spikes/s",
    "SubspaceRFTable/edges_x": "spectrogram units",
    "SubspaceRFTable/edges_y": "spectrogram units",
    "SiteSubspace/frequencies": "Hz",
    "SiteSubspace/lags": "seconds",
}
#: Numeric fields that hold no physical quantity: counts, indices, seeds, ratios,
#: correlations, probabilities, unit-norm filters, hyper-parameters.
DIMENSIONLESS = {
    "ModelWeight",  # a tensor of fitted parameters (its dimension_names say what each axis is)
    "ModelLayerTable/in_size",
    "ModelLayerTable/out_size",
    "ModelLayerTable/kernel_size",
    "UnitScoresTable/units",
    "UnitScoresTable/correlation",
    "UnitScoresTable/noise_floor",
    "UnitScoresTable/noise_corrected_correlation",
    "UnitScoresTable/explained_variance",
    "EncodingModel/n_lags",
    "EncodingModel/n_frequencies",
    "EncodingModel/n_units",
    "EncodingModel/epochs",
    "EncodingModel/best_epoch",
    "EncodingModel/seed",
    "EncodingModel/learning_rates",
    "EncodingModel/l2",
    "EncodingModel/n_initializations",
    # the value of the named training loss (e.g. Poisson deviance per bin): no fixed unit
    "EncodingModel/training_loss",
    "EncodingModel/validation_loss",
    "EncodingModel/output_units",  # row indices into the units table
    "TuningSubspaceTable/units",
    "TuningSubspaceTable/components",
    "TuningSubspaceTable/explained_variance_ratio",
    "TuningSubspaceTable/dimensionality",
    "TuningSubspaceTable/n_frames",
    "TuningSubspaceTable/noise_floor",
    "TuningSubspaceTable/dimensionality_reference",
    "TuningSubspaceTable/n_outlier_frames",
    "TuningSubspaceTable/variance_threshold",
    "TuningSubspaceTable/reference_n_components",
    "TuningSubspaceTable/reference_variance_threshold",
    "SubspaceRFTable/units",
    "SubspaceRFTable/dimensions",
    "SubspaceRFTable/occupancy",
    "SubspaceRFTable/breadth",
    "SubspaceRFTable/shape_asymmetry",
    "SubspaceRFTable/breadth_fraction",
    "SubspaceRFTable/curve_asymmetry",
    "SubspaceRFTable/shape_p_value",
    "SubspaceRFTable/peak_z",
    "SubspaceRFTable/snr_target_z",
    "SubspaceRFTable/keep_probability",
    "SubspaceRFTable/breadth_snr_matched",
    "SubspaceRFTable/high_activity_threshold",
    "SiteUnitTable/units",
    "SiteUnitTable/variance_fraction",
    "SiteUnitTable/null_mean",
    "SiteUnitTable/p_value",
    "SiteUnitTable/variance_fraction_loo",
    "SiteUnitTable/site_pc_similarity",
    "SiteUnitTable/site_similarity_loo",
    "SiteSubspace/components",
    "SiteSubspace/explained_variance_ratio",
    "SiteSubspace/components_reference",
    "SiteSubspace/explained_variance_ratio_reference",
    "SiteSubspace/dimensionality",
    "SiteSubspace/dimensionality_reference",
    # one row per statistic; each row's statistic is a fraction, overlap or effect size
    # (dimensionless) - a per-row unit column would be needed if a statistic ever had one
    "SiteStatisticsTable/value",
    "SiteStatisticsTable/null_mean",
    "SiteStatisticsTable/p_value",
    "SiteStatisticsTable/effect_size",
    "SiteStatisticsTable/n",
}
NUMERIC = re.compile(r"^(float|int|uint|numeric|number)")


def _extensions() -> dict:
    return yaml.safe_load(EXTENSIONS_YAML.read_text())


def _walk(node: dict, where: str, kind: str):
    yield where, kind, node
    for key, child_kind in (
        ("datasets", "dataset"),
        ("groups", "group"),
        ("attributes", "attribute"),
        ("links", "link"),
    ):
        for child in node.get(key, []) or []:
            label = (
                child.get("name")
                or child.get("neurodata_type_def")
                or child.get("neurodata_type_inc")
                or child.get("target_type")
            )
            yield from _walk(child, f"{where}/{label}", child_kind)


def _fields() -> list[tuple[str, str, dict]]:
    ext = _extensions()
    out = []
    for top in (ext.get("groups") or []) + (ext.get("datasets") or []):
        kind = "group" if top in (ext.get("groups") or []) else "dataset"
        out += list(_walk(top, top["neurodata_type_def"], kind))
    return out


def _numeric_fields() -> dict[str, tuple[str, dict]]:
    return {
        where: (kind, node)
        for where, kind, node in _fields()
        if kind in ("dataset", "attribute") and NUMERIC.match(str(node.get("dtype", "")))
    }


def _validate(spec_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hdmf.testing.validate_spec", str(spec_dir), "-m", str(META_SCHEMA)],
        capture_output=True,
        text=True,
    )


def test_validate_hdmf_spec_accepts_the_yaml_and_rejects_a_broken_copy(tmp_path):
    assert META_SCHEMA.is_file(), f"pynwb ships no NWB schema-language file at {META_SCHEMA}"
    proc = _validate(SPEC_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(SPEC_DIR, broken)
    text = (broken / EXTENSIONS_YAML.name).read_text()
    (broken / EXTENSIONS_YAML.name).write_text(text.replace("dtype: float64", "dtpye: float64", 1))
    proc = _validate(broken)
    assert proc.returncode != 0 and "dtpye" in proc.stderr, "the validator accepted a typo"


def test_namespace_has_the_catalog_metadata():
    (ns,) = yaml.safe_load(NAMESPACE_YAML.read_text())["namespaces"]
    assert ns["name"] == "ndx-subspace" and ns["name"].startswith("ndx-")
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(ns["version"]))
    assert len(ns["doc"]) >= 20
    assert ns["author"] and all(a.strip() for a in ns["author"])
    assert ns["contact"] and all("@" in c for c in ns["contact"])
    assert {"namespace": "core"} in ns["schema"]


def test_every_group_dataset_attribute_and_link_has_a_doc():
    fields = _fields()
    undocumented = [where for where, _, node in fields if not str(node.get("doc", "")).strip()]
    assert not undocumented, f"fields without a doc: {undocumented}"
    kinds = {kind for _, kind, _ in fields}
    assert kinds == {"group", "dataset", "attribute", "link"}  # every kind was looked at


def test_every_numeric_field_is_classified():
    """A new numeric field must be listed as a quantity (with its unit) or as dimensionless."""
    numeric = set(_numeric_fields())
    assert not QUANTITIES.keys() & DIMENSIONLESS
    unclassified = numeric - QUANTITIES.keys() - DIMENSIONLESS
    assert not unclassified, f"classify these numeric fields: {sorted(unclassified)}"
    stale = (QUANTITIES.keys() | DIMENSIONLESS) - numeric
    assert not stale, f"listed here but not numeric fields of the spec: {sorted(stale)}"


@pytest.mark.parametrize("where", sorted(QUANTITIES))
def test_every_physical_quantity_states_its_unit(where):
    kind, node = _numeric_fields()[where]
    if kind == "attribute":  # attributes cannot carry a unit attribute: the doc names it
        unit = QUANTITIES[where]
        assert unit.split()[0] in node["doc"] or where.endswith("_s"), where
        return
    units = [a for a in node.get("attributes", []) or [] if a.get("name") == "unit"]
    assert units, f"{where} holds {QUANTITIES[where]} but has no unit attribute"
    (unit,) = units
    stated = unit.get("value", unit.get("default_value"))
    assert stated == QUANTITIES[where].split(" (")[0], f"{where}: unit {stated!r}"
