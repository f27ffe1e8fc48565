"""Subset-degradation benchmark (multisize-dataset-condensation.md, Table 1) for edgecond.

Runs random real images, Baselines A, B, C and MDC on one base matcher, evaluates every size
1..N with the same protocol and seeds, and writes DIR/subset_degradation.{json,md,png}:

    python benchmarks/subset_degradation.py --dataset digits --base idc --ipc 10 \
        --preset quick --out runs/subset-digits [--seeds 3]

``--validation`` evaluates on a split carved from TRAIN (for tuning; the test split is untouched).
``--cost-only`` measures MDC's seconds per outer iteration against its base matcher (interleaved
runs) and writes DIR/mdc_cost.json. The logic lives in :mod:`edgecond.condense.baselines`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _kv(text: str) -> dict:
    """``a=1,b=x`` → ``{"a": 1, "b": "x"}`` (values parsed as JSON when they can be)."""
    out: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


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
    p.add_argument("--eval", type=_kv, default={}, metavar="K=V,...", help="EvalConfig overrides, e.g. epochs=200")
    p.add_argument("--a-sizes", default=None, help="only these sizes of Baseline A, e.g. 1,2,3 (split A across processes)")
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
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edgecond.condense.baselines import SubsetDegradationConfig, holdout_split, measure_cost_ratio, run_subset_degradation
    from edgecond.data import load_dataset
    from edgecond.errors import EdgecondError
    from edgecond.utils import set_cpu_threads

    set_cpu_threads(args.threads)
    if args.merge:
        from edgecond.condense.baselines import SubsetDegradationResult, merge_results

        parts = [SubsetDegradationResult.from_dict(json.loads((Path(d) / "subset_degradation.json").read_text()))
                 for d in args.merge]
        try:
            merged = merge_results(parts)
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
            condense_overrides=args.condense, mdc=args.mdc, eval_overrides=args.eval, device=args.device,
            a_sizes=[int(v) for v in args.a_sizes.split(",")] if args.a_sizes else None,
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
