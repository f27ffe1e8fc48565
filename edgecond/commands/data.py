"""``edgecond datasets`` and ``edgecond evaluate-real`` (the random-real baseline).

Heavy imports (torch) stay inside the handlers so ``edgecond --help`` is fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from .checks import check_output_file, float_arg, int_arg

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="list the datasets edgecond can load and where it reads them from",
        description="List registered datasets, where each is read from and whether its files are present.",
    )
    p.add_argument("--data-root", "--root", dest="root", default=None,
                   help="root folder of dataset files (default: $EDGECOND_DATA or ~/.cache/edgecond/datasets)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the list as JSON ('-' = stdout)")
    p.set_defaults(handler=cmd_datasets)

    e = subparsers.add_parser(
        "evaluate-real",
        help="random real images per class → test accuracy (the 'random' baseline)",
        description="Pick IPC random real training images per class (per seed), train a fresh model with the "
                    "evaluation protocol (SGD 0.01/0.9/5e-4, step decay at 2/3 and 5/6, DSA + CutMix) and "
                    "report test accuracy mean ± std over the seeds. --ipc all uses the full training set.",
    )
    e.add_argument("--dataset", default="digits", help="dataset name (see `edgecond datasets`); default digits")
    e.add_argument("--ipc", default="1", help="images per class (an integer >= 1), or 'all' for the full training set")
    e.add_argument("--seeds", type=int_arg(1, 1000), default=3, help="number of seeds (0..K-1); default 3")
    e.add_argument("--seed-offset", type=int_arg(0), default=0, help="first seed (seeds are OFFSET..OFFSET+K-1)")
    e.add_argument("--preset", default="quick", choices=["quick", "paper"], help="evaluation preset")
    e.add_argument("--epochs", type=int_arg(1), default=None, help="override the preset's epochs")
    e.add_argument("--batch-size", type=int_arg(1, 1 << 16), default=None, help="override the training batch size (256)")
    e.add_argument("--model", default=None, help="model name (default convnet; see edgecond.models)")
    e.add_argument("--augment", default=None, help="DiffAugment strategy, or 'none'")
    e.add_argument("--cutmix-prob", type=float_arg(0.0, 1.0), default=None, help="CutMix probability per batch (default 0.5)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    e.add_argument("--threads", type=int_arg(1, 4096), default=None, help="CPU threads for torch (default: $OMP_NUM_THREADS, else all cores)")
    e.add_argument("--data-root", "--root", dest="root", default=None, help="root folder of dataset files")
    e.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    from .condense import _add_flips

    _add_flips(e)
    e.add_argument("--json", default=None, metavar="PATH", help="write the result (mean, std, per seed, config) "
                                                              "as JSON")
    e.add_argument("--no-progress", action="store_true", help="hide progress bars")
    e.set_defaults(handler=cmd_evaluate_real)


def _write_json(path: str, payload: object) -> None:
    text = json.dumps(payload, indent=2)
    if path == "-":
        print(text)
        return
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}", file=sys.stderr)


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..data import list_datasets

    if args.json and args.json != "-":
        check_output_file(args.json, "--json")
    infos = list_datasets(root=args.root)
    width = max(len(i.name) for i in infos)
    for i in infos:
        mark = "yes" if i.available else "no "
        print(f"{i.name:<{width}}  available: {mark}  {i.description}")
        flips = "--flips to allow (default no)" if i.flips is None else ("yes" if i.flips else "no")
        print(f"{'':<{width}}  reads from: {i.source}; horizontal flips keep labels: {flips}")
    if args.json:
        _write_json(args.json, [i.to_dict() for i in infos])
    return 0


def parse_ipc(text: str) -> int:
    """'all' → 0 (the full training set); an integer >= 1 otherwise (0 is refused, as in
    ``edgecond condense``: a silent full-set run takes minutes where 0 images were meant)."""
    t = str(text).strip().lower()
    if t in ("all", "full"):
        return 0
    try:
        n = int(t)
    except ValueError:
        raise ConfigError(f"--ipc {text!r} is not an integer; expected an integer >= 1, or 'all'.") from None
    if n < 1:
        raise ConfigError(f"--ipc {n}: expected an integer >= 1 images per class, or 'all' for the full "
                          "training set.")
    return n


def cmd_evaluate_real(args: argparse.Namespace) -> int:
    ipc = parse_ipc(args.ipc)
    if args.json and args.json != "-":
        check_output_file(args.json, "--json")
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}; expected at least 1.")
    import numpy as np

    from ..data import load_dataset
    from ..evaluate import eval_preset, train_and_test
    from ..utils import resolve_device, set_cpu_threads

    threads = set_cpu_threads(args.threads)
    device = resolve_device(args.device)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "model": args.model,
                 "augment": args.augment, "cutmix_prob": args.cutmix_prob}
    dataset = load_dataset(args.dataset, root=args.root, download=args.download, flips=args.flips)
    config = eval_preset(args.preset, dataset, **{k: v for k, v in overrides.items() if v is not None})
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    log.info("dataset %r; config %s; device %s; %d threads", dataset, config.to_dict(), device, threads)
    from ..progress import progress_bar

    t0 = time.perf_counter()
    accs, per_seed = [], []
    bar = progress_bar(seeds, desc=f"evaluate-real {dataset.name} ipc={ipc or 'all'}", unit="seed",
                       disable=args.no_progress)
    for s in bar:
        if ipc:
            x, y = dataset.subset_per_class(ipc, seed=s)
        else:
            x, y = dataset.x_train, dataset.y_train
        ts = time.perf_counter()
        acc = train_and_test(x, y, dataset, config, seed=s, device=device, progress=not args.no_progress)
        accs.append(acc)
        per_seed.append({"seed": s, "accuracy": acc, "seconds": round(time.perf_counter() - ts, 2)})
        log.info("seed %d: %.2f %% (%.1f s)", s, 100 * acc, per_seed[-1]["seconds"])
        bar.set_postfix(acc=f"{100 * np.mean(accs):.2f}%")
    seconds = time.perf_counter() - t0
    mean, std = float(np.mean(accs)), float(np.std(accs))
    label = f"ipc {ipc}" if ipc else f"full ({len(dataset.y_train)} images)"
    print(f"{dataset.name} {label}, {config.model}, {config.epochs} epochs, seeds {seeds}: "
          f"{100 * mean:.2f} ± {100 * std:.2f} %  ({seconds:.1f} s on {device})")
    if args.json:
        _write_json(args.json, {
            "dataset": dataset.summary(),
            "ipc": ipc,
            "full_training_set": ipc == 0,
            "seeds": seeds,
            "accuracies": accs,
            "mean": mean,
            "std": std,
            "per_seed": per_seed,
            "seconds": round(seconds, 2),
            "device": str(device),
            "threads": threads,
            "preset": args.preset,
            "config": config.to_dict(),
        })
    return 0
