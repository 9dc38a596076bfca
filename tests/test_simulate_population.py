"""Issue 20, simulator: sessions of several recording sites and populations of sessions.

A session of ``n_sites`` sites is one probe with a shank per site (electrode groups
``shank0``...), each site an independent draw of ``n_units`` units; the package's readers must
see one site per shank and place every unit on its own shank. A single-site session is
pinned to what the simulator wrote before multi-site sessions existed. A population is a
folder of such sessions whose kinds follow a balanced design, with a truth table.
"""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from nwb_subspace.io.site_labels import read_site_labels
from nwb_subspace.simulate import PRESETS, load_truth, simulate_session
from nwb_subspace.simulate.cohort import (
    BROADER_FACTOR,
    KIND_DESIGN,
    NOT_USED,
    POPULATION_TRUTH_COLUMNS,
    population_kinds,
    read_population_truth,
    session_seed,
    simulate_population,
)
from nwb_subspace.simulate.session import SHANK_SPACING_UM
from nwb_subspace.simulate.truth import GroundTruth

#: A very short session (12 s of sound, 2 units a site) for the population's file logic.
MINI = PRESETS["tiny"].replace(
    name="mini",
    estimation_s=8.0,
    sequence_s=4.0,
    n_validation=1,
    validation_s=2.0,
    validation_repeats=2,
    n_units=2,
)


def _spikes(path) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        st, ends = f["units/spike_times"][()], f["units/spike_times_index"][()]
    return np.split(st, ends[:-1])


# ------------------------------------------------------------------ single site: unchanged


#: ``simulate_session(path, preset="tiny", seed=3)`` as written by the simulator before
#: ``n_sites`` existed (spike counts, first spike times and sums of the truth arrays), with
#: one later, deliberate change: the narrow units' power is calibrated on their unbroadened
#: drive (issue 20), which changes their gains and mean rates and so every unit's spikes.
#: A second deliberate change (issue 20, every kind broadened): narrow units are broadened by
#: ``broaden_nonlinearity`` (a narrow bowl's hole shrinks instead of widening), so the narrow
#: bowl unit 5 has a new width, gain and rate, and the units simulated after it (the spike
#: stream is shared) new spikes; the hill and the other units' draws are unchanged.
SINGLE_SITE_TINY_SEED3 = {
    "spike_counts": [617, 272, 1535, 461, 492, 1077, 1117, 977],
    "spike_time_sum": 307538.07773333334,
    "first_spikes": [0.19283333333333333, 0.3504333333333334, 0.38523333333333337],
    "waveform_abs_sum": 0.029345907270908356,
    "k": [1, 3, 4, 1, 5, 2, 4, 5],
    "main_electrode": [49, 9, 58, 40, 54, 51, 11, 5],
    "cell_type": ["broad", "broad", "narrow", "broad", "broad", "narrow", "broad", "broad"],
    "nl_kind": ["monotonic", "hill", "hill", "monotonic", "monotonic", "bowl", "monotonic", "bowl"],
    "abs_sums": {
        "filters": 922.0151891772164,
        "amplitude": 500.9438272484148,
        "mean_rate": 78.39390087858284,
        "depth_um": 4067.4857892079363,
        "site_coords": 153.565238602006,
        "site_basis": 77.12797304604128,
    },
}


def test_single_site_session_is_unchanged(tmp_path):
    """n_sites = 1 writes what the simulator wrote before (same seed, same spikes, same
    truth, one group "shank0", no electrode_group column, the same identifier and notes)."""
    ref = SINGLE_SITE_TINY_SEED3
    path, truth_path = simulate_session(tmp_path / "one.nwb", preset="tiny", seed=3)
    spikes = _spikes(path)
    assert [s.size for s in spikes] == ref["spike_counts"]
    assert np.concatenate(spikes).sum() == pytest.approx(ref["spike_time_sum"], rel=1e-12)
    np.testing.assert_allclose(spikes[0][:3], ref["first_spikes"], rtol=1e-12)
    with h5py.File(path, "r") as f:
        assert np.abs(f["units/waveform_mean"][()]).sum() == pytest.approx(
            ref["waveform_abs_sum"], rel=1e-5
        )
        assert "electrode_group" not in f["units"]
        assert list(f["general/extracellular_ephys"]) == ["electrodes", "shank0"]
        assert "n_sites" not in json.loads(f["general/notes"][()])["simulation_config"]
        text = f["session_description"][()].decode()
        assert text.startswith("Simulated recording of one auditory-cortex site")
    truth = load_truth(truth_path)
    assert truth.k.tolist() == ref["k"] and truth.main_electrode.tolist() == ref["main_electrode"]
    assert truth.cell_type.tolist() == ref["cell_type"] and truth.nl_kind.tolist() == ref["nl_kind"]
    for name, value in ref["abs_sums"].items():
        assert np.nansum(np.abs(getattr(truth, name))) == pytest.approx(value, rel=1e-9), name
    assert truth.site_basis.shape == (7, 32, 20)  # one site: the former shape
    assert truth.site.tolist() == ["shank0"] * 8 and truth.n_sites == 1
    assert "n_sites" not in truth.meta


def test_old_sidecar_without_site_labels_loads(tmp_path):
    """Sidecars written before multi-site sessions have no ``site`` array: one site."""
    _, truth_path = simulate_session(tmp_path / "s.nwb", preset=MINI, seed=0)
    with np.load(truth_path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "site"}
    np.savez(truth_path, **arrays)
    truth = GroundTruth.load(truth_path)
    assert truth.site.tolist() == ["shank0"] * MINI.n_units
    assert truth.basis_of_site("shank0").shape == truth.site_basis.shape
    with pytest.raises(ValueError, match="no site 'shank1'"):
        truth.basis_of_site("shank1")


# ------------------------------------------------------------------ several sites


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    """The tiny preset with 2 sites of 4 units, and the single-site session of the same seed."""
    folder = tmp_path_factory.mktemp("sites")
    cfg = PRESETS["tiny"].replace(n_sites=2, n_units=4)
    path, truth_path = simulate_session(folder / "two.nwb", preset=cfg, seed=3)
    one, one_truth = simulate_session(folder / "one.nwb", preset=cfg.replace(n_sites=1), seed=3)
    return path, load_truth(truth_path), one, load_truth(one_truth)


def test_two_site_file_structure(two_sites):
    path, truth, _, _ = two_sites
    with h5py.File(path, "r") as f:
        ee = f["general/extracellular_ephys"]
        assert sorted(k for k in ee if k.startswith("shank")) == ["shank0", "shank1"]
        assert list(f["general/devices"]) == ["probe"]
        for group in ("shank0", "shank1"):
            assert ee[group].get("device", getlink=True).path == "/general/devices/probe"
        el = ee["electrodes"]
        group_name = np.array([g.decode() for g in el["group_name"][()]])
        rel_x, rel_y = el["rel_x"][()], el["rel_y"][()]
        assert group_name.tolist() == ["shank0"] * 64 + ["shank1"] * 64
        assert set(rel_x[:64]) == {0.0} and set(rel_x[64:]) == {SHANK_SPACING_UM}
        np.testing.assert_array_equal(rel_y[:64], rel_y[64:])  # shanks side by side
        units = f["units"]
        names = [n.decode() for n in units["unit_name"][()]]
        assert names == [f"unit_{u:03d}" for u in range(8)] == truth.unit_names.tolist()
        rows = np.split(units["electrodes"][()], units["electrodes_index"][()][:-1])
        for u, r in enumerate(rows):  # a unit's electrodes: its own shank's 64 contacts
            first = 0 if u < 4 else 64
            np.testing.assert_array_equal(r, np.arange(first, first + 64))
        assert units["waveform_mean"].shape == (8, 120, 64)
        groups = [f[ref].name.rsplit("/", 1)[-1] for ref in units["electrode_group"][()]]
        assert groups == ["shank0"] * 4 + ["shank1"] * 4
        text = f["session_description"][()].decode()
        assert "2 auditory-cortex sites" in text and "4 units per site" in text
    assert truth.site.tolist() == groups and truth.site_names == ["shank0", "shank1"]
    assert truth.meta["n_sites"] == 2 and truth.meta["sites"] == ["shank0", "shank1"]
    # the main electrode is a row of the unit's own shank, positions on that shank
    assert ((truth.main_electrode >= 64) == (truth.site == "shank1")).all()
    assert (np.abs(truth.position_um[:, 0] - np.where(truth.site == "shank1", 250, 0)) <= 20).all()


def test_site_zero_is_the_single_site_session(two_sites):
    """Site 0 uses the single-site streams: the same units, waveforms and spikes; site 1 is
    an independent draw with its own basis."""
    path, truth, one_path, one = two_sites
    for name in ("filters", "nl_width", "mean_rate", "position_um", "main_electrode"):
        np.testing.assert_array_equal(getattr(truth, name)[:4], getattr(one, name))
    np.testing.assert_array_equal(truth.site_basis[0], one.site_basis)
    for a, b in zip(_spikes(path)[:4], _spikes(one_path), strict=True):
        np.testing.assert_array_equal(a, b)
    # the two sites' bases span different subspaces (mean squared cosine of the principal
    # angles: 1 for the same subspace; two random 7-dim subspaces of 640 dims: about 0.01)
    b0, b1 = (truth.basis_of_site(s).reshape(7, -1) for s in ("shank0", "shank1"))
    assert np.mean(np.linalg.svd(b0 @ b1.T, compute_uv=False) ** 2) < 0.5


def test_shared_units_live_in_their_own_sites_basis(two_sites):
    _, truth, _, _ = two_sites
    for u in range(truth.n_units):
        f = truth.unit_filters(u).reshape(int(truth.k[u]), -1)
        own = truth.basis_of_site(truth.site[u]).reshape(7, -1)
        other = truth.basis_of_site("shank1" if truth.site[u] == "shank0" else "shank0")
        other = other.reshape(7, -1)

        def inside(basis, f=f):
            return np.linalg.norm(f @ basis.T @ basis) / np.linalg.norm(f)

        assert inside(own) == pytest.approx(1.0, abs=1e-9)
        assert inside(other) < 0.9


def test_readers_see_one_site_per_shank_and_depths_per_shank(two_sites):
    """read_site_labels: one label per shank; read_units: every unit (shank 1 included) is
    placed on its own shank, at its true depth, with its true cell type."""
    from nwb_subspace.io.units import read_units

    path, truth, _, _ = two_sites
    labels, source = read_site_labels(path)
    assert labels.tolist() == truth.site.tolist() and source == "units electrode_group"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spike-time grid note of the reader
        info = read_units(path, layers={"l34_rel_y": truth.meta["l34_rel_y"]})
    np.testing.assert_array_equal(info.main_channel, truth.main_electrode)
    np.testing.assert_allclose(info.depth_um, truth.position_um[:, 1], atol=25.0)
    np.testing.assert_allclose(
        info.location_um[:, 0], np.where(truth.site == "shank1", 250, 0), atol=5
    )
    assert info.cell_type.tolist() == truth.cell_type.tolist()
    assert info.layer.tolist() == truth.layer.tolist()


@pytest.mark.parametrize("bad", [0, 9, 1.5, True])
def test_n_sites_is_validated(bad):
    with pytest.raises(ValueError, match="n_sites must be"):
        PRESETS["tiny"].replace(n_sites=bad)


# ------------------------------------------------------------------ populations


def test_design_is_balanced():
    """8 sessions: the full 2 x 2 x 2 factorial; 2 sessions: both levels of every factor;
    4 sessions: every factor balanced."""

    def levels(kinds):
        return {
            key: sorted(str(k[key]) for k in kinds)
            for key in ("subspace", "tiling", "narrow_broader")
        }

    full = population_kinds(8)
    assert len({tuple(sorted(k.items())) for k in full}) == 8
    assert levels(population_kinds(2)) == {
        "subspace": ["independent", "shared"],
        "tiling": ["clustered", "scattered"],
        "narrow_broader": ["False", "True"],
    }
    for key, values in levels(population_kinds(4)).items():
        assert len(set(values)) == 2 and values.count(values[0]) == 2, key
    assert population_kinds(10)[8:] == list(KIND_DESIGN[:2])
    # session seeds: deterministic, distinct, independent of the population's size
    seeds = [session_seed(0, i) for i in range(8)]
    assert len(set(seeds)) == 8 and seeds == [session_seed(0, i) for i in range(8)]
    assert session_seed(1, 0) != seeds[0]


def test_population_files_and_truth_table(tmp_path):
    table = simulate_population(tmp_path / "pop", 2, seed=5, preset=MINI, n_sites=2)
    again = simulate_population(tmp_path / "again", 2, seed=5, preset=MINI, n_sites=2)
    pd.testing.assert_frame_equal(table, again)  # deterministic from the seed
    pop, again_spikes = (_spikes(tmp_path / d / "session_01.nwb") for d in ("pop", "again"))
    for a, b in zip(pop, again_spikes, strict=True):
        np.testing.assert_array_equal(a, b)
    assert tuple(table.columns) == POPULATION_TRUTH_COLUMNS and len(table) == 4
    pd.testing.assert_frame_equal(read_population_truth(tmp_path / "pop"), table)
    assert table["session"].tolist() == ["session_00"] * 2 + ["session_01"] * 2
    assert table["site"].tolist() == ["shank0", "shank1"] * 2
    assert table["subspace"].tolist() == ["shared"] * 2 + ["independent"] * 2
    assert table["independent_bf"].tolist() == [NOT_USED] * 2 + ["whole range"] * 2
    assert table["narrow_tuning_factor"].tolist() == [BROADER_FACTOR] * 2 + [1.0] * 2
    assert (table["n_units"] == 2).all() and (table["preset"] == "mini").all()
    for row in table.drop_duplicates("session").itertuples():
        path = tmp_path / "pop" / row.file
        labels, _ = read_site_labels(path)
        assert sorted(set(labels)) == ["shank0", "shank1"]
        truth = load_truth(path)
        assert truth.meta["seed"] == row.seed and truth.meta["subspace"] == row.subspace
        assert truth.meta["config"]["narrow_tuning_factor"] == row.narrow_tuning_factor
        assert truth.meta["config"]["tiling"] == row.tiling
        assert truth.meta["config"]["independent_bf"] == (
            "whole range" if row.subspace == "independent" else "site"
        )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate_population(tmp_path / "pop", 2, seed=5, preset=MINI)


def test_explicit_kinds_and_bad_input(tmp_path):
    kinds = [
        {"subspace": "independent", "tiling": "clustered", "narrow_broader": True,
         "independent_bf": "site", "narrow_tuning_factor": 2.0, "narrow_modulation": 0.5},
    ]  # fmt: skip
    table = simulate_population(tmp_path, 1, preset=MINI, n_sites=1, n_units=3, kinds=kinds)
    assert table.iloc[0][
        ["independent_bf", "narrow_tuning_factor", "narrow_modulation"]
    ].tolist() == ["site", 2.0, 0.5]
    assert table.iloc[0]["n_units"] == 3 and table.iloc[0]["site"] == "shank0"
    bad = [
        (dict(n_sessions=0), "n_sessions must be an int >= 1"),
        (dict(n_sessions=2, seed=-1), "seed must be"),
        (dict(n_sessions=1, n_sites=9), "n_sites must be in 1-8"),
        (dict(n_sessions=1, n_units=0), "n_units must be"),
        (dict(n_sessions=2, kinds=kinds), "kinds must be a list of 2"),
        (dict(n_sessions=1, kinds=[{"subspace": "shared"}]), "missing keys"),
        (dict(n_sessions=1, kinds=[dict(kinds[0], colour=1)]), "unknown keys"),
        (dict(n_sessions=1, kinds=[dict(kinds[0], narrow_tuning_factor=1.0)]), "contradicts"),
        (dict(n_sessions=1, kinds=[dict(kinds[0], tiling="tiled")]), r"kinds\[0\]: tiling"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            simulate_population(tmp_path / "bad", preset=MINI, **kwargs)
    assert not (tmp_path / "bad").exists()  # nothing written


def test_cli_simulate_population(tmp_path, capsys):
    from nwb_subspace.cli.main import main

    out = tmp_path / "pop"
    args = ["simulate-population", str(out), "--sessions", "2", "--seed", "1", "--preset"]
    assert main([*args, "tiny", "--units", "2", "--sites-per-session", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("session 1/2:") and "shared" in lines[0]
    assert lines[-1] == f"truth table: {out / 'population_truth.csv'}"
    table = read_population_truth(out)
    assert len(table) == 4 and set(table["preset"]) == {"tiny"}
    assert (out / "session_01.nwb").exists() and (out / "session_01.truth.npz").exists()
    for argv, match in [
        ([*args, "tiny"], "exist"),  # no --overwrite
        ([*args, "huge"], "unknown preset"),
        (["simulate-population", str(out), "--sessions", "0"], "--sessions must be >= 1"),
        ([*args, "tiny", "--sites-per-session", "9"], "between 1 and 8"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err
