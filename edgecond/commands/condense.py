"""``edgecond condense ...`` (real dataset → multisize buffer) and ``edgecond evaluate BUFFER ...``.

Thin: parsing and printing only; the work is :func:`edgecond.condense.condense` and
:func:`edgecond.evaluate.evaluate_buffer`. Torch is imported inside the handlers.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from ..errors import ConfigError
from .checks import check_field_types, check_output_file, float_arg, int_arg

METHOD_HELP = "idc | idm | dm | random | herding | mdc | sdc (both with --base) (see `edgecond condense --list`)"


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. --set inner_steps=20).")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def _add_flips(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--flips", dest="flips", action="store_true", default=None,
                   help="npz:/imagefolder: data: horizontal flips keep labels (photos); default: no flips")
    g.add_argument("--no-flips", dest="flips", action="store_false",
                   help="npz:/imagefolder: data: never flip (digits, text; the default)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "condense",
        help="condense a dataset into one multisize buffer (idc, idm, dm, random, herding, mdc, sdc)",
        description="Condense the training split of a dataset into ONE multisize buffer whose first n "
                    "images per class are a training set for every n. Presets: quick (CPU minutes on "
                    "digits) and paper (the published settings). Checkpoints are written atomically "
                    "every --checkpoint-every outer iterations; --resume continues a killed run.",
    )
    p.add_argument("--dataset", default="digits", help="dataset name (digits, cifar10, imagefolder:PATH, ...)")
    p.add_argument("--data-root", "--root", dest="data_root", default=None, help="root folder of dataset files")
    _add_flips(p)
    p.add_argument("--method", default=None, help=METHOD_HELP)
    p.add_argument("--ipc", type=int_arg(1, 47_662), default=10, help="stored images per class N (default 10)")
    p.add_argument("--factor", type=int_arg(1, 8), default=None, help="multi-formation factor (default: the preset's)")
    p.add_argument("--preset", default="quick", help="quick | paper (default quick)")
    p.add_argument("--iterations", type=int_arg(0), default=None, help="outer iterations (default: the preset's)")
    p.add_argument("--seed", type=int_arg(0), default=0)
    p.add_argument("--init-offset", type=int_arg(0), default=None, help="which block of real images initialises")
    p.add_argument("--dtype", default=None, help="buffer storage: uint8 (default) | float16 | float32")
    p.add_argument("--hooks", default=None, help="none | mdc (multisize wrapper; same as --method mdc --base METHOD)")
    p.add_argument("--base", default=None,
                   help="base matcher of --method mdc: idc | idm | dm (default: idc on images up to 8x8 and for "
                        "--preset paper, dm above); of --method sdc: idm (default) | dm | idc")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config or method field, e.g. --set inner_steps=20 (repeatable; JSON values)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int_arg(1, 4096), default=None, help="CPU threads (default: $OMP_NUM_THREADS, else all cores)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: OUTPUT.ckpt)")
    p.add_argument("--checkpoint-every", type=int_arg(1), default=50, help="outer iterations between checkpoints")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after success")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    p.add_argument("--log", "--log-path", dest="log", default=None,
                   help="JSON-lines log of the losses (default: OUTPUT.log.jsonl); under torchrun spell it "
                        "--log-path (torchrun's own parser reads --log as its ambiguous --log-dir)")
    p.add_argument("--tensorboard", default=None, metavar="DIR", help="also log to TensorBoard in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("-o", "--output", default=None, help="output buffer file (.safetensors)")
    p.set_defaults(handler=cmd_condense)

    p = subparsers.add_parser(
        "evaluate",
        help="train from scratch on prefixes of a buffer; print accuracy per size",
        description="Train fresh models on the first n images per class of BUFFER for each requested "
                    "size and report test accuracy (mean ± std over seeds) and bytes. --write-back "
                    "stores the table in the buffer's metadata.",
    )
    p.add_argument("buffer", metavar="BUFFER", help="buffer file (.safetensors)")
    p.add_argument("--dataset", default=None, help="dataset to test on (default: the buffer's)")
    p.add_argument("--data-root", "--root", dest="data_root", default=None, help="root folder of dataset files")
    _add_flips(p)
    p.add_argument("--sizes", default=None, help="comma list of sizes or 'all' (default 1,2,5,10,... up to N)")
    p.add_argument("--model", default=None, help="evaluation model (default convnet)")
    p.add_argument("--seeds", type=int_arg(1, 1000), default=3, help="number of training seeds (0..K-1; default 3)")
    p.add_argument("--preset", default="quick", help="quick (300 epochs) | paper (1000 epochs)")
    p.add_argument("--epochs", type=int_arg(1), default=None, help="override the preset's epochs")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int_arg(1, 4096), default=None, help="CPU threads (default: $OMP_NUM_THREADS, else all cores)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the table as JSON")
    p.add_argument("--write-back", action="store_true", help="store the accuracy table in the buffer")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_evaluate)


def cmd_condense(args: argparse.Namespace) -> int:
    from ..condense import condense, condense_preset, list_methods
    from ..utils import set_cpu_threads

    if args.list:
        for m in list_methods():
            print(f"{m['name']:<10} {m['kind']:<9} presets: {m['presets']:<13} {m['description']}")
        # the multisize wrapper is hooks over a matcher, not a registered method
        print(f"{'mdc':<10} {'wrapper':<9} presets: {'paper, quick':<13} MDC: multisize wrapper over a matcher "
              "(adaptive subset loss, MLS, freezing): --method mdc --base idc|idm|dm, or --hooks mdc.")
        return 0
    if not args.method:
        raise ConfigError(f"--method is required; expected one of {METHOD_HELP}.")
    if not args.output:
        raise ConfigError("-o/--output is required: the buffer file to write (e.g. -o digits-idc.safetensors).")
    # every output is checked before the (long) work starts
    out = check_output_file(args.output, "-o/--output")
    check_output_file(args.checkpoint or out.with_name(out.name + ".ckpt"), "--checkpoint")
    check_output_file(args.log or out.with_name(out.name + ".log.jsonl"), "--log")
    from ..data import load_dataset

    set_cpu_threads(args.threads)
    overrides = _parse_sets(args.set)
    for key in ("factor", "iterations", "dtype", "hooks"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.init_offset is not None:
        overrides["init_offset"] = args.init_offset
    dataset = load_dataset(args.dataset, root=args.data_root, flips=args.flips)
    # the one resolver: `--method mdc --base X` and `--method X --hooks mdc` are the same request
    config = condense_preset(args.method, args.preset, dataset, base=args.base, ipc=args.ipc, seed=args.seed,
                             **overrides)
    _check_config_types(config)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 speaks for the job
        print(describe_config(config, dataset), file=sys.stderr)
    out = Path(args.output)
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".ckpt")
    log_path = Path(args.log) if args.log else out.with_name(out.name + ".log.jsonl")
    with _workers(args.device, ckpt) as (workers, device):
        result = condense(dataset, config, device=device, checkpoint=ckpt, checkpoint_every=args.checkpoint_every,
                          resume=args.resume, log_path=log_path, progress=not args.no_progress,
                          tensorboard_dir=args.tensorboard, workers=workers)
    if not workers.is_writer:  # rank 0 writes the buffer (every rank holds the same result)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    nbytes = result.buffer.save(tmp)
    os.replace(tmp, out)
    if ckpt.exists() and not args.keep_checkpoint:
        ckpt.unlink()
    spi = result.seconds_per_iteration
    spi_s = "" if spi != spi else f", {spi:.3f} s/iteration"
    print(f"wrote {out} ({nbytes} bytes): {config.method} ipc {config.ipc} factor {config.factor} on "
          f"{dataset.name} in {result.seconds:.1f} s{spi_s}")
    return 0


@contextlib.contextmanager
def _workers(device: str, ckpt: Path):
    """Join the torchrun job of the environment (``torchrun --nproc-per-node N -m edgecond condense``);
    one process otherwise. A worker the launcher stops (torchrun sends SIGTERM to every worker
    when one fails) ends with a :class:`WorkerLostError` that says how to continue."""
    from ..condense.distributed import WorkerLostError, close_workers, init_workers

    workers, dev = init_workers(device)
    if not workers.distributed:
        yield workers, dev
        return

    def stopped(signum, frame):
        raise WorkerLostError(
            f"worker rank {workers.rank} of {workers.world_size} was stopped by its launcher (signal {signum}): "
            "torchrun stops every worker when one fails. The last checkpoint is "
            f"{str(ckpt)!r}; rerun the same command with --resume to continue from it (any number of workers).")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        yield workers, dev
    except BaseException:
        # a failed job: the launcher's stop signal must not cut the error message short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    else:
        signal.signal(signal.SIGTERM, previous)
    finally:
        close_workers()


def describe_config(config, dataset) -> str:
    """One line: what will run, and the settings that follow from the data's facts."""
    f = dataset.facts
    c, h, w = f.image_shape
    what = f"mdc over {config.method}" if config.hooks == "mdc" else config.method
    mdc = ""
    if config.hooks == "mdc":
        mdc = (f", MDC Δt {config.hooks_config.get('delta_t')} λ {config.hooks_config.get('subset_weight', 1.0)}")
    mk = config.model_kwargs or {}
    return (f"condense: {what}, {config.preset} preset for {c}x{h}x{w} images, {f.num_classes} classes, "
            f">= {f.train_per_class} per class, flips {'yes' if f.flips else 'no'}: ipc {config.ipc}, "
            f"factor {config.factor}, {config.iterations} iterations, lr_img {config.lr_img:g}, batch_real "
            f"{config.batch_real}, {config.model} width {mk.get('width', '-')} depth {mk.get('depth', '-')}{mdc}")


def _check_config_types(config) -> None:
    """``--set`` values must have their field's type (``--set lr_img=abc`` is refused here, not deep in torch)."""
    import dataclasses

    from ..condense import METHODS

    check_field_types(config, "--set")
    cls = METHODS.get(config.method)
    mc_cls = getattr(cls, "Config", None)
    if dataclasses.is_dataclass(mc_cls) and isinstance(config.method_config, dict):
        names = {f.name for f in dataclasses.fields(mc_cls)}
        check_field_types(mc_cls(**{k: v for k, v in config.method_config.items() if k in names}), "--set")


def _sizes(text: str | None, ipc: int) -> list[int]:
    if text is None:
        ladder = [n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500) if n < ipc]
        return ladder + [ipc]
    if text.strip().lower() == "all":
        return list(range(1, ipc + 1))
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ConfigError(f"--sizes {text!r}: expected a comma list of integers (e.g. 1,2,5) or 'all'.") from None
    bad = [n for n in sizes if not 1 <= n <= ipc]
    if bad or not sizes:
        raise ConfigError(f"--sizes {text!r}: sizes must be in 1..{ipc} (the buffer's images per class).")
    return sizes


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..buffer import MultisizeBuffer
    from ..data import dataset_of_buffer, load_dataset
    from ..evaluate import eval_preset, evaluate_buffer
    from ..utils import set_cpu_threads

    if args.json:
        check_output_file(args.json, "--json")
    set_cpu_threads(args.threads)
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: expected an integer >= 1.")
    buf = MultisizeBuffer.load(args.buffer, mmap=False)
    sizes = _sizes(args.sizes, buf.ipc)
    if args.dataset:
        dataset = load_dataset(args.dataset, root=args.data_root, flips=args.flips)
    else:  # the data the buffer was condensed from, checked against its recorded digest
        dataset = dataset_of_buffer(buf.meta, root=args.data_root)
    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.model is not None:
        overrides["model"] = args.model
    config = eval_preset(args.preset, dataset, **overrides)
    results = evaluate_buffer(buf, dataset, config, sizes=sizes, seeds=list(range(args.seeds)),
                              device=args.device, progress=not args.no_progress)
    print(f"{args.buffer}: {buf.meta.method} on {dataset.name}, eval {config.model} {config.epochs} epochs, "
          f"{args.seeds} seed(s)")
    print(f"{'size':>6}  {'bytes':>10}  accuracy")
    for r in results:
        print(f"{r.size:>6}  {r.bytes:>10}  {100 * r.mean:6.2f} ± {100 * r.std:.2f} %")
    if args.json:
        payload = {"buffer": str(args.buffer), "dataset": dataset.name, "eval_config": config.to_dict(),
                   "results": [r.to_dict() for r in results]}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.write_back:
        path = Path(args.buffer)
        tmp = path.with_name(path.name + ".tmp")
        buf.with_accuracy(results).save(tmp)
        os.replace(tmp, path)
        print(f"accuracy table written into {path}", file=sys.stderr)
    return 0
