"""GPU and CPU workers of a local batch: the plan, the worker spec, the env each worker sees,
and the device each session is recorded on.

This machine may have no GPU: a "GPU worker" here is a worker process given a
``CUDA_VISIBLE_DEVICES`` entry of a GPU that torch does not see, so ``device = "auto"``
resolves to ``cpu`` there, which is what the recorded device must say.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pandas as pd
import pytest

from nwb_subspace.batch import (
    SUMMARY_COLUMNS,
    SUMMARY_FILE,
    local_cluster,
    run_batch,
    run_one_session,
    worker_plan,
    worker_specs,
)
from nwb_subspace.cli.batch import add_batch_parser, run_batch_command
from nwb_subspace.config import AnalysisConfig, SiteSettings
from nwb_subspace.devices import GPU_ENV, choose_gpus, device_label, parse_gpus, visible_gpus
from nwb_subspace.models.estimator import resolve_device

CONFIG = AnalysisConfig(models=("cnn",), sites=SiteSettings(enabled=False), run_name="dev")


def _options(specs: dict) -> dict[str, tuple]:
    """name -> (GPU env, threads, memory share, OMP threads) of every worker spec."""
    return {
        name: (
            s["options"]["env"][GPU_ENV],
            s["options"]["nthreads"],
            s["options"]["memory_limit"],
            s["options"]["env"]["OMP_NUM_THREADS"],
        )
        for name, s in specs.items()
    }


def test_no_gpu_gives_cpu_workers_only():
    gpus, n_cpu = worker_plan("auto", "all", 2, found=[])
    assert (gpus, n_cpu) == ([], 2)
    assert _options(worker_specs(gpus, n_cpu)) == {
        "cpu-0": ("", 1, 0.5, "1"),
        "cpu-1": ("", 1, 0.5, "1"),
    }


def test_two_gpus_give_a_worker_each_besides_the_cpu_workers():
    gpus, n_cpu = worker_plan("auto", "all", 2, found=["0", "1"])
    assert (gpus, n_cpu) == (["0", "1"], 2)
    assert _options(worker_specs(gpus, n_cpu)) == {
        "gpu-0": ("0", 1, 0.25, "1"),
        "gpu-1": ("1", 1, 0.25, "1"),
        "cpu-0": ("", 1, 0.25, "1"),
        "cpu-1": ("", 1, 0.25, "1"),
    }
    # a count takes the first GPUs this process was given (CUDA_VISIBLE_DEVICES=2,3)
    assert worker_plan("auto", 1, 0, found=["2", "3"]) == (["2"], 0)
    assert worker_plan("auto", "0", 1, found=["2", "3"]) == ([], 1)
    # device cpu: no GPU worker; device cuda: no CPU worker (it could run no session)
    assert worker_plan("cpu", "all", 2, found=["0", "1"]) == ([], 2)
    assert worker_plan("cuda", "all", 2, found=["0", "1"]) == (["0", "1"], 0)


@pytest.mark.parametrize("bad", [-1, "two", True, 1.5, "", "-2", None])
def test_bad_gpu_counts_are_refused(bad):
    with pytest.raises(ValueError, match="gpus must be a number of GPUs >= 0 or 'all'"):
        parse_gpus(bad)


def test_impossible_worker_plans_say_why():
    assert parse_gpus(" ALL ") == "all" and parse_gpus("3") == 3
    with pytest.raises(ValueError, match="3 GPU worker.*torch sees 2 CUDA GPU.*at most 2"):
        choose_gpus(3, ["0", "1"], "auto")
    with pytest.raises(ValueError, match="device is 'cpu'"):
        choose_gpus(2, ["0", "1"], "cpu")
    with pytest.raises(ValueError, match="device 'cuda'.*no GPU worker"):
        choose_gpus("all", [], "cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        choose_gpus("all", [], "gpu")
    with pytest.raises(ValueError, match="n_workers must be >= 1 when no GPU worker"):
        worker_plan("auto", "all", 0, found=[])
    with pytest.raises(ValueError, match="n_workers must be an integer >= 0"):
        worker_plan("auto", "all", -1, found=["0"])
    with pytest.raises(ValueError, match="at least one worker"):
        worker_specs([], 0)


def test_bad_gpus_stop_batch_and_cli_before_any_work(tmp_path, capsys):
    import argparse

    src = tmp_path / "s.nwb"
    src.write_bytes(b"not used")
    outdir = tmp_path / "out"
    with pytest.raises(ValueError, match="gpus must be"):
        run_batch([src], outdir, CONFIG, n_gpus="many")
    with pytest.raises(ValueError, match="device is 'cpu'"):
        run_batch([src], outdir, CONFIG, n_gpus=1)
    assert not outdir.exists()
    parser = argparse.ArgumentParser()
    add_batch_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["batch", str(src), "--outdir", str(outdir), "--gpus", "-1"])
    assert run_batch_command(args, config=CONFIG) == 2
    err = capsys.readouterr().err
    assert "gpus must be" in err and len(err.strip().splitlines()) == 1
    assert not outdir.exists()


def test_visible_gpus_and_the_device_label_here():
    found = visible_gpus()
    import torch

    assert len(found) == torch.cuda.device_count()
    expected = resolve_device("auto")
    label = device_label("auto")
    assert (label == "cpu") if expected == "cpu" else label.startswith("cuda:")
    assert device_label("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            device_label("cuda")


@pytest.mark.slow
def test_workers_see_their_gpu_and_rows_record_the_resolved_device(tmp_path):
    """A real local cluster of one "GPU" worker (GPU 7) and one CPU worker: each gets its
    CUDA_VISIBLE_DEVICES, and a session's row records the device "auto" resolves to there."""
    from dask.distributed import Client

    broken = tmp_path / "broken.nwb"
    broken.write_bytes(b"not an NWB file")
    cluster = local_cluster(worker_specs(["7"], 1))
    try:
        with Client(cluster) as client:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            env = client.run(lambda: os.environ.get(GPU_ENV))
            assert {names[a]: v for a, v in env.items()} == {"gpu-7": "7", "cpu-0": ""}
            resolved = client.run(device_label, "auto")
            assert set(resolved.values()) <= {"cpu", "cuda:7"}
            for address, name in names.items():
                for device in ("auto", "cuda"):
                    config = replace(CONFIG, device=device)
                    row = client.submit(
                        run_one_session, str(broken), str(tmp_path / f"{name}.nwb"), config,
                        workers=[address], pure=False,
                    ).result()  # fmt: skip
                    assert row["status"] == "failed" and row["error"]
                    if device == "auto":
                        assert row["device"] == resolved[address]
                    elif resolved[address] == "cpu":  # torch sees no GPU on this worker
                        assert row["device"] == "" and "no CUDA GPU" in row["error"]
    finally:
        cluster.close()
    assert not list(tmp_path.glob("*-*.nwb"))  # a failed session writes nothing


@pytest.mark.slow
def test_batch_summary_has_the_device_column(tmp_path):
    broken = tmp_path / "broken.nwb"
    broken.write_bytes(b"not an NWB file")
    outdir = tmp_path / "out"
    config = replace(CONFIG, device="auto")
    table = run_batch([broken], outdir, config, n_workers=1, summarize=False)
    assert list(table.columns) == SUMMARY_COLUMNS and "device" in SUMMARY_COLUMNS
    assert table["status"].tolist() == ["failed"]
    saved = pd.read_csv(outdir / SUMMARY_FILE, keep_default_na=False)
    assert saved["device"].tolist() == table["device"].tolist()
    if not visible_gpus():  # no GPU here: the single CPU worker ran it on the CPU
        assert table["device"].tolist() == ["cpu"]
    else:  # a GPU worker per GPU besides the CPU worker: either may have taken it
        device = table["device"].iloc[0]
        assert device == "cpu" or device.startswith("cuda:")
