"""Ground truth of a simulated session, saved beside the NWB file as ``<stem>.truth.npz``.

The sidecar is a plain ``.npz`` (no pickle): numeric and string arrays, plus ``meta``, a
JSON string with the scalars, the configuration and the layer boundaries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.simulate.neurons import population_drive, project

__all__ = ["GroundTruth", "load_truth", "truth_path_for"]

_FORMAT = "nwb-subspace-truth/1"


def truth_path_for(nwb_path: str | Path) -> Path:
    """Sidecar path of an NWB file: ``dir/<stem>.truth.npz``."""
    p = Path(nwb_path)
    return p.with_name(p.stem + ".truth.npz")


@dataclass
class GroundTruth:
    """What the simulation knows (see the field notes; U units, F channels, D lags).

    Per unit
    --------
    unit_names : (U,) str
        Same order and names as ``units.unit_name`` in the NWB file.
    k : (U,) int
        Tuning dimensionality (1-6).
    filters : (U, 6, F, D) float64
        Filters in the simulation's spectrogram space; rows ``>= k`` are zero. Lag ``l``
        multiplies the spectrogram ``l`` bins back (lag 0 = the current bin). Scaled so the
        projections are white (zero mean after ``offsets``, identity covariance) over the
        session.
    offsets : (U, 6) float64
        Subtracted from the projections.
    nl_kind : (U,) str
        ``"hill"``, ``"bowl"`` or ``"monotonic"``.
    nl_centre : (U, 6), nl_width : (U,), nl_sign : (U, 6), nl_power : (U,)
        Nonlinearity parameters (see :mod:`nwb_subspace.simulate.neurons`).
    base_rate, amplitude : (U,)
        ``rate = base_rate + amplitude * g(z) ** nl_power`` in spikes/s (before the
        refractory period).
    mean_rate : (U,)
        Mean of that rate over the session.
    cell_type : (U,) str
        ``"narrow"`` or ``"broad"``.
    trough_to_peak_s : (U,)
        Of the template's main channel, in seconds.
    position_um : (U, 3)
        (x, rel_y, z) of the unit in µm; ``rel_y`` is the NWB electrodes frame (tip = 0,
        larger = closer to the surface).
    depth_um : (U,)
        Depth below the L3/4 boundary in µm (positive = deeper) = ``l34_rel_y - rel_y``.
    layer : (U,) str
        ``"13"``, ``"44"`` or ``"56"``.
    main_electrode : (U,) int
        Row of the electrodes table with the largest template.
    site_coords : (U, 6, m)
        Shared mode: ``filters[u] = site_coords[u] @ site_basis`` (flattened); NaN otherwise.
    site_centre : (U, m)
        Hill/bowl centre in the whitened site coordinates (shared mode); NaN otherwise.
    site : (U,) str
        Recording site (electrode group: ``"shank0"``, ``"shank1"``, ...) of each unit.
        Sidecars written before multi-site sessions lack it: every unit is then ``"shank0"``.
    true_breadth : (U,) float64
        True SRF breadth: the level-set fraction (level 0.5 above the map's 10th percentile)
        of the map of the unit's noise-free rate over its first two true dimensions, on the
        pipeline's reference grid over the presented bins
        (:func:`nwb_subspace.simulate.breadth.true_breadth`). NaN when unknown: sidecars
        written before it existed.

    Per site
    --------
    site_basis : (m, F, D), or (S, m, F, D) for a session of S > 1 sites
        Orthonormal (flattened) site basis, one per site in :attr:`site_names` order
        (:meth:`basis_of_site` gives one site's). In ``"independent"`` mode it is drawn the
        same way but unused by the units.
    frequencies : (F,)
        Spectrogram centre frequencies in Hz.
    meta : dict
        ``seed``, ``preset``, ``config`` (every setting), ``spectrogram`` settings,
        ``audio_fs``, ``bin_s``, ``n_lags``, ``subspace``, ``tiling``, ``refractory_s``,
        ``layer_boundaries`` (name -> rel_y µm), ``l34_rel_y``, ``nwb_file``; sessions of
        several sites also ``n_sites``, ``sites`` (names) and ``shank_spacing_um``.
    """

    unit_names: np.ndarray
    k: np.ndarray
    filters: np.ndarray
    offsets: np.ndarray
    nl_kind: np.ndarray
    nl_centre: np.ndarray
    nl_width: np.ndarray
    nl_sign: np.ndarray
    nl_power: np.ndarray
    base_rate: np.ndarray
    amplitude: np.ndarray
    mean_rate: np.ndarray
    cell_type: np.ndarray
    trough_to_peak_s: np.ndarray
    position_um: np.ndarray
    depth_um: np.ndarray
    layer: np.ndarray
    main_electrode: np.ndarray
    site_coords: np.ndarray
    site_centre: np.ndarray
    site_basis: np.ndarray
    frequencies: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    site: np.ndarray | None = None
    true_breadth: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.site is None:
            self.site = np.full(np.asarray(self.k).size, "shank0", dtype="<U6")
        self.site = np.asarray(self.site).astype(str)
        if self.site.shape != np.asarray(self.k).shape:
            raise ValueError(
                f"site must give one label per unit ({np.asarray(self.k).size}), got shape "
                f"{self.site.shape}"
            )
        n = np.asarray(self.k).size
        if self.true_breadth is None:
            self.true_breadth = np.full(n, np.nan)
        self.true_breadth = np.asarray(self.true_breadth, dtype=np.float64)
        if self.true_breadth.shape != (n,):
            raise ValueError(
                f"true_breadth must give one value per unit ({n}), got shape "
                f"{self.true_breadth.shape}"
            )

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.k.size)

    @property
    def site_names(self) -> list[str]:
        """The session's sites in order of their first unit (``["shank0", ...]``)."""
        _, first = np.unique(self.site, return_index=True)
        return [str(self.site[i]) for i in sorted(first)]

    @property
    def n_sites(self) -> int:
        """Number of recording sites."""
        return len(self.site_names)

    def basis_of_site(self, site: str) -> np.ndarray:
        """Orthonormal (flattened) basis of one site, shape (m, F, D)."""
        names = self.site_names
        if site not in names:
            raise ValueError(f"no site {site!r}; the session's sites are {names}")
        if self.site_basis.ndim == 3:
            return self.site_basis
        return self.site_basis[names.index(site)]

    @property
    def layer_boundaries(self) -> dict[str, float]:
        """Boundary name -> ``rel_y`` (µm) of the site."""
        return dict(self.meta["layer_boundaries"])

    def unit_filters(self, unit: int) -> np.ndarray:
        """The ``k`` true filters of one unit, shape (k, F, D)."""
        return self.filters[unit, : int(self.k[unit])]

    def projections(self, spectrogram: np.ndarray, unit: int) -> np.ndarray:
        """Whitened projections ``z`` of one unit, shape (n_bins, k)."""
        kk = int(self.k[unit])
        return project(spectrogram, self.unit_filters(unit)) - self.offsets[unit, :kk]

    def rate(self, spectrogram: np.ndarray) -> np.ndarray:
        """True rate (spikes/s) of every unit, exactly as the simulation computed it.

        Parameters
        ----------
        spectrogram : ndarray, shape (n_bins, F)
            ``compute_spectrogram(...).data`` with ``meta["spectrogram"]`` settings.

        Returns
        -------
        ndarray of float64, shape (n_bins, U)
        """
        spectrogram = np.asarray(spectrogram)
        if spectrogram.ndim != 2 or spectrogram.shape[1] != self.filters.shape[2]:
            raise ValueError(
                f"spectrogram must have shape (n_bins, {self.filters.shape[2]}), got "
                f"{spectrogram.shape}; compute it with the settings in meta['spectrogram']"
            )
        drive = population_drive(
            spectrogram,
            self.filters,
            self.k,
            self.offsets,
            self.nl_kind,
            self.nl_centre,
            self.nl_width,
            self.nl_sign,
            self.nl_power,
        )
        return self.base_rate + self.amplitude * drive

    def save(self, path: str | Path) -> Path:
        """Write the sidecar (atomically: temp file, then rename). Returns the path."""
        path = Path(path)
        arrays = {
            f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "meta"
        }
        meta = dict(self.meta, format=_FORMAT)
        tmp = path.with_name(path.name + ".tmp.npz")
        try:
            np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read a sidecar written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no ground-truth file {path}; simulate_session writes one")
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a {_FORMAT} file (format={meta.get('format')!r})")
            values = {
                f.name: npz[f.name]
                for f in fields(cls)
                if f.name != "meta" and f.name in npz.files  # old: no "site", "true_breadth"
            }
        return cls(meta=meta, **values)


def load_truth(path: str | Path) -> GroundTruth:
    """Load the ground truth of a simulated session.

    ``path`` may be the sidecar itself or the NWB file (its ``<stem>.truth.npz`` is used).
    """
    path = Path(path)
    if path.suffix == ".nwb":
        path = truth_path_for(path)
    return GroundTruth.load(path)
