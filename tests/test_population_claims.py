"""Issue 20: the population claims on a small simulated population, where they hold and where
they do not (8 two-site sessions, one of each kind; short fits). The larger population is
``benchmarks/population_claims.py``."""

from __future__ import annotations

import pandas as pd
import pytest

from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.simulate import simulate_population
from nwb_subspace.testing.population_claims import evaluate_claims

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("population_claims")]

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=20, max_epochs_stage2=10, patience=6
    ),
    subspace=SubspaceSettings(min_noise_corrected_r=0.3),
    sites=SiteSettings(n_null=20, n_shifts=50, n_permutations=200),
    run_name="pop",
)


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    folder = tmp_path_factory.mktemp("population")
    truth = simulate_population(folder / "sessions", 8, seed=0)
    truth = pd.read_csv(folder / "sessions" / "population_truth.csv")
    results = {}
    for session, file in truth.groupby("session")["file"].first().items():
        out = folder / "results" / f"{session}.nwb"
        out.parent.mkdir(exist_ok=True)
        run_session(folder / "sessions" / file, QUICK, output=out)
        results[session] = out
    return folder, truth, results


@pytest.fixture(scope="module")
def claims(population):
    folder, truth, results = population
    table = evaluate_claims(
        results, truth, folder / "claims", "pop", n_permutations=1000, group_method="site_means"
    )
    print(table.to_string())
    assert (table["n_sessions"] == 4).all()  # every claim on 4 sessions where it holds, 4 not
    return table


def test_locality_detected_with_shared_subspaces_and_not_without(claims):
    locality = claims[claims["claim"].str.startswith("same-site")].set_index("sessions")
    assert locality.loc["shared subspace", "p_value"] < 0.01
    assert locality.loc["independent units", "p_value"] > 0.05
    assert (locality["agrees"] == True).all()  # noqa: E712  (None would be a failure)


def test_narrow_broader_detected_only_where_simulated(claims):
    """Judged on the SNR-matched breadth of the measured maps (docs/methods.md, sections 8
    and 13). Measured on this population: p = 0.016 where narrow units were simulated 1.6x
    broader, p = 0.64 where not; the unmatched breadth missed it (p = 0.64) and the model maps
    called narrow units broader where they are not (p = 0.016)."""
    narrow = claims[claims["claim"] == "narrow units broader"].set_index("sessions")
    assert (narrow["agrees"] == True).all(), narrow  # noqa: E712  (None would be a failure)
    assert narrow.loc["narrow simulated broader", "p_value"] < 0.05
    assert narrow.loc["narrow not broader", "p_value"] > 0.05
    # the simulated truth follows the design label on the same sites
    truth = claims[claims["claim"] == "narrow units broader (simulated truth)"]
    assert len(truth) == 2 and (truth["agrees"] == True).all(), truth  # noqa: E712
