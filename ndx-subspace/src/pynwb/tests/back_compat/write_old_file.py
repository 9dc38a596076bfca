"""Write an NWB file with an old, pinned version of the ``ndx-subspace`` spec.

Run as a script, in a fresh interpreter where ``ndx_subspace`` is NOT imported::

    python write_old_file.py SPEC_DIR OUT.nwb [MODELS.npz]

``SPEC_DIR`` holds a pinned copy of an old namespace (``back_compat/0.1.0``, ``0.1.1``): it is
the only ``ndx-subspace`` namespace this interpreter's type map loads, so every object is
written by classes of that version (:func:`pynwb.get_class`) and the file caches that spec,
exactly as a file written by that release. The values are :func:`payload`, a deterministic
function the tests call too, so they can compare what the current code reads with what was
written. Every optional field the old spec has is filled; fields it lacks are left out.

``MODELS.npz`` (optional) holds the encoding models' tensors as ``<model>/<tensor>`` arrays
plus ``<model>/__kind__`` and ``<model>/__config__`` (JSON), so that a reader can rebuild them
(nwb_subspace's tests pass a real tiny CNN and LN); without it, placeholder tensors are
written.

Models written: ``cnn`` predicts units-table rows :data:`CNN_ROWS` (not all units; in spec
0.1.x that mapping lives only in its ``scores`` table) and ``ln`` predicts every unit and has
no scores table.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

N_UNITS, N_FREQ, N_LAGS, N_COMP, N_BINS, N_TIMES = 4, 6, 5, 2, 3, 60
#: Units-table rows of the outputs of the model ``cnn`` (only its scores table says so).
CNN_ROWS = [0, 2, 3]
SITE = "shank0"
RUN = "run1"
MODULE = "misc"


def payload(seed: int = 0) -> dict:
    """Every value written, as plain numpy arrays and numbers (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    n_cnn, n_rf = len(CNN_ROWS), 2 * N_UNITS
    return {
        "spike_times": [np.sort(rng.uniform(0, 10, 20 + i)) for i in range(N_UNITS)],
        "spectrogram": {
            "data": rng.random((N_TIMES, N_FREQ)).astype(np.float32),
            "frequencies": np.geomspace(200.0, 8000.0, N_FREQ),
            "rate": 100.0,
            "starting_time": 0.5,
        },
        "scores": {
            k: rng.random(n_cnn)
            for k in (
                "correlation",
                "noise_floor",
                "noise_corrected_correlation",
                "explained_variance",
            )
        },
        "training_loss": np.array([3.0, 2.0, 1.5]),
        "validation_loss": np.array([3.1, 2.2, 1.9]),
        "tuning": {
            "units": list(range(N_UNITS)),
            "components": rng.standard_normal((N_UNITS, N_COMP, N_FREQ, N_LAGS)).astype(np.float32),
            "explained_variance_ratio": rng.random((N_UNITS, N_COMP)),
            "dimensionality": np.array([1, 2, 1, 2]),
            "mean_dstrf": rng.standard_normal((N_UNITS, N_FREQ, N_LAGS)).astype(np.float32),
            "n_frames": np.array([40, 41, 42, 43]),
            "noise_floor": rng.random((N_UNITS, N_COMP)),
            "dimensionality_reference": np.array([1, 1, 2, 2]),
            "n_outlier_frames": np.array([0, 1, 2, 3]),
        },
        "srf": {
            "units": [0, 0, 1, 1, 2, 2, 3, 3],
            "dimensions": np.tile([0, 1], (n_rf, 1)),
            "response_source": ["model", "measured"] * N_UNITS,
            "response_map": rng.standard_normal((n_rf, N_BINS, N_BINS)),
            "occupancy": rng.integers(0, 50, (n_rf, N_BINS, N_BINS)),
            "edges_x": np.tile(np.linspace(-1, 1, N_BINS + 1), (n_rf, 1)),
            "edges_y": np.tile(np.linspace(-2, 2, N_BINS + 1), (n_rf, 1)),
            "breadth": rng.integers(0, 9, n_rf),
            "shape_asymmetry": rng.uniform(-1, 1, (n_rf, 2)),
            "response_map_sem": rng.random((n_rf, N_BINS, N_BINS)),
            "breadth_fraction": rng.random(n_rf),
            "curve_asymmetry": rng.uniform(-1, 1, n_rf),
            "shape_p_value": rng.random(n_rf),
        },
        "site_units": {
            "units": list(range(N_UNITS)),
            "variance_fraction": rng.random(N_UNITS),
            "null_mean": rng.random(N_UNITS),
            "p_value": rng.random(N_UNITS),
            "variance_fraction_loo": rng.random(N_UNITS),
            "site_pc_similarity": rng.random((N_UNITS, N_COMP)),
            "site_similarity_loo": rng.random(N_UNITS),
        },
        "site": {
            "components": rng.standard_normal((N_COMP, N_FREQ, N_LAGS)).astype(np.float32),
            "explained_variance_ratio": rng.random(N_COMP),
            "components_reference": rng.standard_normal((N_COMP, N_FREQ, N_LAGS)).astype(
                np.float32
            ),
            "explained_variance_ratio_reference": rng.random(N_COMP),
        },
        "statistics": {
            "site": [SITE, SITE],
            "statistic": ["shared_subspace_fraction", "tiling_overlap"],
            "value": [0.8, 0.2],
            "null_mean": [0.3, 0.1],
            "p_value": [0.01, 0.5],
            "effect_size": [0.4, 0.1],
            "n": [4, 6],
            "test": ["permutation, one-sided", "permutation, two-sided"],
            "verdict": ["shared", "no tiling"],
        },
        "axes": {
            "frequencies": np.geomspace(200.0, 8000.0, N_FREQ),
            "lags": np.arange(N_LAGS) * 0.01,
        },
        "config": {"seed": seed, "written_by": "back_compat/write_old_file.py"},
    }


def _placeholder_models(rng: np.random.Generator) -> dict:
    return {
        name: {
            "kind": kind,
            "config": {"n_frequencies": N_FREQ, "n_units": n},
            "weights": {"readout.weight": rng.standard_normal((n, 3)).astype(np.float32)},
        }
        for name, kind, n in (("cnn", "cnn", len(CNN_ROWS)), ("ln", "ln", N_UNITS))
    }


def _models_from_npz(path: Path) -> dict:
    arrays = np.load(path)
    models: dict = {}
    for key in arrays.files:
        name, tensor = key.split("/", 1)
        entry = models.setdefault(name, {"weights": {}})
        if tensor == "__kind__":
            entry["kind"] = str(arrays[key])
        elif tensor == "__config__":
            entry["config"] = json.loads(str(arrays[key]))
        else:
            entry["weights"][tensor] = arrays[key]
    return models


# long: one flat recipe of a whole file, field by field, in the old spec's terms
def _write(spec_dir: Path, out: Path, models: dict | None) -> None:
    """Write the whole file ``out`` with the classes of the spec in ``spec_dir``."""
    from hdmf.common import DynamicTableRegion, VectorData
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries, get_class, load_namespaces

    namespace = "ndx-subspace"
    load_namespaces(str(spec_dir / f"{namespace}.namespace.yaml"))
    cls = {
        name: get_class(name, namespace)
        for name in (
            "Spectrogram",
            "ModelWeight",
            "UnitScoresTable",
            "EncodingModel",
            "TuningSubspaceTable",
            "SubspaceRFTable",
            "SiteUnitTable",
            "SiteSubspace",
            "SiteStatisticsTable",
            "SubspaceAnalysis",
        )
    }
    data = payload()
    models = models or _placeholder_models(np.random.default_rng(1))

    def args(c) -> set[str]:
        return {a["name"] for a in c.__init__.__docval__["args"]}

    def table(c, name: str, columns: dict, **fields):
        known = {col["name"]: col["description"] for col in c.__columns__}
        cols = []
        n = None
        for key, value in columns.items():
            if key not in known:  # an optional column this version does not have
                continue
            if key == "units":
                col = DynamicTableRegion(
                    name="units", data=list(value), table=nwbfile.units, description=known[key]
                )
            else:
                col = VectorData(name=key, description=known[key], data=value)
            cols.append(col)
            n = len(value)
        fields = {k: v for k, v in fields.items() if k in args(c)}
        return c(
            name=name, description=f"A {c.__name__}.", columns=cols, id=list(range(n)), **fields
        )

    nwbfile = NWBFile(
        session_description="written with a pinned old ndx-subspace spec",
        identifier=f"ndx-subspace-back-compat-{spec_dir.name}",
        session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    device = nwbfile.create_device(name="probe", description="A probe.")
    nwbfile.create_electrode_group(SITE, description="A shank.", location="AC", device=device)
    for times in data["spike_times"]:
        nwbfile.add_unit(spike_times=times)
    sound = TimeSeries(name="sound", data=np.zeros(100), unit="Pa", rate=1000.0)
    nwbfile.add_stimulus(sound)
    s = data["spectrogram"]
    spectrogram = cls["Spectrogram"](
        name="spectrogram",
        data=s["data"],
        unit="a.u.",
        rate=s["rate"],
        starting_time=s["starting_time"],
        frequencies=s["frequencies"],
        filterbank="gammatone",
        f_min=200.0,
        f_max=8000.0,
        window_s=0.01,
        compression="log((sqrt(rms) + 0.1) / 0.1)",
        settings_json=json.dumps({"bin_s": 0.01}),
        description="A spectrogram.",
        source_sound=sound,
    )
    encoding_models = []
    for name, model in sorted(models.items()):
        n_out = len(CNN_ROWS) if name == "cnn" else N_UNITS
        extra = {}
        if name == "cnn":
            extra["scores"] = table(
                cls["UnitScoresTable"], "scores", {"units": CNN_ROWS, **data["scores"]}
            )
        encoding_models.append(
            cls["EncodingModel"](
                name=name,
                model_kind=model["kind"],
                architecture=f"{model['kind']} of the back-compat test",
                config_json=json.dumps(model["config"], sort_keys=True),
                bin_size_s=0.01,
                n_lags=N_LAGS,
                n_frequencies=N_FREQ,
                n_units=n_out,
                loss="poisson",
                epochs=3,
                best_epoch=2,
                seed=0,
                learning_rates=np.array([1e-3, 1e-4]),
                l2=1e-5,
                n_initializations=1,
                software_versions=json.dumps({"nwb-subspace": f"spec {spec_dir.name}"}),
                device="cpu",
                model_weights=[
                    cls["ModelWeight"](
                        name=key,
                        data=value.reshape(1) if value.ndim == 0 else value,
                        dimension_names=[f"dim{i}" for i in range(max(value.ndim, 1))],
                    )
                    for key, value in model["weights"].items()
                ],
                training_loss=data["training_loss"],
                validation_loss=data["validation_loss"],
                units=nwbfile.units,
                spectrogram=spectrogram,
                **extra,
            )
        )
    site_fields = {k: v for k, v in data["site"].items() if k in args(cls["SiteSubspace"])}
    if "dimensionality_reference" in args(cls["SiteSubspace"]):
        site_fields["dimensionality_reference"] = 1
    site = cls["SiteSubspace"](
        name=f"site_subspace_{SITE}",
        site=SITE,
        dimensionality=N_COMP,
        unit_fractions=table(cls["SiteUnitTable"], "unit_fractions", data["site_units"]),
        srfs=table(cls["SubspaceRFTable"], "srfs", data["srf"], high_activity_threshold=0.6),
        **site_fields,
        **data["axes"],
    )
    run = cls["SubspaceAnalysis"](
        name=RUN,
        config_json=json.dumps(data["config"]),
        software_version=f"spec {spec_dir.name}",
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        spectrograms=[spectrogram],
        encoding_models=encoding_models,
        tuning_subspace_tables=[
            table(
                cls["TuningSubspaceTable"],
                "tuning_subspaces",
                data["tuning"],
                variance_threshold=0.95,
                reference_n_components=15,
                reference_variance_threshold=0.9,
                **data["axes"],
            )
        ],
        subspace_rf_tables=[
            table(
                cls["SubspaceRFTable"],
                "subspace_rfs",
                data["srf"],
                high_activity_threshold=0.5,
                grid=json.dumps({"bins": N_BINS}),
                sem_method="repeats",
            )
        ],
        site_subspaces=[site],
        site_statistics_tables=[
            table(cls["SiteStatisticsTable"], "site_statistics", data["statistics"])
        ],
    )
    nwbfile.create_processing_module(MODULE, "Analysis results.").add(run)
    with NWBHDF5IO(str(out), "w") as io:
        io.write(nwbfile)


def main(argv: list[str]) -> None:
    """``write_old_file.py SPEC_DIR OUT.nwb [MODELS.npz]`` (see the module doc)."""
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    if "ndx_subspace" in sys.modules:
        raise SystemExit("run in a fresh interpreter: ndx_subspace is already imported")
    spec_dir, out = Path(argv[0]), Path(argv[1])
    models = _models_from_npz(Path(argv[2])) if len(argv) == 3 else None
    _write(spec_dir, out, models)


if __name__ == "__main__":
    main(sys.argv[1:])
