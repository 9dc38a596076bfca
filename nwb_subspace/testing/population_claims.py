"""Check the population claims of ``summarize`` against a simulated population's truth.

For every claim the sessions are split by the truth table of
:func:`~nwb_subspace.simulate.simulate_population` into those where the claim holds and those
where it does not; each part is summarised on its own
(:func:`~nwb_subspace.population.summarize_runs`) and the claim's test row is read:

* **locality** (``same_vs_different_site_similarity``): sessions with ``subspace = shared``
  must give p < ``alpha_detect`` (0.01); ``independent`` sessions p > ``alpha_reject`` (0.05);
* **narrow broader** (``breadth_snr_matched_narrow_vs_broad_<method>``: the breadth of the
  measured maps with every unit brought to its site's signal-to-noise ratio):
  ``narrow_broader`` sessions must give p < ``alpha_reject`` with narrow units higher; the
  others must not. The same on the measured maps' noise-aware breadth
  (``breadth_narrow_vs_broad_<method>``, "narrow units broader (measured maps, unmatched)")
  and on the model maps (``breadth_model_...``, "narrow units broader (model maps)") is
  reported and judged the same way, for comparison; "narrow units broader (simulated
  truth)" is the same question asked of the truth table's true breadths (per site, narrow
  minus broad, Wilcoxon across sites), to show that the design label is the truth;
* **tiling** (``tiling_overlap_neighbours_excess_across_sites``): reported, not judged (the
  per-site tiling null is known to be somewhat liberal; docs/methods.md).

Used by ``tests/test_population_claims.py`` (a small population) and
``benchmarks/population_claims.py`` (a larger one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CLAIM_COLUMNS", "evaluate_claims"]

CLAIM_COLUMNS = (
    "claim", "sessions", "expected", "n_sessions", "n_sites", "n_units", "statistic",
    "value", "null_mean", "p_value", "detected", "agrees",
)  # fmt: skip


def _row(stats: pd.DataFrame, statistic: str) -> dict | None:
    hit = stats[(stats["statistic"] == statistic) & (stats["site"] == "population")]
    return None if hit.empty else hit.iloc[0].to_dict()


def _claim(name: str, which: str, expected: str | None, summary, statistic: str, detected) -> dict:
    row = _row(summary.statistics, statistic)
    got = None if row is None else bool(detected(row))
    return {
        "claim": name,
        "sessions": which,
        "expected": expected or "(reported only)",
        "n_sessions": len(summary.sessions),
        "n_sites": len(summary.sites),
        "n_units": len(summary.units),
        "statistic": statistic,
        "value": np.nan if row is None else float(row["value"]),
        "null_mean": np.nan if row is None else float(row["null_mean"]),
        "p_value": np.nan if row is None else float(row["p_value"]),
        "detected": got,
        "agrees": None if expected is None or got is None else got == (expected == "detected"),
    }


def _truth_claim(truth: pd.DataFrame, sessions: pd.Index, which: str, expected: str) -> dict:
    """The narrow-broader claim on the simulated truth itself (the truth table's per-site
    true breadths, narrow minus broad, Wilcoxon signed-rank across sites, two-sided)."""
    from scipy.stats import wilcoxon

    cols = ("true_breadth_narrow", "true_breadth_broad")
    part = truth[truth["session"].isin(sessions)]
    row = {"claim": "narrow units broader (simulated truth)", "sessions": which,
           "expected": expected, "n_sessions": len(sessions), "n_sites": len(part),
           "n_units": np.nan, "statistic": "true_breadth narrow - broad, Wilcoxon over sites",
           "value": np.nan, "null_mean": np.nan, "p_value": np.nan, "detected": None,
           "agrees": None}  # fmt: skip
    if not set(cols) <= set(part.columns):
        return row
    diff = (part[cols[0]] - part[cols[1]]).to_numpy(dtype=float)
    diff = diff[np.isfinite(diff)]
    if diff.size < 2 or not np.any(diff):
        return row
    p = float(wilcoxon(diff).pvalue)
    got = bool(p < 0.05 and np.mean(diff) > 0)
    row.update(
        value=float(part[cols[0]].mean()), null_mean=float(part[cols[1]].mean()), p_value=p,
        detected=got, agrees=got == (expected == "detected"),
    )  # fmt: skip
    return row


def evaluate_claims(  # long: one block per claim reads best side by side
    results: Mapping[str, str | os.PathLike],
    truth: pd.DataFrame,
    outdir: str | os.PathLike,
    run_name: str,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    group_method: str = "site_means",
    alpha_detect: float = 0.01,
    alpha_reject: float = 0.05,
) -> pd.DataFrame:
    """Each claim on the sessions where it holds and where it does not.

    Parameters
    ----------
    results : mapping of str -> path
        Truth-table session name -> its result file (holding run ``run_name``).
    truth : DataFrame
        ``population_truth.csv`` (one row per session and site).
    outdir : path-like
        Folder for the summaries (one sub-folder per subset).
    run_name : str
    n_permutations, seed : int
        Of the locality test.
    group_method : {"site_means", "mixed_model"}
        Narrow vs broad test.
    alpha_detect, alpha_reject : float
        A claim that holds must reach p < ``alpha_detect`` (locality) or ``alpha_reject``
        (narrow broader); one that does not must stay at p > ``alpha_reject``.

    Returns
    -------
    DataFrame
        :data:`CLAIM_COLUMNS`; ``agrees`` is None where no row could be computed.
    """
    from nwb_subspace.population import summarize_runs

    by_session = truth.groupby("session").first()
    missing = sorted(set(by_session.index) - set(results))
    if missing:
        raise ValueError(f"no result file for sessions {missing}")
    outdir = Path(outdir)

    def summary(mask: pd.Series, label: str):
        files = [str(results[s]) for s in by_session.index[mask.to_numpy()]]
        return summarize_runs(
            files, outdir / label, run_name, n_permutations=n_permutations, seed=seed,
            group_method=group_method, report=False, parquet=False,
        )  # fmt: skip

    rows = []
    shared = by_session["subspace"] == "shared"
    loc = "same_vs_different_site_similarity"
    for mask, which, expected, alpha in (
        (shared, "shared subspace", "detected", alpha_detect),
        (~shared, "independent units", "not detected", alpha_reject),
    ):
        s = summary(mask, f"locality_{which.split()[0]}")
        rows.append(_claim("same-site > different-site similarity", which, expected, s, loc,
                           lambda r, a=alpha: r["p_value"] < a))  # fmt: skip
    broader = by_session["narrow_broader"].astype(bool)
    for mask, which, expected in (
        (broader, "narrow simulated broader", "detected"),
        (~broader, "narrow not broader", "not detected"),
    ):
        s = summary(mask, "narrow_" + ("broader" if expected == "detected" else "same"))
        rows.append(_truth_claim(truth, by_session.index[mask.to_numpy()], which, expected))
        for claim, breadth in (
            ("narrow units broader", f"breadth_snr_matched_narrow_vs_broad_{group_method}"),
            (
                "narrow units broader (measured maps, unmatched)",
                f"breadth_narrow_vs_broad_{group_method}",
            ),
            ("narrow units broader (model maps)", f"breadth_model_narrow_vs_broad_{group_method}"),
        ):
            rows.append(_claim(claim, which, expected, s, breadth,
                               lambda r: r["p_value"] < alpha_reject and r["value"] > r["null_mean"]))  # fmt: skip
    clustered = by_session["tiling"] == "clustered"
    for mask, which in ((clustered, "clustered"), (~clustered, "scattered")):
        s = summary(mask, f"tiling_{which}")
        rows.append(_claim("neighbour overlap differs from chance", which, None, s,
                           "tiling_overlap_neighbours_excess_across_sites",
                           lambda r: r["p_value"] < alpha_reject))  # fmt: skip
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
