"""Figures: dSTRF principal components and subspace receptive fields (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nwb_subspace.results import SubspaceRFs, TuningSubspaces  # noqa: E402
from nwb_subspace.subspace.srf import (  # noqa: E402
    REFERENCE_SHAPE_THRESHOLD,
    normalised_map,
    shape_asymmetry,
    shape_class,
)

__all__ = ["plot_dstrf_pcs", "plot_srf", "plot_srf_pairs", "srf_row_summary"]


def plot_dstrf_pcs(
    tuning: TuningSubspaces, unit: int, path: str | Path, *, n_pcs: int | None = None
) -> Path:
    """Spectro-temporal images of one unit's mean dSTRF and PCs (frequency in kHz, log axis).

    Parameters
    ----------
    tuning : TuningSubspaces
    unit : int
        Row index into ``tuning`` (not the units-table row).
    path : str or Path
        PNG (or any matplotlib format) to write.
    n_pcs : int, optional
        PCs shown (default: the unit's dimensionality, at least 1, at most 6).

    Returns
    -------
    Path
    """
    n = tuning.unit_rows.size
    if isinstance(unit, bool) or not isinstance(unit, int | np.integer) or not 0 <= unit < n:
        raise ValueError(f"unit must be a row index in [0, {n}); got {unit!r}")
    k = n_pcs or int(np.clip(tuning.dimensionality[unit], 1, 6))
    k = min(k, tuning.components.shape[1])
    lags_ms = tuning.lags_s * 1e3
    khz = tuning.frequencies / 1e3
    images = [("mean dSTRF", tuning.mean_dstrf[unit])]
    for i in range(k):
        evr = tuning.explained_variance_ratio[unit, i]
        images.append(
            (
                f"PC{i + 1} ({evr:.0%})" if np.isfinite(evr) else f"PC{i + 1}",
                tuning.components[unit, i],
            )
        )
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.8), squeeze=False)
    for ax, (title, img) in zip(axes[0], images, strict=True):
        lim = float(np.nanmax(np.abs(img))) or 1.0
        ax.pcolormesh(lags_ms, khz, img, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("lag (ms)")
    axes[0, 0].set_ylabel("frequency (kHz)")
    fig.suptitle(
        f"unit {int(tuning.unit_rows[unit])}: dimensionality {int(tuning.dimensionality[unit])}",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_srf(srfs: SubspaceRFs, row: int, path: str | Path) -> Path:
    """Heat map of one SRF row (spikes/s above spontaneous) with its high-activity contour.

    Parameters
    ----------
    srfs : SubspaceRFs
    row : int
        Row of ``srfs``.
    path : str or Path

    Returns
    -------
    Path
    """
    n = srfs.unit_rows.size
    if isinstance(row, bool) or not isinstance(row, int | np.integer) or not 0 <= row < n:
        raise ValueError(f"row must be in [0, {n}); got {row!r}")
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    _srf_panel(fig, ax, srfs, row)
    ax.set_title(
        f"unit {int(srfs.unit_rows[row])} ({srfs.response_source[row]}), "
        f"breadth {int(srfs.breadth[row])}",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def srf_row_summary(srfs: SubspaceRFs, row: int, alpha: float = 0.05) -> dict:
    """Breadth and shape of one SRF row, as the site step's group tests read them.

    Parameters
    ----------
    srfs : SubspaceRFs
    row : int
        Row of ``srfs``.
    alpha : float, default 0.05
        Level of the shape test (a measured map is hill or bowl only when its tuning curve
        departs from its best monotonic fit with ``p < alpha``).

    Returns
    -------
    dict
        ``pair`` (e.g. "PC1-PC2"), ``occupied`` (finite bins), ``breadth_bins`` (the old count:
        bins >= the threshold of the min-max normalised map), ``breadth_fraction`` (noise-aware
        fraction of the occupied bins; None for results stored before it), ``shape_index``
        (signed asymmetry), ``shape_p`` (NaN: no test, e.g. a model map) and ``shape_class``.
        Results stored before the shape test use the old rule (fixed 0.35 on the normalised
        map's marginals) and ``shape_p`` NaN.
    """
    n = srfs.unit_rows.size
    if isinstance(row, bool) or not isinstance(row, int | np.integer) or not 0 <= row < n:
        raise ValueError(f"row must be in [0, {n}); got {row!r}")
    i, j = (int(x) for x in srfs.dimensions[row])
    m = np.asarray(srfs.response_map[row], dtype=float)
    out = {
        "pair": f"PC{i + 1}-PC{j + 1}",
        "occupied": int(np.isfinite(m).sum()),
        "breadth_bins": int(srfs.breadth[row]),
        "breadth_fraction": (
            None if srfs.breadth_fraction is None else float(srfs.breadth_fraction[row])
        ),
    }
    if srfs.curve_asymmetry is not None:
        index = float(srfs.curve_asymmetry[row])
        p = np.nan if srfs.shape_p_value is None else float(srfs.shape_p_value[row])
        t = REFERENCE_SHAPE_THRESHOLD
        if not np.isfinite(index):
            cls = "unknown"
        elif np.isfinite(p) and p >= alpha:
            cls = "monotonic"
        else:
            cls = "bowl" if index > t else "hill" if index < -t else "monotonic"
    else:
        asym, depth = shape_asymmetry(normalised_map(m))
        ok = np.isfinite(asym) & np.isfinite(depth)
        index = float(asym[np.argmax(np.where(ok, depth, -np.inf))]) if ok.any() else np.nan
        p, cls = np.nan, shape_class(asym, depth)
    out.update(shape_index=index, shape_p=p, shape_class=cls)
    return out


def _srf_panel(fig, ax, srfs: SubspaceRFs, row: int) -> None:
    m = np.asarray(srfs.response_map[row], dtype=float)
    ex, ey = srfs.edges_x[row], srfs.edges_y[row]
    mesh = ax.pcolormesh(ex, ey, m.T, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="spikes/s above spontaneous")
    norm = normalised_map(m)
    if np.isfinite(norm).any() and np.nanmax(norm) > srfs.high_activity_threshold:
        cx, cy = (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2
        ax.contour(
            cx, cy, np.nan_to_num(norm, nan=0.0).T, [srfs.high_activity_threshold], colors="w"
        )
    i, j = srfs.dimensions[row]
    ax.set_xlabel(f"projection on PC{i + 1}")
    ax.set_ylabel(f"projection on PC{j + 1}")
    s = srf_row_summary(srfs, row)
    if s["breadth_fraction"] is None:
        first = f"breadth {s['breadth_bins']} bins"
    else:
        first = f"breadth {s['breadth_fraction']:.2f} (old: {s['breadth_bins']} bins)"
    p = s["shape_p"]
    second = s["shape_class"] + (f", shape p={p:.2g}" if np.isfinite(p) else "")
    ax.set_title(f"{srfs.response_source[row]} {s['pair']}\n{first}\n{second}", fontsize=9)


def plot_srf_pairs(srfs: SubspaceRFs, rows: list[int], path: str | Path) -> Path:
    """One unit's SRFs on each stored dimension pair, with an SEM panel under measured maps.

    Parameters
    ----------
    srfs : SubspaceRFs
    rows : list of int
        Rows of ``srfs`` to draw side by side (e.g. one unit's PC1-PC2 and PC1-PC3 maps of one
        response source).
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        No rows, or a row outside the table.
    """
    if not rows:
        raise ValueError("give at least one SRF row to draw")
    n = srfs.unit_rows.size
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or not 0 <= r < n:
            raise ValueError(f"rows must be in [0, {n}); got {r!r}")
    sem = srfs.response_map_sem
    has_sem = sem is not None and any(np.isfinite(sem[r]).any() for r in rows)
    n_rows = 2 if has_sem else 1
    fig, axes = plt.subplots(
        n_rows, len(rows), figsize=(4.4 * len(rows), 3.9 * n_rows), squeeze=False
    )
    for c, r in enumerate(rows):
        _srf_panel(fig, axes[0, c], srfs, int(r))
        if not has_sem:
            continue
        ax = axes[1, c]
        e = np.asarray(sem[r], dtype=float)
        mesh = ax.pcolormesh(srfs.edges_x[r], srfs.edges_y[r], e.T, cmap="magma", shading="flat")
        fig.colorbar(mesh, ax=ax, label="SEM (spikes/s)")
        i, j = srfs.dimensions[r]
        ax.set_xlabel(f"projection on PC{i + 1}")
        ax.set_ylabel(f"projection on PC{j + 1}")
        ax.set_title(f"SEM of the {srfs.response_source[r]} map", fontsize=9)
    fig.suptitle(f"unit {int(srfs.unit_rows[rows[0]])}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
