"""Simulated auditory-cortex recording sessions (and populations of them) with known ground
truth (the demo dataset).

>>> from nwb_subspace.simulate import simulate_session, load_truth
>>> nwb_path, truth_path = simulate_session("site.nwb", preset="tiny", seed=1)  # doctest: +SKIP
>>> truth = load_truth(truth_path)  # doctest: +SKIP
>>> table = simulate_population("population", n_sessions=8, seed=0)  # doctest: +SKIP

Modules: :mod:`.sounds` (synthesis), :mod:`.neurons` (filters, nonlinearities, spikes),
:mod:`.population` (a site's units), :mod:`.waveforms` (probe, templates, layers),
:mod:`.truth` (the sidecar), :mod:`.session` (NWB writing; one site or several),
:mod:`.cohort` (a population of sessions and its truth table), :mod:`.presets` (settings).
"""

from nwb_subspace.simulate.cohort import read_population_truth, simulate_population
from nwb_subspace.simulate.presets import PRESETS, SimulationConfig
from nwb_subspace.simulate.session import simulate_session
from nwb_subspace.simulate.truth import GroundTruth, load_truth

__all__ = [
    "PRESETS",
    "GroundTruth",
    "SimulationConfig",
    "load_truth",
    "read_population_truth",
    "simulate_population",
    "simulate_session",
]
