"""Checkpoint / resume: a run that stops (exception or SIGKILL) and resumes ends bit-for-bit
where an uninterrupted run with the same seed ends; a changed config is refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgecond.condense import EngineHooks, condense
from edgecond.errors import CondenseError

sys.path.insert(0, str(Path(__file__).parent))
from test_condense import tiny_config, tiny_dataset  # noqa: E402




@pytest.fixture(scope="module")
def ds():
    return tiny_dataset()


class Crash(EngineHooks):
    """Simulates a killed run: raises when outer iteration ``at`` starts."""

    def __init__(self, at: int) -> None:
        self.at = at

    def begin_outer(self, t: int) -> None:
        if t == self.at:
            raise KeyboardInterrupt


def _matchers():
    from edgecond.condense import METHODS
    from edgecond.condense.engine import _ensure_methods

    _ensure_methods()
    return [m for m in METHODS.names() if METHODS.get(m).kind == "matcher"]


@pytest.mark.parametrize("method", _matchers())
def test_resume_after_crash_is_bitwise_identical(method, ds, tmp_path):
    cfg = tiny_config(method, iterations=5)
    full = condense(ds, cfg, progress=False)
    ckpt = tmp_path / "run.ckpt"
    log = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        condense(ds, cfg, checkpoint=ckpt, checkpoint_every=2, hooks=Crash(3), log_path=log, progress=False)
    assert ckpt.exists()  # written after iteration 1 (t+1 = 2); iteration 2 is lost
    resumed = condense(ds, cfg, checkpoint=ckpt, checkpoint_every=2, resume=True, log_path=log, progress=False)
    assert torch.equal(full.images, resumed.images)
    assert full.history["loss"] == resumed.history["loss"]
    iters = [int(line.split('"iteration": ')[1].split(",")[0]) for line in log.read_text().splitlines()]
    assert iters == list(range(5))  # the log has no duplicate of the lost iteration
    # resuming a finished run returns the same result without running anything
    again = condense(ds, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert torch.equal(again.images, full.images)


def test_resume_can_extend_iterations(ds, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    short = condense(ds, tiny_config("idm", iterations=2), checkpoint=ckpt, progress=False)
    longer = condense(ds, tiny_config("idm", iterations=4), checkpoint=ckpt, resume=True, progress=False)
    full = condense(ds, tiny_config("idm", iterations=4), progress=False)
    assert torch.equal(longer.images, full.images) and not torch.equal(short.images, full.images)


def test_resume_with_other_config_is_refused(ds, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    condense(ds, tiny_config("dm", iterations=2), checkpoint=ckpt, progress=False)
    with pytest.raises(CondenseError) as err:
        condense(ds, tiny_config("dm", iterations=2, lr_img=0.123, seed=9), checkpoint=ckpt, resume=True,
                 progress=False)
    msg = str(err.value)
    assert "lr_img" in msg and "seed" in msg and "0.123" in msg


def test_resume_needs_a_checkpoint_path(ds):
    from edgecond.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint"):
        condense(ds, tiny_config("dm"), resume=True, progress=False)


def test_sigkill_then_resume(ds, tmp_path):
    """A subprocess SIGKILLs itself in the middle of iteration 3 (checkpoints every iteration)."""
    ckpt = tmp_path / "killed.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_condense import tiny_config, tiny_dataset
        from edgecond.condense import EngineHooks, condense

        class Kill(EngineHooks):
            def end_outer(self, t):
                if t == 3:
                    os.kill(os.getpid(), signal.SIGKILL)

        condense(tiny_dataset(), tiny_config("idm", iterations=6), checkpoint={str(ckpt)!r},
                 checkpoint_every=1, hooks=Kill(), progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert ckpt.exists() and not Path(str(ckpt) + ".tmp").exists()
    resumed = condense(ds, tiny_config("idm", iterations=6), checkpoint=ckpt, resume=True, progress=False)
    full = condense(ds, tiny_config("idm", iterations=6), progress=False)
    assert torch.equal(resumed.images, full.images)
    assert len(resumed.history["loss"]) == 6
