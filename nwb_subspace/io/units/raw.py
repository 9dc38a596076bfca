"""The raw-voltage path of :func:`~nwb_subspace.io.units.reader.read_units`.

A SpikeInterface ``SortingAnalyzer`` on (the first ``max_raw_s`` seconds of) a recording,
high-pass filtered, with ``random_spikes``, ``templates``, ``template_metrics`` and
``unit_locations`` (monopolar triangulation). Units with too few spikes, or whose template
is below the noise, are left to the ``waveform_mean`` path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nwb_subspace.io.units.measure import (
    MeasuredWaveforms,
    main_channel_waveforms,
    make_probe,
    record_warning,
    trough_to_peak_si,
)
from nwb_subspace.units.celltypes import CellTypeParams, is_positive_going

__all__ = ["raw_waveforms"]


# The SpikeInterface analyzer set-up, extension computation and read-back in order, each
# long: step a few lines; split, the analyzer and its options would be passed around (88 lines)
def raw_waveforms(
    sorting: Any,
    recording: Any,
    unit_index: np.ndarray,
    params: CellTypeParams,
    job_kwargs: dict,
    options: dict,
    ms_window: tuple[float, float],
    messages: list[str],
) -> MeasuredWaveforms | None:
    """Templates, trough-to-peak and locations from raw voltage (a SortingAnalyzer)."""
    from spikeinterface.core import create_sorting_analyzer

    if recording.get_num_segments() != 1:
        raise ValueError(
            f"the recording has {recording.get_num_segments()} segments; read_units needs one "
            "(pass recording.select_segments([0]))"
        )
    has_probe = recording.has_probe()
    if not has_probe:
        recording = _with_placeholder_probe(recording, options, messages)
    fs = recording.sampling_frequency
    n_frames = recording.get_num_samples(0)
    if options["max_raw_s"] is not None:
        n_frames = min(n_frames, int(options["max_raw_s"] * fs))
    rec = recording.frame_slice(0, n_frames)
    sort = sorting.frame_slice(0, n_frames)
    if options["highpass_hz"]:
        from spikeinterface.preprocessing import highpass_filter

        rec = highpass_filter(rec, freq_min=float(options["highpass_hz"]), dtype="float32")
    counts = sort.count_num_spikes_per_unit(outputs="array")
    ok = counts >= options["min_spikes"]
    short = unit_index[~ok]
    if short.size:
        record_warning(
            messages,
            f"{short.size} unit(s) have fewer than {options['min_spikes']} spikes in the "
            f"{n_frames / fs:.1f} s of raw data (unit ids {sorting.unit_ids[~ok][:5].tolist()}"
            f"{'...' if short.size > 5 else ''}); their waveforms come from waveform_mean if stored",
        )
    if not ok.any():
        return None
    keep_ids = sort.unit_ids[ok]
    sort = sort.select_units(keep_ids)
    analyzer = create_sorting_analyzer(
        sort, rec, format="memory", sparse=True, return_in_uV=True, seed=0, **job_kwargs
    )
    ms_before, ms_after = ms_window
    analyzer.compute(
        {
            "random_spikes": {"max_spikes_per_unit": options["max_spikes_per_unit"], "seed": 0},
            "templates": {"ms_before": ms_before, "ms_after": ms_after},
        },
        **job_kwargs,
    )
    # Dense (n, samples, channels) in µV; channels outside a unit's sparsity are zero.
    templates = analyzer.get_extension("templates").get_templates(operator="average")
    main, wf = main_channel_waveforms(templates)
    ttp = trough_to_peak_si(wf, fs, params.upsample)
    # SpikeInterface's own metric (seconds!) where it measures the same thing: negative-going
    # units whose main channel is ours.
    analyzer.compute("template_metrics", metric_names=["peak_to_trough_duration"])
    si_s = analyzer.get_extension("template_metrics").get_data()["peak_to_trough_duration"]
    si_ms = np.asarray(si_s, dtype=float) * 1e3
    same = analyzer.get_main_channels(outputs="index") == main
    negative = np.array([not is_positive_going(w) for w in wf])
    use_si = same & negative & np.isfinite(si_ms)
    ttp[use_si] = si_ms[use_si]
    weak = _below_noise(rec, wf, main, options["min_snr"])
    if weak.any():
        record_warning(
            messages,
            f"{int(weak.sum())} unit(s) are below the noise in the raw data (peak-to-peak "
            f"< {options['min_snr']:g} x noise; unit ids {keep_ids[weak][:5].tolist()}); their "
            "waveforms come from waveform_mean if stored",
        )
    loc = np.full((len(keep_ids), 2), np.nan)
    if has_probe:
        analyzer.compute("unit_locations", method="monopolar_triangulation")
        loc = np.asarray(analyzer.get_extension("unit_locations").get_data())[:, :2]
    good = ~weak
    if not good.any():
        return None
    if options["nwb"] and options["channel_rows"] is not None:
        main = np.where(main >= 0, options["channel_rows"][np.maximum(main, 0)], -1)
    return MeasuredWaveforms(
        unit_index[ok][good], wf[good], fs, ttp[good], main[good], loc[good], "raw"
    )


def _with_placeholder_probe(recording: Any, options: dict, messages: list[str]) -> Any:
    """A copy of an NWB file's probe-less recording with channels 10 mm apart (so that
    SpikeInterface runs; locations are then not computed). Other recordings must have a probe."""
    if not options["nwb"]:
        raise ValueError(
            "the recording has no probe (channel locations); attach one with "
            "recording.set_probe(probe) (probeinterface) before calling read_units"
        )
    record_warning(
        messages,
        "the electrodes table has no rel_x/rel_y, so the raw recording has no probe: "
        "cell types from raw data, but unit locations unknown",
    )
    n_ch = recording.get_num_channels()
    recording = recording.clone()
    recording.set_probe(make_probe(np.column_stack([np.zeros(n_ch), np.arange(n_ch) * 1e4])))
    return recording


def _below_noise(rec: Any, wf: np.ndarray, main: np.ndarray, min_snr: float) -> np.ndarray:
    """Units whose main-channel peak-to-peak is below ``min_snr`` x the channel's noise (MAD):
    too small to see above the noise, their shapes mean nothing."""
    from spikeinterface.core import get_noise_levels

    noise = get_noise_levels(
        rec,
        return_in_uV=True,
        method="mad",
        random_slices_kwargs={"num_chunks_per_segment": 5, "chunk_size": 10000, "seed": 0},
    )
    snr = np.ptp(wf, axis=1) / noise[np.maximum(main, 0)]
    return snr < min_snr
