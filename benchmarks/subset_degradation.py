"""Subset-degradation benchmark (multisize-dataset-condensation.md, Table 1) for edgecond.

Runs random real images, Baselines A, B, C and MDC on one base matcher, evaluates every size
1..N with the same protocol and seeds, and writes DIR/subset_degradation.{json,md,png}:

    python benchmarks/subset_degradation.py --dataset digits --base idc --ipc 10 \
        --preset quick --out runs/subset-digits [--seeds 3]

``--workers K`` runs the methods as K processes side by side (Baseline A split by sizes) and
merges their reports: the whole quick digits benchmark in one command on a 2-core machine.
``--b-mode`` picks how Baseline B's N size-1 condensations run (default ``joint``: one run with
per-rank losses, every rank with the same seed; ``independent``: N runs, seeds seed..seed+N-1).
``--validation`` evaluates on a split carved from TRAIN (for tuning; the test split is untouched).
``--cost-only`` measures MDC's seconds per outer iteration against its base matcher (interleaved
runs) and writes DIR/mdc_cost.json. The protocol lives in ``benchmarks/subset_protocol.py``.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: ``benchmarks.subset_protocol``
    sys.path.insert(0, str(ROOT))


def _split_top(text: str) -> list[str]:
    """Split ``text`` on the commas outside brackets and quotes (JSON values may hold commas)."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _kv(text: str) -> dict:
    """``a=1,b=x,m={"width":32,"depth":3}`` → a dict (values parsed as JSON when they can be)."""
    out: dict = {}
    for part in _split_top(text):
        key, _, value = part.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def _jobs(methods: list[str], ipc: int, a_sizes: list[int] | None, *,
          b_mode: str = "joint") -> list[tuple[str, list[str]]]:
    """Split a run into independent jobs, longest first.

    * random + C + MDC in one process (the MDC cost ratio then compares runs of one process),
      with A's size ``N``: that run *is* C's condensation, so it is reused, not repeated;
    * B; with ``b_mode="independent"`` together with A's size 1 (B's first run is A's size-1
      condensation: same seed and start);
    * A's other sizes one job each, the largest first: short jobs at the end of the queue keep
      the workers busy until the last one ends (list scheduling, longest first).
    Reused runs still count toward A's condensation seconds in the report.
    """
    jobs: list[tuple[str, list[str]]] = []
    sizes = list(a_sizes or range(1, ipc + 1)) if "A" in methods else []

    def with_a(name: str, part: list[str], a: list[int]) -> tuple[str, list[str]]:
        extra = ["--methods", ",".join(part + (["A"] if a else []))]
        if a:
            name += "-A" + ",".join(map(str, a))
            extra += ["--a-sizes", ",".join(map(str, a))]
        return name, extra

    main_part = [m for m in ("random", "C", "MDC", "SDC-LFS", "SDC-LBS") if m in methods]
    if main_part:
        a = [ipc] if ("C" in main_part and ipc in sizes) else []
        jobs.append(with_a("-".join(main_part), main_part, a))
        sizes = [n for n in sizes if n not in a]
    if "B" in methods:
        a = [1] if (1 in sizes and b_mode == "independent") else []
        jobs.append(with_a("B", ["B"], a))
        sizes = [n for n in sizes if n not in a]
    for n in sorted(sizes, reverse=True):
        jobs.append((f"A{n}", ["--methods", "A", "--a-sizes", str(n)]))
    return jobs


def _strip(argv: list[str], flags: dict[str, int]) -> list[str]:
    """``argv`` without the given flags (flag → number of values it takes), either spelling."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in flags:
            i += 1 if "=" in a else 1 + flags[name]
            continue
        out.append(a)
        i += 1
    return out


def _run_workers(args, argv: list[str]) -> int:
    """Run the jobs of :func:`_jobs` with at most ``args.workers`` processes, then merge."""
    out = Path(args.out)
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    a_sizes = [int(v) for v in args.a_sizes.split(",")] if args.a_sizes else None
    base = _strip(argv, {"--workers": 1, "--methods": 1, "--a-sizes": 1, "--out": 1})
    jobs = _jobs(methods, args.ipc, a_sizes, b_mode=args.b_mode)
    queue = list(jobs)
    running: list[tuple[str, subprocess.Popen, float, object]] = []
    failed: list[str] = []
    t0 = time.perf_counter()
    print(f"subset_degradation: {len(queue)} jobs on {args.workers} workers: {', '.join(n for n, _ in queue)}; "
          f"logs in {parts_dir}", flush=True)
    while queue or running:
        while queue and len(running) < args.workers:
            name, extra = queue.pop(0)
            cmd = [sys.executable, str(Path(__file__).resolve()), *base, *extra, "--out", str(parts_dir / name), "--quiet"]
            log_fh = open(parts_dir / f"{name}.log", "w")
            proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
            running.append((name, proc, time.perf_counter(), log_fh))
        time.sleep(1.0)
        for item in list(running):
            name, proc, started, log_fh = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log_fh.close()
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"  {name}: {status} in {time.perf_counter() - started:.0f} s", flush=True)
            if proc.returncode != 0:
                failed.append(name)
    if failed:
        print(f"subset_degradation: error: job(s) {failed} failed; see {parts_dir}/<job>.log", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    code = main(["--merge", *[str(parts_dir / n) for n, _ in jobs], "--out", str(out), "--wall-seconds", f"{wall:.1f}"])
    print(f"wall time with {args.workers} workers: {wall:.0f} s")
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--base", default="idc", help="base matcher of A, B, C and MDC (idc | idm)")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--preset", default="quick", choices=("quick", "paper"))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seeds", type=int, default=3, help="evaluation seeds 0..K-1")
    p.add_argument("--seed", type=int, default=0, help="condensation seed")
    p.add_argument("--methods", default="random,A,B,C,MDC")
    p.add_argument("--condense", type=_kv, default={}, metavar="K=V,...",
                   help="CondenseConfig/method overrides for every condensation, e.g. iterations=30")
    p.add_argument("--mdc", type=_kv, default={}, metavar="K=V,...", help="MDCConfig overrides, e.g. delta_t=5")
    p.add_argument("--sdc", type=_kv, default={}, metavar="K=V,...",
                   help="SDCConfig overrides of SDC-LFS, e.g. skew_weight=0.3,slim_weight=1")
    p.add_argument("--eval", type=_kv, default={}, metavar="K=V,...", help="EvalConfig overrides, e.g. epochs=200")
    p.add_argument("--sizes", default=None, help="evaluate only these sizes, e.g. 1,2,5,10 (default: all 1..N)")
    p.add_argument("--a-sizes", default=None, help="only these sizes of Baseline A, e.g. 1,2,3 (split A across processes)")
    p.add_argument("--b-mode", default="joint", choices=("joint", "independent"),
                   help="Baseline B's N size-1 condensations: joint = all with --seed as one run sharing "
                        "networks and real batches (default; ~1 condensation of cost), independent = N runs, "
                        "seeds seed..seed+N-1")
    p.add_argument("--validation", type=int, default=0, metavar="PER_CLASS",
                   help="evaluate on PER_CLASS images per class held out of TRAIN (tuning)")
    p.add_argument("--cost-only", action="store_true", help="only measure MDC / base seconds per iteration")
    p.add_argument("--cost-iterations", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small convnets on shared cores run fastest so)")
    p.add_argument("--save-buffers", action="store_true")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="only merge DIR/subset_degradation.json of runs made with --methods subsets into --out")
    p.add_argument("--wall-seconds", type=float, default=None,
                   help="with --merge: the measured wall time of the runs, reported as the total")
    p.add_argument("--workers", type=int, default=1,
                   help="run the methods as this many processes side by side, then merge (default 1)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.workers > 1 and not (args.merge or args.cost_only):
        return _run_workers(args, list(sys.argv[1:] if argv is None else argv))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from benchmarks.subset_protocol import SubsetDegradationConfig, measure_cost_ratio, run_subset_degradation
    from edgecond.data import holdout_split
    from edgecond.data import load_dataset
    from edgecond.errors import EdgecondError
    from edgecond.utils import set_cpu_threads

    set_cpu_threads(args.threads)
    if args.merge:
        from benchmarks.subset_protocol import merge_results
        from edgecond.report import SubsetDegradationResult

        parts = [SubsetDegradationResult.from_dict(json.loads((Path(d) / "subset_degradation.json").read_text()))
                 for d in args.merge]
        try:
            merged = merge_results(parts, wall_seconds=args.wall_seconds)
        except EdgecondError as exc:
            print(f"subset_degradation: error: {exc}", file=sys.stderr)
            return 2
        paths = merged.write(args.out)
        print(merged.to_markdown())
        print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
        return 0
    try:
        dataset = load_dataset(args.dataset)
        if args.validation:
            dataset = holdout_split(dataset, per_class=args.validation, seed=args.seed)
        cfg = SubsetDegradationConfig(
            dataset=args.dataset, base=args.base, ipc=args.ipc, preset=args.preset,
            seeds=tuple(range(args.seeds)), seed=args.seed,
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
            condense_overrides=args.condense, mdc=args.mdc, sdc=args.sdc, eval_overrides=args.eval, device=args.device,
            a_sizes=[int(v) for v in args.a_sizes.split(",")] if args.a_sizes else None, b_mode=args.b_mode,
            eval_sizes=[int(v) for v in args.sizes.split(",")] if args.sizes else None,
        )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.cost_only:
            cost = measure_cost_ratio(dataset, cfg, iterations=args.cost_iterations)
            (out / "mdc_cost.json").write_text(json.dumps(cost, indent=2) + "\n")
            print(json.dumps(cost, indent=2))
            return 0
        t0 = time.perf_counter()
        result = run_subset_degradation(dataset, cfg, progress=not args.quiet, out_dir=out,
                                        save_buffers=args.save_buffers)
        paths = result.write(out)
    except EdgecondError as exc:
        print(f"subset_degradation: error: {exc}", file=sys.stderr)
        return 2
    print(result.to_markdown())
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
