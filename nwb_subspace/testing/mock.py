"""Mock NWB files and result sets: small, valid, deterministic from a seed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import numpy as np
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.file import Subject
from pynwb.misc import Units

from nwb_subspace.results import (
    FittedModel,
    ModelPrediction,
    ResultSet,
    SiteStatistics,
    SiteSubspaceResult,
    SpectrogramResult,
    SubspaceRFs,
    TrainingInfo,
    TuningSubspaces,
    UnitColumn,
    UnitScores,
)
from nwb_subspace.units.columns import UNIT_COLUMNS


def mock_nwbfile(
    n_units: int = 5,
    n_channels: int = 8,
    duration_s: float = 4.0,
    sound_rate: float = 8000.0,
    seed: int = 0,
) -> NWBFile:
    """A plain-pynwb session: electrodes with rel_x/rel_y, units with waveforms, a sound."""
    rng = np.random.default_rng(seed)
    nwbfile = NWBFile(
        session_description="Mock session written by plain pynwb for nwb-subspace tests.",
        identifier=str(UUID(int=int(rng.integers(2**63)))),
        session_start_time=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        experimenter=["Doe, Jane"],
        lab="Test lab",
        institution="Test institution",
        experiment_description="Natural sounds presented to an awake ferret.",
        keywords=["auditory cortex", "natural sounds"],
        subject=Subject(
            subject_id="F1", species="Mustela furo", sex="F", age="P1Y", description="Mock ferret."
        ),
    )
    device = nwbfile.create_device(name="probe", description="Linear silicon probe.")
    group = nwbfile.create_electrode_group(
        name="shank0",
        description="The single shank.",
        location="auditory cortex",
        device=device,
    )
    nwbfile.add_electrode_column(name="rel_x", description="x position on the probe (um).")
    nwbfile.add_electrode_column(name="rel_y", description="Distance from the tip (um).")
    for ch in range(n_channels):
        nwbfile.add_electrode(group=group, location="auditory cortex", rel_x=0.0, rel_y=20.0 * ch)
    nwbfile.units = Units(
        name="units",
        description="Units sorted from the probe.",
        resolution=1 / 30000.0,
        waveform_rate=30000.0,
        waveform_unit="volts",
    )
    n_samples = 40
    t = np.arange(n_samples) / 30000.0
    for _ in range(n_units):
        times = np.sort(rng.uniform(0, duration_s, size=int(rng.integers(20, 60))))
        ch = int(rng.integers(n_channels))
        wf = np.zeros((n_samples, n_channels))
        wf[:, ch] = -60e-6 * np.exp(-(((t - 3e-4) / 1e-4) ** 2)) + 20e-6 * np.exp(
            -(((t - 8e-4) / 2e-4) ** 2)
        )
        nwbfile.add_unit(spike_times=times, waveform_mean=wf, electrodes=[ch])
    sound = rng.standard_normal(int(duration_s * sound_rate)).astype(np.float32) * 0.1
    nwbfile.add_stimulus(
        TimeSeries(
            name="sound",
            data=sound,
            unit="Pa",
            rate=sound_rate,
            starting_time=0.0,
            description="Mock sound waveform.",
        )
    )
    return nwbfile


def write_mock_nwbfile(path: str | Path, **kwargs) -> Path:
    """Write :func:`mock_nwbfile` to ``path`` and return the path."""
    path = Path(path)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(mock_nwbfile(**kwargs))
    return path


# long: one object of every result kind from one seeded generator; its draw order fixes them
def mock_result_set(n_units: int = 5, n_frequencies: int = 6, seed: int = 0) -> ResultSet:
    """A result set holding one object of every kind (random but well-formed)."""
    import torch

    from nwb_subspace.models import build_model

    rng = np.random.default_rng(seed)
    freqs = np.geomspace(200.0, 4000.0, n_frequencies)
    spec = SpectrogramResult(
        data=rng.random((300, n_frequencies)).astype(np.float32),
        frequencies=freqs,
        rate=100.0,
        settings={
            "filterbank": "gammatone",
            "f_min": 200.0,
            "f_max": 4000.0,
            "bin_s": 0.01,
            "compression": "log((x + 0.1) / 0.1)",
        },
        source_sound="sound",
    )
    rows = np.arange(n_units)
    torch.manual_seed(seed)
    cnn = build_model(
        "cnn",
        {
            "n_frequencies": n_frequencies,
            "n_units": n_units,
            "n_channels1": 4,
            "n_channels2": 5,
            "n_hidden": 6,
        },
    )
    scores = UnitScores(*(rng.random(n_units) for _ in range(4)))
    model = FittedModel(
        name="cnn",
        module=cnn,
        unit_rows=rows,
        bin_size_s=0.01,
        scores=scores,
        spectrogram="spectrogram",
        architecture="1D-CNN x2",
        training=TrainingInfo(
            loss="poisson",
            epochs=3,
            seed=seed,
            learning_rates=(1e-3, 1e-4),
            best_epoch=2,
            l2=1e-4,
            n_initializations=1,
            device="cpu",
            training_loss=rng.random(3),
            validation_loss=rng.random(3),
        ),
        # its own generator: the draws of the other mock results stay what they were
        validation_prediction=ModelPrediction(
            timestamps=1.0 + np.arange(40) * 0.01,
            rate=np.random.default_rng(seed + 1).random((40, n_units)) * 20.0,
        ),
    )
    k, d = 3, cnn.memory
    subs = TuningSubspaces(
        unit_rows=rows,
        components=rng.standard_normal((n_units, k, n_frequencies, d)),
        explained_variance_ratio=np.sort(rng.random((n_units, k)))[:, ::-1] / k,
        dimensionality=rng.integers(1, k + 1, n_units),
        mean_dstrf=rng.random((n_units, n_frequencies, d)),
        n_frames=np.full(n_units, 300),
        noise_floor=rng.random((n_units, k)) * 0.1,
        frequencies=freqs,
        lags_s=np.arange(d) * 0.01,
    )
    b = 4
    srfs = SubspaceRFs(
        unit_rows=np.repeat(rows, 2),
        dimensions=np.tile([[0, 1]], (2 * n_units, 1)),
        response_source=np.array(["model", "measured"] * n_units),
        response_map=rng.standard_normal((2 * n_units, b, b)),
        occupancy=rng.integers(0, 50, (2 * n_units, b, b)),
        edges_x=np.tile(np.linspace(-1, 1, b + 1), (2 * n_units, 1)),
        edges_y=np.tile(np.linspace(-1, 1, b + 1), (2 * n_units, 1)),
        breadth=rng.integers(0, b * b, 2 * n_units),
        shape_asymmetry=rng.uniform(-1, 1, (2 * n_units, 2)),
    )
    site = SiteSubspaceResult(
        site="shank0",
        components=rng.standard_normal((k, n_frequencies, d)),
        explained_variance_ratio=np.array([0.5, 0.3, 0.1]),
        dimensionality=2,
        frequencies=freqs,
        lags_s=np.arange(d) * 0.01,
        unit_rows=rows,
        variance_fraction=rng.random(n_units),
        null_mean=rng.random(n_units) * 0.2,
        p_value=rng.random(n_units),
    )
    stats = SiteStatistics(
        rows=[
            {
                "site": "shank0",
                "statistic": "tiling_overlap",
                "value": 0.3,
                "null_mean": 0.4,
                "p_value": 0.02,
                "effect_size": float("nan"),
                "n": 10,
                "test": "circular-shift null, one-sided",
                "verdict": "overlap below chance",
            },
        ]
    )
    columns = [
        UnitColumn(
            "trough_to_peak_ms", rng.uniform(0.15, 0.8, n_units), UNIT_COLUMNS["trough_to_peak_ms"]
        ),
        UnitColumn(
            "cell_type",
            np.array(["narrow", "broad", "unknown", "broad", "narrow"] * n_units)[:n_units],
            UNIT_COLUMNS["cell_type"],
        ),
    ]
    return ResultSet(
        spectrograms=[spec],
        models=[model],
        subspaces=[subs],
        srfs=[srfs],
        site_subspaces=[site],
        site_statistics=[stats],
        unit_columns=columns,
        config={"seed": seed, "note": "mock"},
    )
