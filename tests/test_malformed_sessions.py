"""Property-based: malformed sessions give a correct result or one clear error, and no harm.

Each example writes a tiny session with plain pynwb (the mock of
:func:`nwb_subspace.testing.mock_nwbfile`, perturbed: wrong shapes, NaN/inf, overlapping or
inverted trials, trials outside the sound, missing parts, odd names) into its own temporary
folder, then reads it with :func:`~nwb_subspace.io.session.load_session_data` and
:func:`~nwb_subspace.io.inspect.describe_file`. Each call must return a consistent result or
raise a ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` (subclasses included) raised by
nwb_subspace itself, with a one-line message; the source must stay byte-identical and no file
may be left behind. No model is fitted.
"""

from __future__ import annotations

import hashlib
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.misc import Units

import nwb_subspace
from nwb_subspace.io.inspect import describe_file
from nwb_subspace.io.session import load_session_data
from nwb_subspace.testing.mock import mock_nwbfile

pytestmark = pytest.mark.slow

CLEAR_ERRORS = (ValueError, TypeError, FileNotFoundError)
PACKAGE_DIR = Path(nwb_subspace.__file__).resolve().parent
RATE = 8000.0
DURATION = 2.0
ODD_NAMES = ["", " ", "\t", "é", "声音", "a b", "x\u200b", "null", "0", "🐱"]

names = st.one_of(st.sampled_from(ODD_NAMES), st.text(min_size=0, max_size=4))


VALID = {
    "n_units": 3,
    "spikes": "normal",
    "waveform": "ok",
    "unit_names": None,
    "sound_shape": "1d",
    "sound_bad": None,
    "sound_name": "sound",
    "trials": "ok",
    "trial_bad_value": 1.0,
    "n_sounds": 4,
    "repeats": 3,
    "sound_ids": ["s0", "s1", "s2", "s3"],
}

#: Each perturbation: the keys of :data:`VALID` it replaces, and the values it may draw.
PERTURBATIONS = {
    "units": st.fixed_dictionaries({"n_units": st.integers(0, 2)}),
    "spikes": st.fixed_dictionaries(
        {"spikes": st.sampled_from(["none", "some_empty", "nan", "outside"])}
    ),
    "waveform": st.fixed_dictionaries({"waveform": st.sampled_from(["1d", "3d", "absent"])}),
    "unit_names": st.fixed_dictionaries({"unit_names": st.lists(names, min_size=3, max_size=3)}),
    "sound_shape": st.fixed_dictionaries(
        {"sound_shape": st.sampled_from(["2d_1", "2d_2", "3d", "one_sample"])}
    ),
    "sound_bad": st.fixed_dictionaries({"sound_bad": st.sampled_from(["nan", "inf", "-inf"])}),
    "sound_name": st.fixed_dictionaries({"sound_name": st.sampled_from(ODD_NAMES[1:])}),
    "trials": st.fixed_dictionaries(
        {
            "trials": st.sampled_from(["none", "empty", "overlap", "outside", "inverted", "bad"]),
            "trial_bad_value": st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1e12]),
        }
    ),
    "design": st.fixed_dictionaries({"n_sounds": st.integers(1, 4), "repeats": st.integers(1, 3)}),
    "sound_ids": st.fixed_dictionaries({"sound_ids": st.lists(names, min_size=4, max_size=4)}),
}


@st.composite
def sessions(draw) -> dict:
    """What to write: the valid mock session with zero to three perturbations."""
    chosen = draw(st.lists(st.sampled_from(sorted(PERTURBATIONS)), max_size=3, unique=True))
    spec = dict(VALID, perturbations=chosen, seed=draw(st.integers(0, 3)))
    for key in chosen:
        spec.update(draw(PERTURBATIONS[key]))
    spec["order"] = [i % spec["n_sounds"] for i in range(spec["n_sounds"] * spec["repeats"])]
    return spec


def _sound(spec: dict, rng: np.random.Generator) -> np.ndarray:
    n = int(DURATION * RATE)
    shapes = {"1d": (n,), "2d_1": (n, 1), "2d_2": (n, 2), "3d": (n, 2, 2), "one_sample": (1,)}
    data = (rng.standard_normal(shapes[spec["sound_shape"]]) * 0.1).astype(np.float32)
    if spec["sound_bad"] is not None:
        data.reshape(-1)[data.size // 2] = float(spec["sound_bad"])
    return data


def _units(spec: dict, rng: np.random.Generator) -> Units | None:
    if spec["n_units"] == 0 and spec["seed"] % 2 == 0:
        return None  # no units table (an odd seed writes an empty one)
    units = Units(name="units", description="Perturbed units.", waveform_rate=30000.0)
    if spec["unit_names"] is not None:
        units.add_column("unit_name", "Name of the unit.")
    for j in range(spec["n_units"]):
        kind = spec["spikes"]
        times = np.sort(rng.uniform(0.0, DURATION, 30))
        if kind == "none" or (kind == "some_empty" and j == 0):
            times = np.zeros(0)
        elif kind == "nan":
            times[0] = np.nan
        elif kind == "outside":
            times = times + 100.0
        row: dict = {"spike_times": times}
        if spec["waveform"] != "absent":
            shape = {"ok": (40, 8), "1d": (40,), "3d": (40, 8, 2)}[spec["waveform"]]
            row["waveform_mean"] = rng.standard_normal(shape) * 1e-5
        if spec["unit_names"] is not None:
            row["unit_name"] = spec["unit_names"][j]
        units.add_unit(**row)
    return units


def _add_trials(nwbfile, spec: dict) -> None:
    if spec["trials"] == "none":
        return
    if spec["trials"] == "empty":  # the table and its columns, no rows
        nwbfile.add_trial_column("sound_id", "Sound presented.", data=np.array([], dtype="U8"))
        return
    nwbfile.add_trial_column("sound_id", "Name of the sound presented.")
    n = len(spec["order"])
    step = DURATION / (n + 1)
    for i, s in enumerate(spec["order"]):
        start, stop = 0.05 + i * step, 0.05 + i * step + 0.8 * step
        if spec["trials"] == "overlap":
            stop = start + 2.5 * step
        elif spec["trials"] == "outside":
            start, stop = start + 50.0, stop + 50.0
        elif spec["trials"] == "inverted" and i == 0:
            start, stop = stop, start
        elif spec["trials"] == "bad" and i == n // 2:
            start = spec["trial_bad_value"]
        nwbfile.add_trial(start_time=start, stop_time=stop, sound_id=spec["sound_ids"][s])


def _base_file(seed: int) -> NWBFile:
    """The metadata and electrodes of :func:`~nwb_subspace.testing.mock_nwbfile`, with no
    units and no sound (those come perturbed)."""
    mock = mock_nwbfile(n_units=0, duration_s=0.01, sound_rate=RATE, seed=seed)
    nwbfile = NWBFile(
        session_description=mock.session_description,
        identifier=mock.identifier,
        session_start_time=mock.session_start_time,
    )
    device = nwbfile.create_device(name="probe", description="Linear silicon probe.")
    group = nwbfile.create_electrode_group(
        name="shank0", description="The single shank.", location="AC", device=device
    )
    nwbfile.add_electrode_column(name="rel_x", description="x position on the probe (um).")
    nwbfile.add_electrode_column(name="rel_y", description="Distance from the tip (um).")
    for ch in range(8):
        nwbfile.add_electrode(group=group, location="AC", rel_x=0.0, rel_y=20.0 * ch)
    return nwbfile


def _write(path: Path, spec: dict) -> None:
    """Write the perturbed session; reject the example when pynwb itself refuses it."""
    rng = np.random.default_rng(spec["seed"])
    nwbfile = _base_file(spec["seed"])
    try:
        nwbfile.units = _units(spec, rng)
        nwbfile.add_stimulus(
            TimeSeries(
                name=spec["sound_name"],
                data=_sound(spec, rng),
                unit="Pa",
                rate=RATE,
                starting_time=0.0,
                description="Perturbed sound.",
            )
        )
        _add_trials(nwbfile, spec)
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
    except Exception:  # pynwb/hdmf refuses to write it: not a file a user can have
        path.unlink(missing_ok=True)
        reject()


def _raised_by_tool(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is in nwb_subspace."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def _check_error(err: BaseException, call: str, spec: dict) -> None:
    event(f"{call}: {type(err).__name__}: {' '.join(str(err).split()[:5])}")
    summary = "".join(traceback.format_exception(err)[-3:])
    assert isinstance(err, CLEAR_ERRORS), f"{call}: {type(err).__name__} for {spec}:\n{summary}"
    assert _raised_by_tool(err), f"{call}: error from library internals for {spec}:\n{summary}"
    message = str(err).strip()
    assert message and "\n" not in message, f"{call}: not a one-line message: {message!r}"


def _check_result(data, spec: dict) -> None:
    """A loaded session is self-consistent: shapes, finite counts, trials in range."""
    assert data.counts.ndim == 2 and data.counts.shape[1] == spec["n_units"]
    assert np.isfinite(data.counts).all() and (data.counts >= 0).all()
    assert np.isfinite(data.spectrogram.data).all()
    assert data.spectrogram.data.shape[0] == data.n_bins
    assert len(data.unit_ids) == data.n_units
    bins = data.trial_bins
    assert ((bins[:, 0] >= 0) & (bins[:, 0] <= bins[:, 1]) & (bins[:, 1] <= data.n_bins)).all()
    assert np.isfinite(data.trials.start).all() and (data.trials.start <= data.trials.stop).all()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec=sessions())
def test_malformed_session_gives_result_or_clear_error(spec):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "session.nwb"
        _write(path, spec)
        digest, listing = _sha256(path), sorted(p.name for p in folder.iterdir())
        for call, func in (("load_session_data", load_session_data), ("describe_file", None)):
            try:
                if func is None:
                    text = describe_file(path)
                    assert isinstance(text, str) and str(path) in text
                else:
                    _check_result(func(path), spec)
                event(f"{call}: returned")
            except AssertionError:
                raise
            except Exception as err:
                _check_error(err, call, spec)
            assert _sha256(path) == digest, f"{call} changed the source for {spec}"
            assert sorted(p.name for p in folder.iterdir()) == listing, f"{call} left files"
