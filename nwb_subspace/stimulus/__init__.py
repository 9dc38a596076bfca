"""The stimulus and response side of a session (pure numerics, no file I/O).

- :mod:`~nwb_subspace.stimulus.spectrogram`: sound waveform -> level-free gammatone
  spectrogram;
- :mod:`~nwb_subspace.stimulus.responses`: spikes -> binned counts, trials -> estimation /
  holdout / validation split, validation PSTHs and noise ceilings;
- :mod:`~nwb_subspace.stimulus.scoring`: correlation, noise floor, noise-corrected
  correlation and explained variance of a prediction;
- :mod:`~nwb_subspace.stimulus.projection`: causal projection of a spectrogram onto
  spectro-temporal filters.
"""

from nwb_subspace.stimulus.spectrogram import Spectrogram, SpectrogramSettings, compute_spectrogram

__all__ = ["Spectrogram", "SpectrogramSettings", "compute_spectrogram"]
