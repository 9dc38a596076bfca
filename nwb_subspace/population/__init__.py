"""Population results across many sessions (``nwb-subspace summarize``).

Stored runs -> per-session rows (:mod:`~nwb_subspace.population.tables`) -> population
statistics with units nested in sites (:mod:`~nwb_subspace.population.statistics`,
:mod:`~nwb_subspace.population.locality`) -> tables, report
(:func:`~nwb_subspace.population.summary.summarize_runs`).
"""

from nwb_subspace.population.columns import SESSION_COLUMNS, SITE_COLUMNS, UNIT_COLUMNS
from nwb_subspace.population.summary import PopulationSummary, summarize_runs

__all__ = [
    "SESSION_COLUMNS",
    "SITE_COLUMNS",
    "UNIT_COLUMNS",
    "PopulationSummary",
    "summarize_runs",
]
