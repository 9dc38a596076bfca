"""Peak memory and time of ``load_spectrogram`` on a long sound stored in an NWB file.

Writes ``--minutes`` (default 60) of 44.1 kHz float32 sound into a temporary NWB file chunk
by chunk (an hdmf ``GenericDataChunkIterator``, 10 s per write; the whole waveform is never in
memory), then opens the file
read-only in a fresh child process and runs
:func:`nwb_subspace.io.sound.load_spectrogram` with the reference settings. Prints the
child's peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, which includes the
Python interpreter and imported libraries) and the wall time. Target: < 1 GB.

The sound alternates 1-4 s noise bursts with 0.5 s of digital silence (exact zeros), like a
session with gaps between presentations.

Usage::

    python benchmarks/spectrogram_memory.py            # 1 hour
    python benchmarks/spectrogram_memory.py --minutes 5 --keep /tmp/sound.nwb
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

FS = 44100.0
BLOCK_S = 10.0


def _samples(start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of the sound (noise, seeded per ``BLOCK_S`` block)."""
    block = int(BLOCK_S * FS)
    out = np.empty(stop - start, dtype=np.float32)
    for b in range(start // block, (stop - 1) // block + 1):
        rng = np.random.default_rng(b)
        x = (0.1 * rng.standard_normal(block)).astype(np.float32)
        t = (b * block + np.arange(block)) / FS
        x[(t % 3.0) > 2.5] = 0.0  # 0.5 s of silence every 3 s
        lo, hi = max(start, b * block), min(stop, (b + 1) * block)
        out[lo - start : hi - start] = x[lo - b * block : hi - b * block]
    return out


def write_sound_file(path: Path, minutes: float) -> int:
    """Write a session with a ``minutes``-long sound; return its number of samples."""
    from dateutil.tz import tzutc
    from hdmf.data_utils import GenericDataChunkIterator
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    n = int(minutes * 60 * FS)

    class SoundIterator(GenericDataChunkIterator):
        def _get_data(self, selection):
            sl = selection[0]
            return _samples(sl.start or 0, n if sl.stop is None else sl.stop)

        def _get_maxshape(self):
            return (n,)

        def _get_dtype(self):
            return np.dtype("float32")

    block = int(BLOCK_S * FS)
    it = SoundIterator(buffer_shape=(block,), chunk_shape=(block // 10,))
    nwb = NWBFile(
        session_description="Spectrogram memory benchmark.",
        identifier="spectrogram-memory-benchmark",
        session_start_time=datetime(2026, 1, 1, tzinfo=tzutc()),
    )
    nwb.add_stimulus(
        TimeSeries(
            name="sound", data=it, unit="Pa", rate=FS, starting_time=0.0, description="Noise."
        )
    )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return n


def _child(path: str, chunk_s: float) -> None:
    """Run in a fresh process: load the spectrogram and report."""
    from pynwb import NWBHDF5IO

    from nwb_subspace.io.sound import load_spectrogram

    t0 = time.perf_counter()
    with NWBHDF5IO(path, "r") as io:
        spec, source = load_spectrogram(io.read(), chunk_s=chunk_s)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "shape": list(spec.data.shape),
                "source": str(source),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the sound")
    parser.add_argument("--chunk-s", type=float, default=60.0, help="seconds per chunk")
    parser.add_argument("--keep", type=Path, help="write the NWB file here and keep it")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.chunk_s)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "sound.nwb"
        if path.exists():
            print(f"reusing {path}")
        else:
            t0 = time.perf_counter()
            n = write_sound_file(path, args.minutes)
            print(
                f"wrote {n} samples ({n / FS / 60:.1f} min at {FS:g} Hz, "
                f"{path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s, "
                f"writer peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
            )
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path), "--chunk-s", str(args.chunk_s)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"spectrogram {result['shape']} ({result['source']})")
    print(f"load_spectrogram: {result['seconds']} s, peak RSS {result['peak_rss_mb']} MB")
    print(f"(children's peak RSS {child_peak:.1f} MB; target < 1024 MB)")
    return 0 if result["peak_rss_mb"] < 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
