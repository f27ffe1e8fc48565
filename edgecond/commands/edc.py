"""``edgecond observers train ...`` (EDC's observer/teacher networks) and ``edgecond evaluate-edc``
(EDC's evaluation protocol with hard, stored or online labels). Thin: the work is
:mod:`edgecond.observers` and :mod:`edgecond.protocols`; torch is imported inside the handlers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from .checks import check_output_file, int_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "observers",
        help="train (or load from the cache) EDC's observer networks on a dataset's real training split",
        description="Observer/teacher networks for EDC: BN models of the model registry trained on the real "
                    "training split, cached by content hash (data digest + model + settings) as safetensors. "
                    "A second call with the same data and settings is a cache hit.",
    )
    sub = p.add_subparsers(dest="observers_command", metavar="ACTION")
    t = sub.add_parser("train", help="train one observer (or report the cached one)")
    t.add_argument("--dataset", default="digits")
    t.add_argument("--data-root", "--root", dest="data_root", default=None)
    t.add_argument("--model", default="convnet-bn", help="convnet-bn | resnet10-ap | resnet18 (BN models)")
    t.add_argument("--model-kwargs", default="{}", help='JSON, e.g. \'{"width": 64}\'')
    t.add_argument("--epochs", type=int_arg(1), default=20)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch-size", type=int_arg(1), default=128)
    t.add_argument("--seed", type=int_arg(0), default=0)
    t.add_argument("--cache-dir", default=None, help="default: $EDGECOND_CACHE/observers or ~/.cache/edgecond/observers")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int_arg(1, 4096), default=None)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(handler=cmd_observers_train)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    e = subparsers.add_parser(
        "evaluate-edc",
        help="EDC's evaluation protocol on prefixes of a buffer (smoothing LR, small batch, EMA model)",
        description="Train from scratch with EDC's protocol (AdamW, smoothing LR ζ, small batch, EMA-based "
                    "evaluation) on labels from the buffer (stored soft labels), the class ids (hard), or a "
                    "teacher queried on every batch (online: the EDC quick preset's observers for the data).",
    )
    e.add_argument("buffer", metavar="BUFFER")
    e.add_argument("--dataset", default=None, help="dataset to test on (default: the buffer's)")
    e.add_argument("--data-root", "--root", dest="data_root", default=None)
    e.add_argument("--labels", default="stored", choices=("hard", "stored", "online"))
    e.add_argument("--sizes", default=None, help="comma list of sizes (default: N)")
    e.add_argument("--seeds", type=int_arg(1, 1000), default=3)
    e.add_argument("--preset", default="quick", help="quick (300 epochs) | paper (1000 epochs)")
    e.add_argument("--epochs", type=int_arg(1), default=None)
    e.add_argument("--cache-dir", default=None, help="observer cache for --labels online")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int_arg(1, 4096), default=None)
    e.add_argument("--json", default=None, metavar="OUT")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(handler=cmd_evaluate_edc)


def cmd_observers_train(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..observers import ObserverConfig, get_observer
    from ..utils import set_cpu_threads

    set_cpu_threads(args.threads)
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs {args.model_kwargs!r} is not JSON ({exc}); e.g. '{{\"width\": 64}}'.") from None
    ds = load_dataset(args.dataset, root=args.data_root)
    cfg = ObserverConfig(model=args.model, model_kwargs=kwargs, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed)
    obs = get_observer(ds, cfg, cache_dir=args.cache_dir, device=args.device, progress=not args.no_progress)
    print(json.dumps(dict(obs.info(), path=obs.path)))
    return 0


def cmd_evaluate_edc(args: argparse.Namespace) -> int:
    from ..buffer import MultisizeBuffer
    from ..condense import condense_preset
    from ..condense.edc import EDCConfig, observer_configs
    from ..data import dataset_of_buffer, load_dataset
    from ..observers import get_observer
    from ..protocols import edc_eval_preset, evaluate_buffer_edc
    from ..utils import set_cpu_threads

    if args.json:
        check_output_file(args.json, "--json")
    set_cpu_threads(args.threads)
    buf = MultisizeBuffer.load(args.buffer, mmap=False)
    ds = load_dataset(args.dataset, root=args.data_root) if args.dataset else dataset_of_buffer(buf.meta, root=args.data_root)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [buf.ipc]
    cfg = edc_eval_preset(args.preset, ds, epochs=args.epochs)
    teachers = []
    if args.labels == "online":
        mc = dict(condense_preset("edc", "quick", ds, ipc=1).method_config)
        if args.cache_dir:
            mc["cache_dir"] = args.cache_dir
        teachers = [get_observer(ds, c, cache_dir=mc.get("cache_dir") or None, device=args.device).model
                    for c in observer_configs(EDCConfig(**mc))]
    res = evaluate_buffer_edc(buf, ds, cfg, sizes=sizes, seeds=list(range(args.seeds)), labels=args.labels,
                              teachers=teachers, device=args.device, progress=not args.no_progress)
    print(f"{args.buffer}: {buf.meta.method} on {ds.name}, protocol edc ({cfg.epochs} epochs, batch {cfg.batch_size}, "
          f"{cfg.schedule} ζ={cfg.zeta}, EMA {cfg.ema_rate}), labels {args.labels}")
    for r in res:
        print(f"{r.size:>6}  {r.bytes:>10}  {100 * r.mean:6.2f} ± {100 * r.std:.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps({"buffer": str(args.buffer), "protocol": cfg.__dict__,
                                               "results": [r.to_dict() for r in res]}, indent=2) + "\n")
    return 0
