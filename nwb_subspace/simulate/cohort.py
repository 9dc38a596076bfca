"""A population of simulated sessions.

:func:`simulate_population` writes ``n_sessions`` multi-site recordings
(:func:`~nwb_subspace.simulate.session.simulate_session` with ``n_sites`` shanks each) into one
folder, plus ``population_truth.csv``: one row per (session, site) saying which of the
paper's population claims the simulation built into that site. The site kinds vary across
sessions in a balanced design (:data:`KIND_DESIGN`), so that every claim can be checked both
where it holds and where it does not:

``subspace``
    ``"shared"``: a site's units combine filters of one site basis (neighbours share a
    subspace; every site draws its own basis). ``"independent"``: every unit draws its own
    filters with best frequencies over the whole channel range (``independent_bf = "whole
    range"``), so a site has no structure at all: same-site pairs are no more alike than
    pairs from different sites.
``tiling``
    ``"scattered"``: hill centres spread over the subspace (neighbours' high-activity regions
    tile it); ``"clustered"``: bunched around one point (they overlap).
``narrow_broader``
    Narrow-spiking units' high-activity regions (and, for independent units, spectral
    bandwidths) are :data:`BROADER_FACTOR` times broader (``narrow_tuning_factor``:
    :func:`~nwb_subspace.simulate.neurons.broaden_nonlinearity` of every kind), or as broad as
    the broad-spiking units' (factor 1). This is the design label; the table also gives the
    truth it produced: ``true_breadth_narrow`` and ``true_breadth_broad``, the mean true SRF
    breadth (``GroundTruth.true_breadth``) of the site's narrow and broad units (NaN for a
    site without units of that type).

All sites of one session share the session's kinds, but each site is its own independent
draw (own basis, best frequency, units, positions and waveforms) and all hear the session's
sounds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nwb_subspace.io.atomic import write_atomically
from nwb_subspace.simulate.presets import SimulationConfig, resolve_config
from nwb_subspace.simulate.session import simulate_session
from nwb_subspace.simulate.truth import load_truth, truth_path_for

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "BROADER_FACTOR",
    "KIND_DESIGN",
    "NOT_USED",
    "OPTIONAL_TRUTH_COLUMNS",
    "POPULATION_TRUTH_COLUMNS",
    "TRUTH_TABLE",
    "population_kinds",
    "read_population_truth",
    "session_seed",
    "simulate_population",
]

log = logging.getLogger(__name__)

#: File name of the truth table written beside the sessions.
TRUTH_TABLE = "population_truth.csv"

#: ``narrow_tuning_factor`` of sessions whose narrow units are broader (the simulator's default).
BROADER_FACTOR = 1.6

#: ``independent_bf`` of shared sites, which ignore the setting (a string pandas keeps).
NOT_USED = "not used"

#: Columns of the truth table, one row per (session, site), in order.
POPULATION_TRUTH_COLUMNS = (
    "session",
    "file",
    "site",
    "subspace",
    "independent_bf",
    "tiling",
    "narrow_broader",
    "narrow_tuning_factor",
    "narrow_modulation",
    "n_units",
    "seed",
    "preset",
    "true_breadth_narrow",
    "true_breadth_broad",
)

#: Columns of :data:`POPULATION_TRUTH_COLUMNS` that tables written before them lack (read as
#: NaN by :func:`read_population_truth`).
OPTIONAL_TRUTH_COLUMNS = ("true_breadth_narrow", "true_breadth_broad")

#: One block of the balanced design: session ``i`` gets ``KIND_DESIGN[i % 8]``. The 8 kinds
#: are the full 2 x 2 x 2 factorial; every prefix of 2 sessions has each level of each factor
#: once; the first 4 are balanced in every factor (tiling and narrow_broader go together
#: there: of the three, that pair is the one whose confounding matters least); 8 sessions
#: cross every factor with every other.
KIND_DESIGN: tuple[dict[str, Any], ...] = (
    {"subspace": "shared", "tiling": "clustered", "narrow_broader": True},
    {"subspace": "independent", "tiling": "scattered", "narrow_broader": False},
    {"subspace": "shared", "tiling": "scattered", "narrow_broader": False},
    {"subspace": "independent", "tiling": "clustered", "narrow_broader": True},
    {"subspace": "shared", "tiling": "clustered", "narrow_broader": False},
    {"subspace": "independent", "tiling": "scattered", "narrow_broader": True},
    {"subspace": "shared", "tiling": "scattered", "narrow_broader": True},
    {"subspace": "independent", "tiling": "clustered", "narrow_broader": False},
)

_KIND_KEYS = {
    "subspace",
    "tiling",
    "narrow_broader",
    "independent_bf",
    "narrow_tuning_factor",
    "narrow_modulation",
}


def population_kinds(n_sessions: int) -> list[dict[str, Any]]:
    """The balanced design's kinds of ``n_sessions`` sessions (:data:`KIND_DESIGN`, repeated)."""
    _check_count("n_sessions", n_sessions)
    return [dict(KIND_DESIGN[i % len(KIND_DESIGN)]) for i in range(n_sessions)]


def session_seed(seed: int, index: int) -> int:
    """Seed of session ``index`` of the population ``seed`` (independent of the population's
    size: the first sessions of a larger population are the same files)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] >> 1)


def _check_count(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _session_config(base: SimulationConfig, kind: Mapping[str, Any], i: int) -> SimulationConfig:
    """``base`` with one session's kinds (validated: say which session and key is wrong)."""
    if not isinstance(kind, Mapping):
        raise TypeError(f"kinds[{i}] must be a dict, got {type(kind).__name__}")
    unknown = sorted(set(kind) - _KIND_KEYS)
    missing = sorted({"subspace", "tiling", "narrow_broader"} - set(kind))
    if unknown or missing:
        raise ValueError(
            f"kinds[{i}]: unknown keys {unknown}, missing keys {missing}; a kind has "
            f"subspace, tiling, narrow_broader and optionally {sorted(_KIND_KEYS - set(missing))}"
        )
    broader = kind["narrow_broader"]
    if not isinstance(broader, bool | np.bool_):
        raise ValueError(f"kinds[{i}]['narrow_broader'] must be True or False, got {broader!r}")
    factor = float(kind.get("narrow_tuning_factor", BROADER_FACTOR if broader else 1.0))
    if bool(broader) != (factor > 1.0):
        raise ValueError(
            f"kinds[{i}]: narrow_broader={broader} contradicts narrow_tuning_factor={factor} "
            "(broader means a factor above 1)"
        )
    changes = {
        "subspace": kind["subspace"],
        "tiling": kind["tiling"],
        "narrow_tuning_factor": factor,
        "independent_bf": kind.get(
            "independent_bf", "whole range" if kind["subspace"] == "independent" else "site"
        ),
    }
    if "narrow_modulation" in kind:
        changes["narrow_modulation"] = float(kind["narrow_modulation"])
    try:
        return base.replace(**changes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"kinds[{i}]: {err}") from None


def _targets(folder: Path, n_sessions: int) -> list[Path]:
    paths = [folder / f"session_{i:02d}.nwb" for i in range(n_sessions)]
    return paths + [truth_path_for(p) for p in paths] + [folder / TRUTH_TABLE]


# long: checks, then one session after another, then the table (sequential on purpose)
def simulate_population(
    folder: str | os.PathLike,
    n_sessions: int,
    seed: int = 0,
    *,
    preset: str | SimulationConfig = "population",
    n_sites: int = 2,
    n_units: int | None = None,
    kinds: Sequence[Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    on_session: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Simulate a population of multi-site sessions with a truth table.

    Writes ``folder/session_{i:02d}.nwb`` (each with its ``.truth.npz`` sidecar) and
    ``folder/population_truth.csv`` (:data:`POPULATION_TRUTH_COLUMNS`, one row per session
    and site). Sessions are simulated one after another.

    Parameters
    ----------
    folder : path-like
        Output folder (created when missing).
    n_sessions : int
        Number of sessions (>= 2 for every claim to hold somewhere and fail somewhere else;
        8 for the full factorial of :data:`KIND_DESIGN`).
    seed : int, default 0
        Everything is deterministic from it; session ``i`` is simulated with
        :func:`session_seed` ``(seed, i)``.
    preset : str or SimulationConfig, default "population"
        Settings every session starts from (its ``n_sites`` and ``n_units`` are replaced by
        the arguments). The ``"population"`` preset (2 minutes of estimation sound, 8 units
        per site) keeps each session quick to analyse while giving the CNN enough data.
    n_sites : int, default 2
        Sites (shanks) per session, 1-8.
    n_units : int, optional
        Units per site (default: the preset's).
    kinds : sequence of dict, optional
        One dict per session: ``subspace`` (``"shared"``/``"independent"``), ``tiling``
        (``"scattered"``/``"clustered"``), ``narrow_broader`` (bool), optionally
        ``independent_bf`` (default ``"whole range"`` for independent sessions),
        ``narrow_tuning_factor`` (default :data:`BROADER_FACTOR` when broader, else 1) and
        ``narrow_modulation`` (default: the preset's). Default: :func:`population_kinds`.
    overwrite : bool, default False
        Replace existing files of the same names; otherwise any of them existing raises
        ``FileExistsError`` before anything is written. Other files in the folder are left
        alone.
    on_session : callable, optional
        Called with one line of text after each session is written (default: logged at
        INFO level).

    Returns
    -------
    pandas.DataFrame
        The truth table as written. ``file`` is relative to ``folder``; ``site`` is the
        name :func:`~nwb_subspace.io.site_labels.read_site_labels` reads from the file.

    Raises
    ------
    ValueError, TypeError
        Bad counts, seed, preset or kinds (nothing is written).
    FileExistsError
        Files exist and ``overwrite`` is False.
    """
    import pandas as pd

    from nwb_subspace.io.site_labels import read_site_labels

    _check_count("n_sessions", n_sessions)
    _check_count("seed", seed, low=0)
    _check_count("n_sites", n_sites)
    if n_sites > 8:
        raise ValueError(f"n_sites must be in 1-8 (shanks of one probe), got {n_sites}")
    if n_units is not None:
        _check_count("n_units", n_units)
    base = resolve_config(preset)
    base = base.replace(n_sites=int(n_sites), n_units=int(n_units or base.n_units))
    if kinds is None:
        kinds = population_kinds(n_sessions)
    elif isinstance(kinds, str | bytes | Mapping) or len(kinds) != n_sessions:
        raise ValueError(
            f"kinds must be a list of {n_sessions} dicts (one per session), got "
            f"{kinds if isinstance(kinds, str | bytes) else type(kinds).__name__}"
            f"{'' if isinstance(kinds, str | bytes | Mapping) else f' of length {len(kinds)}'}"
        )
    configs = [_session_config(base, kind, i) for i, kind in enumerate(kinds)]
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    existing = [p for p in _targets(folder, n_sessions) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} output file(s) exist in {folder} (first: {existing[0].name}); "
            "pass overwrite=True to replace them"
        )
    folder.mkdir(parents=True, exist_ok=True)
    say = on_session or log.info

    rows = []
    for i, (cfg, kind) in enumerate(zip(configs, kinds, strict=True)):
        path = folder / f"session_{i:02d}.nwb"
        s_seed = session_seed(seed, i)
        simulate_session(path, preset=cfg, seed=s_seed, overwrite=overwrite)
        labels, _ = read_site_labels(path)
        labels = labels.astype(str)
        truth = load_truth(path)
        for site in pd.unique(labels):  # in file order: shank0, shank1, ...
            count = int((labels == site).sum())
            rows.append(
                {
                    "session": path.stem,
                    "file": path.name,
                    "site": str(site),
                    "subspace": cfg.subspace,
                    "independent_bf": (
                        cfg.independent_bf if cfg.subspace == "independent" else NOT_USED
                    ),
                    "tiling": cfg.tiling,
                    "narrow_broader": bool(kind["narrow_broader"]),
                    "narrow_tuning_factor": float(cfg.narrow_tuning_factor),
                    "narrow_modulation": float(cfg.narrow_modulation),
                    "n_units": int(count),
                    "seed": s_seed,
                    "preset": cfg.name,
                    **_true_breadth_means(truth, str(site)),
                }
            )
        say(
            f"session {i + 1}/{n_sessions}: {path} ({cfg.n_sites} site(s) x {cfg.n_units} "
            f"units; {cfg.subspace}, {cfg.tiling}, narrow units "
            f"{'broader' if kind['narrow_broader'] else 'not broader'}; seed {s_seed})"
        )
    table = pd.DataFrame(rows, columns=list(POPULATION_TRUTH_COLUMNS))
    out = folder / TRUTH_TABLE
    write_atomically(out, lambda tmp: table.to_csv(tmp, index=False))
    return table


def read_population_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Read a population's truth table (the CSV, or the folder holding it).

    Returns the :data:`POPULATION_TRUTH_COLUMNS` with their types (``narrow_broader`` bool,
    ``n_units`` and ``seed`` int, names as str); the :data:`OPTIONAL_TRUTH_COLUMNS` that a
    table written before them lacks are NaN.
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_TABLE
    if not path.exists():
        raise FileNotFoundError(f"no population truth table {path}; simulate_population writes one")
    table = pd.read_csv(path, dtype={"session": str, "file": str, "site": str})
    missing = [
        c
        for c in POPULATION_TRUTH_COLUMNS
        if c not in table.columns and c not in OPTIONAL_TRUTH_COLUMNS
    ]
    if missing:
        raise ValueError(f"{path} is not a population truth table: it lacks columns {missing}")
    for c in OPTIONAL_TRUTH_COLUMNS:  # tables written before the true breadth
        if c not in table.columns:
            table[c] = np.nan
    table["narrow_broader"] = table["narrow_broader"].astype(str).str.lower().eq("true")
    return table


def _true_breadth_means(truth: Any, site: str) -> dict[str, float]:
    """Mean true SRF breadth of one site's narrow and broad units (NaN: none, or unknown)."""
    out = {}
    for cell_type in ("narrow", "broad"):
        values = truth.true_breadth[(truth.site == site) & (truth.cell_type == cell_type)]
        values = values[np.isfinite(values)]
        out[f"true_breadth_{cell_type}"] = float(values.mean()) if values.size else np.nan
    return out
