"""Data-parallel condensation (edgecond.condense.distributed): 2 CPU workers on gloo.

* the buffer of 2 workers equals the one-process buffer, bitwise, for dm, idm (with its
  accuracy-weighted regulariser), idc, the MDC wrapper and sdc;
* a worker killed mid-run fails the job with a message that says to --resume, and --resume (with
  one worker: another number of workers) ends bitwise where an uninterrupted run ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgecond.condense.distributed import Shard, Workers, env_workers, stream_seed
from edgecond.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import distributed_worker as W  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def test_env_workers_and_streams():
    assert env_workers({}) is None
    assert env_workers({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(ConfigError, match="RANK"):
        env_workers({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="integers"):
        env_workers({"RANK": "x", "WORLD_SIZE": "2"})
    # a stream depends on its name only: no rank, no world size
    assert stream_seed(0, 1, 2, 3) == stream_seed(0, 1, 2, 3) != stream_seed(0, 1, 3, 2)
    shard = Shard(Workers(1, 3, 1, "gloo"), 10)
    assert shard.owned(range(10)) == [1, 4, 7] == shard.owned_by(1)
    with pytest.raises(ConfigError, match="at most 10 workers"):
        Shard(Workers(0, 11, 0, "gloo"), 10)


def test_two_workers_equal_one_worker(tmp_path):
    port = str(_free_port())
    cases = list(W.CASES)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "distributed_worker.py"), str(tmp_path), *cases],
                              env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        one = {case: W.run(case, Workers()) for case in cases}  # meanwhile: the one-process runs, here
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    from safetensors.torch import load_file

    from edgecond.condense import initial_images
    from edgecond.data import load_dataset

    start = initial_images(load_dataset("digits"), W.TINY["ipc"], 1, seed=0)
    for case in cases:
        two = load_file(str(tmp_path / f"{case}.safetensors"))
        assert not torch.equal(one[case].images, start), case  # the runs did move the images
        assert torch.equal(two["images"], one[case].images), f"{case}: 2 workers differ from 1"
        # the logged loss is a sum over workers: the same up to float rounding
        torch.testing.assert_close(two["loss"], torch.tensor(one[case].history["loss"], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-6)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rank_of(pid: int) -> str | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")), None)


CLI = ["--dataset", "digits", "--method", "dm", "--ipc", "2", "--checkpoint-every", "2", "--threads", "1",
       "--no-progress", "--device", "cpu", "--dtype", "float32", "--set", "batch_real=16",
       "--set", 'model_kwargs={"width": 16, "depth": 2, "norm": "instance"}']


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes in /proc (Linux)")
def test_killed_worker_fails_clearly_and_resume_continues(tmp_path):
    from edgecond.buffer import MultisizeBuffer
    from edgecond.condense import condense, condense_preset, load_checkpoint
    from edgecond.data import load_dataset

    out = tmp_path / "dm.safetensors"
    ckpt = tmp_path / "dm.safetensors.ckpt"
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                            "--master-port", str(_free_port()), "-m", "edgecond", "condense", *CLI,
                            "--iterations", "1000000", "-o", str(out)],
                           env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ckpt.exists(), "no checkpoint was written"
        victims = [c for c in _children(job.pid) if _rank_of(c) == "1"]
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        text = job.communicate(timeout=120)[0]
    finally:
        job.kill()
    assert job.returncode != 0
    assert "edgecond condense: error: worker rank 0 of 2" in text, text[-3000:]
    assert "--resume" in text
    done = load_checkpoint(ckpt)["iteration"]
    assert done >= 2
    # continue with ONE worker, two iterations past the checkpoint
    total = done + 2
    res = subprocess.run([sys.executable, "-m", "edgecond", "condense", *CLI, "--iterations", str(total),
                          "--resume", "-o", str(out)], env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {ckpt} at iteration {done}" in res.stderr
    ds = load_dataset("digits")
    cfg = condense_preset("dm", "quick", ds, ipc=2, iterations=total, dtype="float32", batch_real=16,
                          model_kwargs={"width": 16, "depth": 2, "norm": "instance"})
    ref = condense(ds, cfg, progress=False)
    got = MultisizeBuffer.load(out).images_class_major()
    assert torch.equal(torch.from_numpy(got), ref.images)
