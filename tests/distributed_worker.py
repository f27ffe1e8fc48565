"""One worker of the distributed-condensation tests (tests/test_distributed.py), started with
torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) or alone.

``python tests/distributed_worker.py OUT_DIR [CASE ...]``: condenses every case on tiny digits
(:data:`CASES`) and, on rank 0, writes ``OUT_DIR/CASE.safetensors`` with the float32 pixel
images and the loss history."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

TINY = {"ipc": 3, "batch_real": 16, "model_kwargs": {"width": 16, "depth": 2, "norm": "instance"}}

#: name -> (method, preset overrides)
CASES: dict[str, tuple[str, dict]] = {
    "dm": ("dm", {"iterations": 3}),
    "idm": ("idm", {"iterations": 3, "queue_init": 2, "queue_max": 3, "push_interval": 2, "train_steps": 2,
                    "train_batch": 32, "ce_weight": 0.5}),
    "idc": ("idc", {"iterations": 2, "inner_steps": 2, "net_samples": 32, "net_batch": 16}),
    "mdc": ("mdc", {"base": "idc", "iterations": 3, "inner_steps": 2, "net_samples": 32, "net_batch": 16,
                    "hooks_config": {"delta_t": 1}}),
    "sdc": ("sdc", {"base": "dm", "iterations": 2, "lbs_steps": 1}),
}


def run(case: str, workers, **kwargs):
    from edgecond.condense import condense, condense_preset
    from edgecond.data import load_dataset

    method, overrides = CASES[case]
    ds = load_dataset("digits")
    cfg = condense_preset(method, "quick", ds, **{**TINY, **overrides})
    return condense(ds, cfg, progress=False, workers=workers, **kwargs)


def main(argv: list[str]) -> int:
    from safetensors.torch import save_file

    from edgecond.condense.distributed import close_workers, init_workers

    torch.set_num_threads(1)
    out = Path(argv[0])
    workers, _ = init_workers("cpu")
    try:
        for case in argv[1:] or list(CASES):
            res = run(case, workers)
            if workers.is_writer:
                save_file({"images": res.images.contiguous(),
                           "loss": torch.tensor(res.history["loss"], dtype=torch.float64)},
                          str(out / f"{case}.safetensors"))
    finally:
        close_workers()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
