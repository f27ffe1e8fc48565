"""Benchmark: seconds per outer iteration of the condensation matchers (IDC, IDM, DM).

For every dataset × method, the given preset is resolved (``paper`` by default: the published
settings) and a few outer iterations are run; the first one is a warm-up and not counted.
IDC's paper outer iteration is M = 100 inner steps (each: one image update per class + training
the network on real data); running 100 of them per measurement is too slow on a CPU, so IDC is
run with ``--idc-inner`` inner steps and the time is extrapolated linearly to M (the cost per
inner step is constant: same batch sizes, a fresh network per outer iteration). The table says
which numbers are measured and which are extrapolated.

Writes ``condense_speed.json`` and ``condense_speed.md`` to ``--out``::

    .venv/bin/python benchmarks/condense_speed.py --datasets digits,imagefolder:data/cifar10-jpeg \\
        --methods idc,idm,dm --ipc 10 --iterations 3 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from edgecond.condense import condense, condense_preset  # noqa: E402
from edgecond.data import load_dataset  # noqa: E402
from edgecond.utils import resolve_device  # noqa: E402


def measure(dataset, method: str, preset: str, ipc: int, iterations: int, idc_inner: int, device) -> dict:
    overrides = {"ipc": ipc, "iterations": iterations + 1}
    full = condense_preset(method, preset, dataset.name, ipc=ipc)
    inner_full = int(full.method_config.get("inner_steps", 1))
    if method == "idc":
        overrides["inner_steps"] = idc_inner
    cfg = condense_preset(method, preset, dataset.name, **overrides)
    res = condense(dataset, cfg, device=device, progress=False)
    secs = res.history["seconds"][1:]  # drop the warm-up iteration
    per_iter = statistics.median(secs)
    inner = int(cfg.method_config.get("inner_steps", 1))
    extrapolated = per_iter * inner_full / inner
    return {
        "dataset": dataset.name,
        "method": method,
        "preset": preset,
        "ipc": ipc,
        "factor": cfg.factor,
        "measured_iterations": len(secs),
        "inner_steps_run": inner,
        "inner_steps_paper": inner_full,
        "seconds_per_measured_iteration": per_iter,
        "seconds_per_outer_iteration": extrapolated,
        "extrapolated": inner != inner_full,
        "paper_iterations": full.iterations,
        "hours_for_paper_run": extrapolated * full.iterations / 3600,
        "all_seconds": res.history["seconds"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits")
    ap.add_argument("--methods", default="idc,idm,dm")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=3, help="measured outer iterations (after 1 warm-up)")
    ap.add_argument("--idc-inner", type=int, default=2, help="IDC inner steps actually run per outer iteration")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for name in args.datasets.split(","):
        t0 = time.perf_counter()
        ds = load_dataset(name)
        print(f"loaded {ds} in {time.perf_counter() - t0:.1f} s", flush=True)
        for method in args.methods.split(","):
            row = measure(ds, method, args.preset, args.ipc, args.iterations, args.idc_inner, device)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "all_seconds"}), flush=True)
    env = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "condense_speed.json").write_text(json.dumps({"env": env, "args": vars(args), "rows": rows}, indent=2) + "\n")
    lines = [
        "# Condensation speed (seconds per outer iteration)",
        "",
        f"`{' '.join(sys.argv)}` — {env['platform']}, {env['cpu_count']} CPUs, torch threads "
        f"{env['torch_threads']}, device {env['device']}, load average at the end {env['load_average'][0]:.1f} "
        "(the machine is shared: numbers are upper bounds).",
        "",
        "| dataset | method | preset | IPC | f | inner steps run / paper | s per outer iteration | extrapolated | paper iterations | hours for a paper run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['preset']} | {r['ipc']} | {r['factor']} | "
            f"{r['inner_steps_run']} / {r['inner_steps_paper']} | {r['seconds_per_outer_iteration']:.2f} | "
            f"{'yes' if r['extrapolated'] else 'no'} | {r['paper_iterations']} | {r['hours_for_paper_run']:.1f} |"
        )
    (out / "condense_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
