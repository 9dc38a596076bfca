"""Figures of the HTML report that ``plots.py`` and ``plots_circuit.py`` do not draw.

Every function draws from results already stored in a file (no fitting), writes one PNG with
the Agg backend and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nwb_subspace.results import (  # noqa: E402
    FittedModel,
    ResultSet,
    SiteSubspaceResult,
    SpectrogramResult,
)

__all__ = [
    "best_units",
    "scored_cnn",
    "site_tiling",
    "plot_loss_curves",
    "plot_model_scores",
    "plot_site_subspace",
    "plot_spectrogram",
]

DPI = 90
MODEL_COLOURS = {"cnn": "tab:blue", "ln": "tab:orange", "subspace": "tab:green"}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_spectrogram(spec: SpectrogramResult, path: str | Path, *, seconds: float = 10.0) -> Path:
    """The first ``seconds`` of a spectrogram (frequency on a log axis, in kHz).

    Parameters
    ----------
    spec : SpectrogramResult
    path : str or Path
        PNG to write.
    seconds : float, default 10
        Length of the excerpt shown (the whole spectrogram when shorter).

    Returns
    -------
    Path
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0; got {seconds!r}")
    n = min(spec.data.shape[0], max(1, int(round(seconds * spec.rate))))
    t = spec.starting_time + np.arange(n) / spec.rate
    fig, ax = plt.subplots(figsize=(9, 2.8))
    mesh = ax.pcolormesh(
        t, spec.frequencies / 1e3, np.asarray(spec.data[:n], float).T, shading="nearest"
    )
    ax.set_yscale("log")
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("frequency (kHz)")
    ax.set_title(f"spectrogram '{spec.name}': first {n / spec.rate:.1f} s", fontsize=10)
    fig.colorbar(mesh, ax=ax, label="compressed energy")
    fig.tight_layout()
    return _save(fig, path)


def _score_by_row(model: FittedModel, field: str) -> dict[int, float]:
    values = np.asarray(getattr(model.scores, field), dtype=float)
    return dict(zip(model.unit_rows.tolist(), values.tolist(), strict=True))


def plot_model_scores(models: Sequence[FittedModel], path: str | Path) -> Path:
    """Per-unit validation scores of the scored models.

    Left: noise-corrected correlation of every other model against the CNN's (one dot per
    unit, matched by units-table row; the diagonal marks equal scores). Right: explained
    variance per model as box plots with the units as dots.

    Parameters
    ----------
    models : sequence of FittedModel
        Models with ``scores``; one must be a CNN.
    path : str or Path

    Returns
    -------
    Path
    """
    scored = [m for m in models if m.scores is not None]
    cnn = next((m for m in scored if m.kind == "cnn"), None)
    if cnn is None:
        raise ValueError("no scored CNN among the models; the score figure needs one")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    ref = _score_by_row(cnn, "noise_corrected_correlation")
    others = [m for m in scored if m is not cnn]
    finite = [v for v in ref.values() if np.isfinite(v)]
    for m in others:
        mine = _score_by_row(m, "noise_corrected_correlation")
        rows = sorted(set(ref) & set(mine))
        x = np.array([ref[r] for r in rows])
        y = np.array([mine[r] for r in rows])
        finite += [v for v in y if np.isfinite(v)]
        ax1.plot(x, y, "o", ms=5, alpha=0.8, color=MODEL_COLOURS.get(m.kind), label=m.name)
    if not others:
        vals = np.array(list(ref.values()))
        ax1.plot(np.arange(vals.size), vals, "o", color=MODEL_COLOURS["cnn"], label=cnn.name)
        ax1.set_xlabel("unit (sorted by row)")
        ax1.set_ylabel(f"{cnn.name} noise-corrected r")
    else:
        lo = min([0.0, *finite]) if finite else 0.0
        hi = max([1.0, *finite]) if finite else 1.0
        ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax1.set_xlabel(f"{cnn.name} noise-corrected r")
        ax1.set_ylabel("other model's noise-corrected r")
    ax1.legend(fontsize=8)
    ax1.set_title("per-unit noise-corrected correlation", fontsize=10)
    data, labels = [], []
    for m in scored:
        ev = np.asarray(m.scores.explained_variance, dtype=float)
        data.append(ev[np.isfinite(ev)])
        labels.append(m.name)
    ax2.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, (values, m) in enumerate(zip(data, scored, strict=True), start=1):
        jitter = rng.uniform(-0.15, 0.15, values.size)
        ax2.plot(i + jitter, values, "o", ms=4, alpha=0.7, color=MODEL_COLOURS.get(m.kind))
    ax2.set_xticks(range(1, len(labels) + 1), labels)
    ax2.set_ylabel("explained variance (validation PSTH)")
    ax2.set_title("explained variance per model", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_loss_curves(models: Sequence[FittedModel], path: str | Path) -> Path:
    """Training and holdout loss per epoch of every model that stored its curves.

    Raises
    ------
    ValueError
        When no model stored a loss curve.
    """
    curves = [m for m in models if m.training.training_loss is not None]
    if not curves:
        raise ValueError("no model stored a loss curve")
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.8), squeeze=False)
    for ax, m in zip(axes[0], curves, strict=True):
        train = np.asarray(m.training.training_loss, dtype=float)
        ax.plot(np.arange(1, train.size + 1), train, label="training")
        if m.training.validation_loss is not None:
            hold = np.asarray(m.training.validation_loss, dtype=float)
            ax.plot(np.arange(1, hold.size + 1), hold, label="holdout")
        ax.set_xlabel("epoch (both stages)")
        ax.set_title(f"{m.name} ({m.training.loss})", fontsize=9)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("loss")
    fig.tight_layout()
    return _save(fig, path)


def plot_site_subspace(site: SiteSubspaceResult, path: str | Path, *, n_pcs: int = 3) -> Path:
    """A site's first pooled PCs and each unit's dSTRF variance fraction in the site subspace.

    Parameters
    ----------
    site : SiteSubspaceResult
    path : str or Path
    n_pcs : int, default 3
        Site PCs shown (at most the number stored).

    Returns
    -------
    Path
    """
    comps = np.asarray(site.components, dtype=float)
    k = max(1, min(n_pcs, comps.shape[0]))
    fig, axes = plt.subplots(1, k + 1, figsize=(2.6 * k + 4.5, 2.9), squeeze=False)
    khz = np.asarray(site.frequencies) / 1e3
    lags_ms = np.asarray(site.lags_s) * 1e3
    for i in range(k):
        ax = axes[0, i]
        img = comps[i]
        lim = float(np.nanmax(np.abs(img))) or 1.0
        ax.pcolormesh(lags_ms, khz, img, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
        ax.set_yscale("log")
        ax.invert_xaxis()
        evr = site.explained_variance_ratio[i] if i < len(site.explained_variance_ratio) else np.nan
        ax.set_title(f"site PC{i + 1}" + (f" ({evr:.0%})" if np.isfinite(evr) else ""), fontsize=9)
        ax.set_xlabel("lag (ms)")
    axes[0, 0].set_ylabel("frequency (kHz)")
    ax = axes[0, k]
    x = np.arange(site.unit_rows.size)
    ax.bar(x, site.variance_fraction, color="tab:blue", label="unit")
    ax.plot(x, site.null_mean, "k_", ms=12, mew=2, label="null mean")
    ax.set_xticks(x, [str(r) for r in site.unit_rows], fontsize=7, rotation=90)
    ax.set_xlabel("unit row")
    ax.set_ylabel("variance fraction in site subspace")
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=7, ncol=2, loc="upper center")
    fig.suptitle(
        f"site {site.site}: dimensionality {site.dimensionality}, {site.unit_rows.size} units",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# What to draw: selections from a stored run


def scored_cnn(results: ResultSet) -> FittedModel | None:
    """The first CNN of a run that has validation scores (None if there is none)."""
    return next((m for m in results.models if m.kind == "cnn" and m.scores is not None), None)


def best_units(results: ResultSet, n: int = 3) -> list[int]:
    """Units-table rows of the ``n`` units with tuning subspaces and the best CNN scores.

    Units are ranked by the CNN's noise-corrected correlation (NaN last); without a scored
    CNN, the first ``n`` units with a tuning subspace are returned.
    """
    if not results.subspaces:
        return []
    rows = results.subspaces[0].unit_rows.tolist()
    cnn = scored_cnn(results)
    if cnn is None:
        return rows[:n]
    score = dict(
        zip(
            cnn.unit_rows.tolist(),
            np.asarray(cnn.scores.noise_corrected_correlation, float).tolist(),
            strict=True,
        )
    )

    def key(r: int) -> float:
        v = score.get(r, np.nan)
        return -v if np.isfinite(v) else np.inf

    return sorted(rows, key=key)[:n]


def site_tiling(results: ResultSet, site: SiteSubspaceResult):
    """The tiling map of a site, from the SRFs stored with it or redrawn from stored data.

    With ``site.srfs`` stored, :func:`nwb_subspace.site.tiling.tiling_from_stored` rebuilds the
    regions exactly as the analysis made them. Otherwise every unit's SRF on site PCs 1-2 is
    recomputed from the stored spectrogram and the stored CNN's prediction (no fitting). The
    verdict and p-value come from the stored site statistics (``tiling*`` rows) when present.

    Returns
    -------
    tiling.TilingResult or None
        None when the site has fewer than two dimensions or the data to draw it are missing.
    """
    from nwb_subspace.models.training import predict
    from nwb_subspace.site.tiling import tiling, tiling_from_stored

    stat_rows = [row for stats in results.site_statistics for row in stats.rows]
    stored = getattr(site, "srfs", None)
    if stored is not None and stored.unit_rows.size:
        return tiling_from_stored(site, stat_rows)
    cnn = scored_cnn(results)
    if site.dimensionality < 2 or len(site.components) < 2 or cnn is None:
        return None
    if not results.spectrograms or not set(site.unit_rows.tolist()) <= set(cnn.unit_rows.tolist()):
        return None
    sub = results.config.get("subspace", {}) if isinstance(results.config, dict) else {}
    spec = results.spectrograms[0]
    col = {r: i for i, r in enumerate(cnn.unit_rows.tolist())}
    pred = predict(cnn.module, spec.data)[:, [col[r] for r in site.unit_rows.tolist()]]
    result = tiling(
        site,
        spec.data,
        prediction=pred,
        rate=spec.rate,
        n_bins=int(sub.get("srf_bins", 20)),
        min_occupancy=int(sub.get("min_occupancy", 10)),
        high_activity_threshold=float(sub.get("high_activity_threshold", 0.5)),
        n_shifts=1,
    )
    result.notes.append("map recomputed from the stored spectrogram and CNN prediction")
    result.verdict, result.p_value = "map only (no stored tiling test)", float("nan")
    rows = [
        r
        for r in stat_rows
        if str(r["site"]) == site.site and str(r["statistic"]).startswith("tiling")
    ]
    if rows:
        result.verdict, result.p_value = str(rows[0]["verdict"]), float(rows[0]["p_value"])
    return result
