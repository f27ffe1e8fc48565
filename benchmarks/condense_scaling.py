"""Benchmark: seconds per outer iteration of a condensation with 1 and 2 workers (torchrun, gloo).

For every worker count W, one job (``torchrun --nproc-per-node W`` for W > 1, a plain process
for W = 1; one torch thread per worker, ``--device cpu`` unless ``--device cuda``) condenses every
dataset × method in turn with :func:`edgecond.condense.condense` (a few outer iterations of the
method's ``quick`` preset; IDC and MDC over IDC with ``--inner-steps`` inner steps per outer
iteration, the quick preset has 10). From rank 0's per-iteration records:

* ``seconds_per_iteration``: median over the iterations after the first (a warm-up);
* ``comm_seconds_per_iteration``: time rank 0 spent in collectives (the loss reduction, MDC's
  distances, IDM's accuracy, the image synchronisation), waiting for the slower rank included;
* ``speedup`` = T1 / TW and ``efficiency`` = T1 / (W · TW);
* ``sharded_seconds`` / ``replicated_seconds``: the split of T1 into the part the class shards
  divide (matching) and the part every worker repeats (networks trained on real data, model
  initialisation, the optimiser step): from T1 = S + R and TW = S/W + R + C,
  ``S = (T1 − (TW − C)) · W/(W−1)``; ``per_class_seconds`` = S / classes.

The machine is shared: ``uptime`` load averages before and after every run are in the JSON.
Writes ``condense_scaling.json`` and ``condense_scaling.md`` to ``--out``::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/condense_scaling.py \\
        --datasets digits npz:/work/data/sets/cifar10k.npz --methods dm idm idc mdc --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row(dataset: str, method: str, workers: int, recs: list[dict], load_before, seconds: float) -> dict:
    steady = recs[1:] or recs
    comm = [b.get("comm_seconds", 0.0) - a.get("comm_seconds", 0.0) for a, b in zip(recs, recs[1:])] or [0.0]
    return {
        "dataset": dataset, "method": method, "workers": workers, "iterations": len(recs),
        "seconds_per_iteration": round(statistics.median(r["seconds"] for r in steady), 4),
        "seconds_all": [round(r["seconds"], 4) for r in recs],
        "comm_seconds_per_iteration": round(statistics.median(comm), 4),
        "run_seconds": round(seconds, 2),
        "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def worker(args) -> int:
    """One worker (of a torchrun job, or alone): every dataset × method, rows written by rank 0.
    Datasets load once per process, so process start-up is paid once per worker count."""
    import torch

    from edgecond.condense import condense, condense_preset
    from edgecond.condense.distributed import close_workers, init_workers
    from edgecond.data import load_dataset

    torch.set_num_threads(1)
    workers, dev = init_workers(args.device)
    rows = []
    try:
        for dataset in args.datasets:
            ds = load_dataset(dataset)
            for method in args.methods:
                over: dict = {"ipc": args.ipc, "iterations": args.iterations}
                if method in ("idc", "mdc"):
                    over["inner_steps"] = args.inner_steps
                cfg = (condense_preset("mdc", "quick", ds, base="idc", **over) if method == "mdc"
                       else condense_preset(method, "quick", ds, **over))
                recs: list[dict] = []
                load_before = [round(v, 2) for v in os.getloadavg()]
                t0 = time.perf_counter()
                condense(ds, cfg, device=dev, progress=False, workers=workers, on_iteration=recs.append)
                if workers.is_writer:
                    rows.append(_row(dataset, method, workers.world_size, recs, load_before, time.perf_counter() - t0))
                    with open(str(args.worker) + ".partial", "a") as fh:  # progress, readable while it runs
                        fh.write(json.dumps(rows[-1]) + "\n")
    finally:
        close_workers()
    if workers.is_writer:
        Path(args.worker).write_text(json.dumps(rows))
    return 0


def launch(w: int, args, out: Path) -> list[dict]:
    """Run :func:`worker` with ``w`` workers (torchrun for w > 1); its rows."""
    py = sys.executable
    launcher = [py] if w == 1 else [py, "-m", "torch.distributed.run", "--nproc-per-node", str(w),
                                     "--master-port", str(free_port())]
    cmd = launcher + [str(Path(__file__).resolve()), "--worker", str(out), "--datasets", *args.datasets,
                      "--methods", *args.methods, "--ipc", str(args.ipc), "--iterations", str(args.iterations),
                      "--inner-steps", str(args.inner_steps), "--device", args.device]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if res.returncode != 0:
        return [{"dataset": d, "method": m, "workers": w, "error": res.stderr[-1500:]}
                for d in args.datasets for m in args.methods]
    return json.loads(out.read_text())


def summarise(rows: list[dict], classes: dict[str, int]) -> list[dict]:
    out = []
    for r in rows:
        if r["workers"] == 1 or "error" in r:
            continue
        one = next((o for o in rows if o["dataset"] == r["dataset"] and o["method"] == r["method"]
                    and o["workers"] == 1 and "error" not in o), None)
        if one is None:
            continue
        w, t1, tw, c = r["workers"], one["seconds_per_iteration"], r["seconds_per_iteration"], r["comm_seconds_per_iteration"]
        sharded = max(0.0, min(t1, (t1 - (tw - c)) * w / (w - 1)))
        out.append({
            "dataset": r["dataset"], "method": r["method"], "workers": w, "t1": t1, "tw": tw,
            "speedup": round(t1 / tw, 3), "efficiency": round(t1 / (w * tw), 3),
            "comm_share": round(c / tw, 3) if tw else None,
            "sharded_seconds": round(sharded, 4), "replicated_seconds": round(t1 - sharded, 4),
            "per_class_seconds": round(sharded / classes.get(r["dataset"], 10), 5),
        })
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Condensation scaling: 1 vs 2 CPU workers (torchrun, gloo, one thread each)",
        "",
        f"machine: {result['machine']}; ipc {result['ipc']}, {result['iterations']} outer iterations per run "
        f"(median of all but the first), IDC/MDC with {result['inner_steps']} inner steps per outer iteration; "
        "MDC = the multisize hooks over IDC. Load averages (1/5/15 min) before/after each run in the JSON.",
        "",
        "| dataset | method | s/iter 1 worker | s/iter 2 workers | speed-up | efficiency | comm share "
        "| sharded s | replicated s | per class s | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        load = next(r["load_before"][0] for r in result["runs"] if r["dataset"] == s["dataset"]
                    and r["method"] == s["method"] and r["workers"] == s["workers"])
        lines.append(f"| {s['dataset']} | {s['method']} | {s['t1']:.3f} | {s['tw']:.3f} | {s['speedup']:.2f} | "
                     f"{s['efficiency']:.2f} | {s['comm_share']:.2f} | {s['sharded_seconds']:.3f} | "
                     f"{s['replicated_seconds']:.3f} | {s['per_class_seconds']:.4f} | {load} |")
    errors = [r for r in result["runs"] if "error" in r]
    for r in errors:
        lines.append(f"\nfailed: {r['dataset']} {r['method']} x{r['workers']}: {r['error'][-300:]}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "npz:/work/data/sets/cifar10k.npz"])
    ap.add_argument("--methods", nargs="+", default=["dm", "idm", "idc", "mdc"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--inner-steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run as one worker
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.worker:
        return worker(args)
    from edgecond.data import load_dataset

    classes = {d: load_dataset(d).num_classes for d in args.datasets}
    rows = []
    with tempfile.TemporaryDirectory(prefix="condense-scaling-") as tmp:
        print(f"progress: {tmp}/rows-W.json.partial", flush=True)
        for w in args.workers:
            rows += launch(w, args, Path(tmp) / f"rows-{w}.json")
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "device": args.device, "ipc": args.ipc,
        "iterations": args.iterations, "inner_steps": args.inner_steps, "runs": rows,
        "summary": summarise(rows, classes),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "condense_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "condense_scaling.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
