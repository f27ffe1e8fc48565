"""Random-real baseline: test accuracy of random real images per class, at several IPC.

Writes ``random_baseline_<dataset>.json`` and ``.md`` (a Markdown table) into ``--out``::

    python benchmarks/random_baseline.py --dataset digits --ipc 1 10 50 all --seeds 3
    python benchmarks/random_baseline.py --dataset imagefolder:data/cifar10-jpeg --ipc 1 10 --epochs 100

Every row trains a fresh model per seed with the evaluation protocol (``edgecond.evaluate``); the
random images of seed ``s`` are drawn with ``dataset.subset_per_class(ipc, seed=s)``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, "") and not any(Path(p, "edgecond").is_dir() for p in sys.path if p):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from edgecond.commands.data import parse_ipc
from edgecond.data import load_dataset
from edgecond.errors import EdgecondError
from edgecond.evaluate import eval_preset, train_and_test
from edgecond.utils import resolve_device, set_cpu_threads


def run(args: argparse.Namespace) -> dict:
    threads = set_cpu_threads(args.threads)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, root=args.root)
    config = eval_preset(args.preset, dataset, epochs=args.epochs, model=args.model)
    seeds = list(range(args.seeds))
    rows = []
    for ipc_text in args.ipc:
        ipc = parse_ipc(ipc_text)
        accs, t0 = [], time.perf_counter()
        for s in seeds:
            x, y = dataset.subset_per_class(ipc, seed=s) if ipc else (dataset.x_train, dataset.y_train)
            accs.append(train_and_test(x, y, dataset, config, seed=s, device=device, progress=args.progress))
        row = {"ipc": ipc or "all", "images": int(ipc * dataset.num_classes if ipc else len(dataset.y_train)),
               "mean": float(np.mean(accs)), "std": float(np.std(accs)), "accuracies": accs,
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{dataset.name} ipc {row['ipc']}: {100 * row['mean']:.2f} ± {100 * row['std']:.2f} % "
              f"({row['seconds']} s)", flush=True)
    return {
        "benchmark": "random_baseline",
        "dataset": dataset.summary(),
        "seeds": seeds,
        "device": str(device),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "preset": args.preset,
        "config": config.to_dict(),
        "rows": rows,
    }


def to_markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"# Random real baseline — {result['dataset']['name']}",
        "",
        f"Model `{cfg['model']}`, {cfg['epochs']} epochs (preset `{result['preset']}`), SGD {cfg['lr']}, "
        f"augment `{cfg['augment']}` + CutMix p={cfg['cutmix_prob']}; seeds {result['seeds']}; "
        f"device {result['device']} ({result['threads']} threads). Mean ± std (population) of test accuracy.",
        "",
        "| IPC | images | accuracy (%) | per seed (%) | seconds |",
        "|---:|---:|---:|---|---:|",
    ]
    for r in result["rows"]:
        per = ", ".join(f"{100 * a:.2f}" for a in r["accuracies"])
        lines.append(f"| {r['ipc']} | {r['images']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {per} | "
                     f"{r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ipc", nargs="+", default=["1", "10", "50"], help="IPC values; 'all' = full training set")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--preset", default="quick", choices=["quick", "paper"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except EdgecondError as exc:
        print(f"random_baseline: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "random_baseline_" + result["dataset"]["name"].replace(":", "-").replace("/", "-")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(to_markdown(result))
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
