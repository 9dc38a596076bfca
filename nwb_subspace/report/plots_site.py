"""Site figures: the tiling map and SRF breadth by cell type and layer (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_breadth_groups", "plot_tiling"]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tiling(tiling, path: str | Path) -> Path:
    """Each unit's high-activity region as a coloured contour on the site plane.

    Parameters
    ----------
    tiling : TilingResult
        With at least one region (``tiling.regions``).
    path : str or Path
        PNG to write.

    Returns
    -------
    Path
    """
    regions = tiling.regions
    if regions is None or len(regions) == 0:
        raise ValueError(
            f"site {tiling.site!r} has no high-activity regions to plot ({tiling.verdict})"
        )
    b = regions.shape[1]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, len(regions), endpoint=False))
    coverage = regions.sum(0).astype(float)
    ax.imshow(coverage.T, origin="lower", cmap="Greys", alpha=0.4, extent=(0, b, 0, b))
    for region, colour, row in zip(regions, colours, tiling.unit_rows, strict=True):
        if region.sum() == 0:
            continue
        ax.contour(
            np.arange(b) + 0.5,
            np.arange(b) + 0.5,
            region.T.astype(float),
            levels=[0.5],
            colors=[colour],
            linewidths=1.5,
        )
        ix, iy = np.argwhere(region).mean(0) + 0.5
        ax.text(ix, iy, str(row), color=colour, fontsize=7, ha="center", va="center")
    ax.set_xlim(0, b)
    ax.set_ylim(0, b)
    ax.set_xlabel("site PC 1 (grid bin)")
    ax.set_ylabel("site PC 2 (grid bin)")
    p = tiling.p_value
    ax.set_title(
        f"site {tiling.site}: {tiling.verdict}" + (f" (p={p:.3g})" if np.isfinite(p) else "")
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_breadth_groups(
    breadth: Sequence[float],
    cell_type: Sequence[str],
    layer: Sequence[str],
    path: str | Path,
    *,
    seed: int = 0,
    ylabel: str = "breadth (high-activity bins)",
) -> Path:
    """SRF breadth by cell type and by layer: box plots with the units as jittered dots.

    Unknown cell types/layers get their own ``unknown`` box (they are shown, not dropped).
    ``seed`` fixes the jitter; ``ylabel`` names the breadth measure plotted.
    """
    breadth = np.asarray(breadth, dtype=float)
    if breadth.size == 0:
        raise ValueError("no units to plot; give at least one breadth value")
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, labels, title in ((axes[0], cell_type, "cell type"), (axes[1], layer, "layer")):
        labels = np.array([str(x) if str(x).strip() else "unknown" for x in labels])
        if labels.size != breadth.size:
            raise ValueError(f"{title}: {labels.size} labels for {breadth.size} units; align them")
        names = sorted(set(labels))
        data = [breadth[(labels == g) & np.isfinite(breadth)] for g in names]
        ax.boxplot(data, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.plot(i + rng.uniform(-0.15, 0.15, values.size), values, "o", ms=4, alpha=0.7)
        ax.set_xticks(
            range(1, len(names) + 1),
            [f"{g}\n(n={d.size})" for g, d in zip(names, data, strict=True)],
        )
        ax.set_title(f"SRF breadth by {title}")
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    return _save(fig, path)
