"""Figures: dSTRF principal components and subspace receptive fields (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nwb_subspace.results import SubspaceRFs, TuningSubspaces  # noqa: E402
from nwb_subspace.subspace.srf import normalised_map  # noqa: E402

__all__ = ["plot_dstrf_pcs", "plot_srf"]


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
    m = np.asarray(srfs.response_map[row], dtype=float)
    ex, ey = srfs.edges_x[row], srfs.edges_y[row]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
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
