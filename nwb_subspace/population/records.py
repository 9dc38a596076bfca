"""What the population summary takes from one stored run (no file access here).

:func:`nwb_subspace.io.stored_run.read_stored_run` fills a :class:`StoredRun` from a result
file's tables; :mod:`nwb_subspace.population.tables` turns it into the population tables'
rows. Models are never rebuilt: only their stored validation scores are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nwb_subspace.results import STATISTIC_FIELDS, SiteSubspaceResult, SubspaceRFs, TuningSubspaces

__all__ = ["SCORE_COLUMNS", "SCORED_MODELS", "UNIT_INFO_COLUMNS", "StoredRun"]

#: Models whose scores the population tables use (the names the pipeline stores them under).
SCORED_MODELS = ("ln", "cnn", "subspace")
#: Columns of :attr:`StoredRun.units`.
UNIT_INFO_COLUMNS = (
    "unit_row", "unit_id", "site", "cell_type", "layer", "depth_um", "depth_below_l34_um",
)  # fmt: skip
#: Columns of each :attr:`StoredRun.scores` table.
SCORE_COLUMNS = (
    "unit_row", "correlation", "noise_floor", "noise_corrected_correlation",
    "explained_variance",
)  # fmt: skip


@dataclass
class StoredRun:
    """The stored tables of one run of one session, as the population summary needs them.

    Attributes
    ----------
    session : str
        Session name (unless given, the file's name without ``.nwb`` / ``.nwb.zarr``).
    file : str
        Path or URL of the result file, as given.
    run : str
        Name of the stored run.
    config : dict
        The run's settings (its ``config_json``).
    software_version : str
        nwb-subspace version that wrote the run.
    created : str
        When the run was stored (ISO 8601).
    units : DataFrame
        One row per units-table row, columns :data:`UNIT_INFO_COLUMNS`.
    scores : dict of str -> DataFrame
        Model name (``"ln"``, ``"cnn"``, ``"subspace"``; those stored) -> validation scores,
        columns :data:`SCORE_COLUMNS`.
    tuning : TuningSubspaces or None
        Per-unit tuning subspaces.
    srfs : list of SubspaceRFs
        The run's own-subspace SRF tables.
    site_subspaces : list of SiteSubspaceResult
        One per site with a fitted site subspace.
    statistics : DataFrame
        Every site statistics row (:data:`~nwb_subspace.results.STATISTIC_FIELDS`).
    n_lags : int or None
        Model lags (dSTRF width) of the run's CNN; None when unknown.
    label_source : str
        Where the units' site names came from, in words.
    """

    session: str
    file: str
    run: str
    config: dict
    software_version: str = ""
    created: str = ""
    units: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=UNIT_INFO_COLUMNS))
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)
    tuning: TuningSubspaces | None = None
    srfs: list[SubspaceRFs] = field(default_factory=list)
    site_subspaces: list[SiteSubspaceResult] = field(default_factory=list)
    statistics: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(STATISTIC_FIELDS))
    )
    n_lags: int | None = None
    label_source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.session, str) or not self.session:
            raise ValueError(f"session must be a non-empty str; got {self.session!r}")
        if not isinstance(self.config, dict):
            raise TypeError(f"config must be a dict; got {type(self.config).__name__}")
        missing = [c for c in UNIT_INFO_COLUMNS if c not in self.units.columns]
        if missing:
            raise ValueError(f"units lacks columns {missing}; give {list(UNIT_INFO_COLUMNS)}")
        rows = np.asarray(self.units["unit_row"], dtype=np.int64)
        if not np.array_equal(rows, np.arange(rows.size)):
            raise ValueError("units must hold every units-table row once, in order (0, 1, ...)")
        for name, table in self.scores.items():
            lacking = [c for c in SCORE_COLUMNS if c not in table.columns]
            if lacking:
                raise ValueError(f"scores[{name!r}] lacks columns {lacking}")

    @property
    def n_units(self) -> int:
        """Rows of the session's units table."""
        return len(self.units)
