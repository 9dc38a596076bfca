"""CNN quality on one simulated session in different presentation designs.

Issue 16 asks that a session whose every sound is repeated (a common real design) fits as
well as the reference design (estimation sounds once, a few validation sounds repeated).
This script simulates the same preset (same seed: same neurons) in the ``mixed`` design and
in the ``all-repeated`` design with the same total presented duration (``--repeats`` per
sound), loads each with the default split rule, fits the default CNN recipe and prints the
median noise-corrected validation correlation of each, and their difference.

Usage::

    python benchmarks/designs.py --preset small --repeats 3
    python benchmarks/designs.py --preset small --repeats 2 --threads 2 --init 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nwb_subspace.io.session import load_session_data
from nwb_subspace.models.estimator import EncodingEstimator
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import PRESETS, simulate_session


def fit_design(folder: Path, preset: str, design: str, repeats: int, seed: int, n_init: int):
    cfg = PRESETS[preset].replace(design=design, repeats=repeats)
    path, _ = simulate_session(folder / f"{design}.nwb", cfg, seed=seed)
    session = load_session_data(path, seed=seed)
    masks = session_masks(session)
    X, Y = session.spectrogram.data, session.counts
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EncodingEstimator(
            "cnn", training=TrainingConfig(n_initializations=n_init, seed=seed)
        ).fit(X, Y, masks["fit"], masks["holdout"])
    seconds = time.perf_counter() - start
    scores = est.score(X, session.validation, session.noise_ceiling, seed=seed)
    split = session.split
    counts = session.trials.repeat_counts()
    distinct_s = sum(
        (session.trials.stop - session.trials.start)[session.trials.sound_id == s][0]
        for s in counts
    )
    return {
        "design": split.design,
        "sounds": len(counts),
        "distinct_s": float(distinct_s),
        "presented_s": float(np.sum(session.trials.stop - session.trials.start)),
        "validation": f"{len(split.validation_sounds)} sounds x "
        f"{counts[split.validation_sounds[0]]} repeats",
        "nc": float(np.nanmedian(scores.noise_corrected_correlation)),
        "r": float(np.nanmedian(scores.correlation)),
        "seconds": seconds,
        "failed": est.failed_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=int, default=3, help="initialisations (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for design in ("mixed", "all-repeated"):
            row = fit_design(Path(tmp), args.preset, design, args.repeats, args.seed, args.init)
            rows.append(row)
            print(
                f"{row['design']:>13}: {row['sounds']} sounds ({row['distinct_s']:.0f} s distinct, "
                f"{row['presented_s']:.0f} s presented), validation {row['validation']}; CNN "
                f"median nc r {row['nc']:.3f} (raw r {row['r']:.3f}), fit {row['seconds']:.0f} s"
                + (" FAILED" if row["failed"] else "")
            )
    diff = rows[1]["nc"] - rows[0]["nc"]
    print(f"all-repeated - mixed: {diff:+.3f} (goal: within +-0.05)")


if __name__ == "__main__":
    main()
