"""Which GPUs a local batch uses, and which device a session ran on.

A local :func:`~nwb_subspace.batch.run_batch` starts one Dask worker per GPU it uses, each
seeing only its GPU (``CUDA_VISIBLE_DEVICES=<id>``), plus CPU workers that see none
(``CUDA_VISIBLE_DEVICES=""``), so ``device = "auto"`` resolves to ``cuda`` on a GPU worker
and to ``cpu`` on a CPU worker. :func:`visible_gpus` lists the GPUs of this process (as the
``CUDA_VISIBLE_DEVICES`` entries that select each one alone), :func:`choose_gpus` checks a
``gpus`` request against them and the analysis' ``device``, and :func:`device_label` names
the device a session runs on in a worker (the batch summary's ``device`` column).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

GPU_ENV = "CUDA_VISIBLE_DEVICES"
"""The environment variable that limits the GPUs a process sees."""
ALL = "all"
"""``gpus`` value: every GPU :func:`visible_gpus` finds."""

__all__ = ["ALL", "GPU_ENV", "choose_gpus", "device_label", "parse_gpus", "visible_gpus"]


def visible_gpus() -> list[str]:
    """The CUDA GPUs torch sees in this process, each as the ``CUDA_VISIBLE_DEVICES`` entry
    that gives a child process that GPU alone.

    Returns
    -------
    list of str
        ``["0", "1", ...]`` (``torch.cuda.device_count()`` of them) when
        ``CUDA_VISIBLE_DEVICES`` is not set; else its first ``device_count()`` entries
        (``CUDA_VISIBLE_DEVICES=2,3`` gives ``["2", "3"]``, so the workers get the GPUs this
        process was given, not GPUs 0 and 1). Empty without a CUDA GPU (or a CPU build of
        torch).
    """
    import torch

    n = torch.cuda.device_count()
    if n <= 0:
        return []
    listed = os.environ.get(GPU_ENV)
    if listed is None:
        return [str(i) for i in range(n)]
    return [e.strip() for e in listed.split(",") if e.strip()][:n]


def parse_gpus(value: int | str) -> int | str:
    """A ``gpus`` request: a count ``>= 0`` or ``"all"`` (also as text, ``"2"``).

    Raises
    ------
    ValueError
        Anything else (a negative count, a bool, ``"two"``), with the accepted forms.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == ALL:
            return ALL
        if text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(
        f"gpus must be a number of GPUs >= 0 or 'all'; got {value!r} (e.g. 0: no GPU "
        "worker, 2: two GPU workers, all: one per GPU found)"
    )


def choose_gpus(gpus: int | str, found: Sequence[str], device: str) -> list[str]:
    """The GPUs of ``found`` that get a worker, for ``gpus`` and the analysis' ``device``.

    Parameters
    ----------
    gpus : int or "all"
        How many GPU workers: ``"all"`` (one per GPU found), or a count (``0``: none).
    found : sequence of str
        The GPUs available (:func:`visible_gpus`), as ``CUDA_VISIBLE_DEVICES`` entries.
    device : {"cpu", "cuda", "auto"}
        The analysis' device. ``"cpu"`` uses no GPU (``gpus="all"`` then gives ``[]``).

    Returns
    -------
    list of str
        The first ``gpus`` entries of ``found`` (all of them for ``"all"``).

    Raises
    ------
    ValueError
        A bad ``gpus`` (:func:`parse_gpus`) or ``device``; more GPUs asked for than found;
        a GPU count > 0 with ``device="cpu"``; ``device="cuda"`` with no GPU to use.
    """
    count = parse_gpus(gpus)
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be one of ('cpu', 'cuda', 'auto'); got {device!r}")
    if device == "cpu":
        if count != ALL and count > 0:
            raise ValueError(
                f"{count} GPU worker(s) asked for, but the device is 'cpu', which runs every "
                "session on the CPU; use device 'auto' (or 'cuda') to use GPUs, or gpus=0"
            )
        return []
    if count != ALL and count > len(found):
        raise ValueError(
            f"{count} GPU worker(s) asked for, but torch sees {len(found)} CUDA GPU(s)"
            f"{' (' + ', '.join(found) + ')' if found else ''}; use gpus='all' or at most "
            f"{len(found)}"
        )
    chosen = list(found) if count == ALL else list(found)[:count]
    if device == "cuda" and not chosen:
        raise ValueError(
            "device 'cuda' runs every session on a GPU, but there is no GPU worker "
            f"(torch sees {len(found)} CUDA GPU(s), gpus={gpus!r}); use device 'auto' or "
            "'cpu'"
        )
    return chosen


def device_label(device: str) -> str:
    """The device a session with this ``device`` setting runs on in this process.

    ``"cpu"``, or ``"cuda:<id>"``, ``<id>`` being the GPU as the parent process numbered
    it: the first ``CUDA_VISIBLE_DEVICES`` entry of this process (``0`` when unset), the
    GPU torch's ``"cuda"`` uses here.

    Raises
    ------
    ValueError
        ``device`` is not ``"cpu"``, ``"cuda"`` or ``"auto"``, or is ``"cuda"`` where torch
        sees no GPU (:func:`~nwb_subspace.models.estimator.resolve_device`).
    """
    from nwb_subspace.models.estimator import resolve_device

    name = resolve_device(device)
    if name != "cuda":
        return name
    listed = [e.strip() for e in os.environ.get(GPU_ENV, "0").split(",") if e.strip()]
    return f"cuda:{listed[0] if listed else '0'}"
