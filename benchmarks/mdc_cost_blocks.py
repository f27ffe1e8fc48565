"""MDC's extra cost over IDC, before and after computing prefix losses on their own forward blocks.

Interleaved runs in ONE process (base IDC, MDC with the old single masked forward, MDC with
prefix blocks; repeated), median seconds per outer iteration of each, and the ratios:

    python benchmarks/mdc_cost_blocks.py --dataset digits --iterations 4 --repeats 3 --out DIR
    python benchmarks/mdc_cost_blocks.py --dataset imagefolder:data/cifar10-jpeg --iterations 2 \\
        --repeats 2 --set '{"inner_steps": 3, "model_kwargs": {"width": 32, "depth": 3, "norm": "instance"}}' --out DIR

"Old" is the same code with the forward forced into one block (what a batch-norm model gets),
which is exactly the computation before the change. Writes ``DIR/mdc_cost_blocks-<dataset>.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=4, help="outer iterations per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--delta-t", type=int, default=1, help="MDC Δt (1: a new MLS every iteration)")
    p.add_argument("--set", default="{}", help="condense_preset overrides as JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import os

    from edgecond.condense import condense, condense_preset
    from edgecond.condense import idc as idc_module
    from edgecond.data import load_dataset
    from edgecond.utils import set_cpu_threads

    set_cpu_threads(args.threads)
    ds = load_dataset(args.dataset)
    extra = json.loads(args.set)
    blocks = idc_module.IDC._cuts

    def one_block(self, owner, prefixes, ipc):
        return [0, len(owner)]

    arms = {"base": [], "mdc_one_forward": [], "mdc_blocks": []}
    mls: dict[str, list] = {}
    try:
        for _ in range(args.repeats):
            for arm, secs in arms.items():
                idc_module.IDC._cuts = one_block if arm == "mdc_one_forward" else blocks
                hooks = "none" if arm == "base" else "mdc"
                cfg = condense_preset("idc", "quick", ds, ipc=args.ipc, iterations=args.iterations,
                                      hooks=hooks, hooks_config={"delta_t": args.delta_t} if hooks == "mdc" else {},
                                      **extra)
                res = condense(ds, cfg, progress=False)
                secs.extend(res.history["seconds"])
                if hooks == "mdc":
                    mls[arm] = [h["mls"] for h in res.buffer.meta.extra["mdc"]["history"]]
    finally:
        idc_module.IDC._cuts = blocks
    med = {k: statistics.median(v) for k, v in arms.items()}
    report = {
        "dataset": args.dataset, "ipc": args.ipc, "iterations": args.iterations, "repeats": args.repeats,
        "delta_t": args.delta_t, "overrides": extra, "median_seconds_per_iteration": med,
        "ratio_mdc_over_base_before": med["mdc_one_forward"] / med["base"],
        "ratio_mdc_over_base_after": med["mdc_blocks"] / med["base"],
        "speedup_of_mdc_after_vs_before": med["mdc_one_forward"] / med["mdc_blocks"],
        "mls_history": mls, "seconds": arms,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                    "load_average": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.dataset.replace(":", "-").replace("/", "-")
    path = out / f"mdc_cost_blocks-{stem}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "seconds"}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
