"""Score condensation settings on a validation split carved from TRAIN (never the test split).

Each ``--try`` is one JSON object of :func:`edgecond.condense.condense_preset` overrides; every
try is condensed on the remaining training images and evaluated on the held-out ones with the
benchmark protocol (``eval_preset("quick")``), and one JSON line per try is appended to ``--out``:

    python benchmarks/validation_search.py --method idc --ipc 1 --val-per-class 40 --seeds 3 \\
        --try '{}' --try '{"batch_real": 64}' --out runs/val-idc.jsonl

This is how the digits quick presets were chosen (docs/condensation.md lists the searches).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--method", default="idc", help="a registered method (idc, idm, dm, ...)")
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--preset", default="quick")
    p.add_argument("--try", dest="tries", action="append", default=None, metavar="JSON",
                   help="condense_preset overrides as a JSON object (repeatable; default: the preset)")
    p.add_argument("--hooks", default="none", help="none | mdc")
    p.add_argument("--sizes", default=None, help="comma list of prefix sizes to score (default: ipc)")
    p.add_argument("--seeds", type=int, default=3, help="evaluation seeds 0..K-1")
    p.add_argument("--val-per-class", type=int, default=40, help="images per class held out of TRAIN")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON-lines file to append to")
    args = p.parse_args(argv)

    from edgecond.condense import condense, condense_preset
    from edgecond.data import holdout_split, load_dataset
    from edgecond.errors import EdgecondError
    from edgecond.evaluate import eval_preset, evaluate_buffer
    from edgecond.utils import set_cpu_threads

    set_cpu_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.ipc]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tries = [json.loads(t) for t in (args.tries or ["{}"])]
    except json.JSONDecodeError as exc:
        print(f"validation_search: error: --try must be a JSON object ({exc})", file=sys.stderr)
        return 2
    try:
        ds = holdout_split(load_dataset(args.dataset), per_class=args.val_per_class, seed=0)
        ecfg = eval_preset("quick", ds)
        for overrides in tries:
            over = dict(overrides)
            if args.hooks == "mdc":
                over.setdefault("hooks", "mdc")
            # the one resolver, on the validation copy's facts (MDC's Δt from the iterations)
            cfg = condense_preset(args.method, args.preset, ds, ipc=args.ipc, **over)
            t0 = time.perf_counter()
            res = condense(ds, cfg, progress=False)
            scores = evaluate_buffer(res.buffer, ds, ecfg, sizes=sizes, seeds=range(args.seeds), progress=False)
            line = {
                "method": args.method, "ipc": args.ipc, "hooks": args.hooks, "overrides": overrides,
                "val_per_class": args.val_per_class, "seeds": args.seeds,
                "val_acc": {s.size: round(100 * s.mean, 2) for s in scores},
                "val_std": {s.size: round(100 * s.std, 2) for s in scores},
                "condense_s": round(res.seconds, 1), "total_s": round(time.perf_counter() - t0, 1),
            }
            with out.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    except EdgecondError as exc:
        print(f"validation_search: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
