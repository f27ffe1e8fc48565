"""``edgecond export`` (ONNX + ORT training artifacts) and ``edgecond deploy`` (a bundle for a device).

Heavy imports (torch, onnx, onnxruntime) happen inside the handlers.
"""
from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from .checks import check_output_dir, float_arg, int_arg


def _model_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--model-kwargs {text!r} is not JSON ({exc}); expected an object such as "
                          "'{\"width\": 32}'.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs {text!r} is a {type(value).__name__}; expected a JSON object "
                          "such as '{\"width\": 32}'.")
    return value


def _add_model_args(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("--model", default=default_model, help=f"registry model (default {default_model}; "
                   "exportable: convnet with norm instance/layer/none, mlp)")
    p.add_argument("--model-kwargs", metavar="JSON", default=None,
                   help="model keyword arguments as JSON, e.g. '{\"width\": 32, \"depth\": 3}'")
    p.add_argument("--batch", type=int_arg(1, 4096), default=32, help="fixed training batch size of the artifacts (default 32)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="optimizer baked into the artifacts (default adamw; sgd = plain SGD, no momentum)")
    p.add_argument("--weight-decay", type=float_arg(0.0), default=5e-4, help="AdamW weight decay (default 5e-4)")
    p.add_argument("--seed", type=int_arg(0), default=0, help="model initialisation seed (default 0)")
    p.add_argument("--no-check", action="store_true", help="skip the ORT-vs-torch self-checks")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX and ONNX Runtime training artifacts",
        description="Write inference.onnx (dynamic batch) and ORT on-device training artifacts "
                    "(training/eval/optimizer models + checkpoint, fixed batch) for a registry model "
                    "sized for a dataset, check them against torch, and write export.json.",
    )
    _add_model_args(p, "convnet")
    p.add_argument("--dataset", default="digits", help="dataset whose image shape and classes size the model")
    p.add_argument("--data-root", "--root", dest="data_root", default=None, help="dataset root directory")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser(
        "deploy",
        help="build a device bundle: the largest buffer slice that fits with the training artifacts",
        description="Write a bundle directory for `python -m clients.edge.train DIR`: manifest.json, "
                    "the largest slice of BUFFER such that ALL files (artifacts, manifest, optional "
                    "eval set) fit --max-bytes, and, with --memory, whose training fits the RAM "
                    "budget (edgecond.budget). Sizes accept 40000, 40kB, 1.5MB, 2MiB.",
    )
    p.add_argument("buffer", metavar="BUFFER", help="multisize buffer file (.safetensors)")
    p.add_argument("--max-bytes", required=True, metavar="B", help="byte budget of the whole bundle")
    p.add_argument("--memory", default=None, metavar="M", help="RAM budget of on-device training")
    _add_model_args(p, "convnet")
    p.add_argument("--eval-samples", type=int_arg(0), default=0, metavar="N",
                   help="include N held-out test images of the buffer's dataset (default 0)")
    p.add_argument("--data-root", "--root", dest="data_root", default=None, help="dataset root (for --eval-samples)")
    p.add_argument("--eval-dataset", default=None, metavar="SPEC",
                   help="dataset of the eval set (default: the buffer's; e.g. imagefolder:/path/to/folder)")
    p.add_argument("--epochs", type=int_arg(1, 100_000), default=None, help="training epochs written to the manifest (default 300)")
    p.add_argument("--lr", type=float_arg(0.0, 100.0, lo_open=True), default=None,
                   help="learning rate written to the manifest (default 0.001 adamw, 0.01 sgd)")
    p.add_argument("--no-augment", action="store_true", help="manifest: train without crop/flip")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="bundle directory (new or empty)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_deploy)


def cmd_export(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..export import ExportConfig, export_model

    check_output_dir(args.output, "-o/--output")
    data = load_dataset(args.dataset, root=args.data_root)
    result = export_model(
        args.model, data.image_shape, data.num_classes, args.output,
        model_kwargs=_model_kwargs(args.model_kwargs), seed=args.seed,
        config=ExportConfig(batch_size=args.batch, optimizer=args.optimizer,
                            weight_decay=args.weight_decay, check=not args.no_check),
    )
    print(f"exported {args.model} for {data.name} {data.image_shape} ({result.num_parameters} parameters, "
          f"batch {result.batch_size}, {result.optimizer}) to {result.directory} in {result.seconds:.1f} s")
    for role, name in result.files.items():
        print(f"  {name:<22} {result.bytes[role]:>10} B")
    if result.check is not None:
        c = result.check
        print(f"  checks: onnx.checker ok; ORT vs torch logits {c.inference_max_abs:.2g}, training loss "
              f"{abs(c.train_loss_ort - c.train_loss_torch):.2g}, gradients {c.grad_max_rel:.2g} (relative)"
              + (f", SGD step {c.param_max_abs:.2g}" if c.param_max_abs is not None else ""))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from ..deploy import DeployConfig, deploy
    from ..units import format_bytes, parse_bytes

    check_output_dir(args.output, "-o/--output")
    training: dict = {}
    if args.epochs is not None:
        training["epochs"] = int(args.epochs)
    if args.lr is not None:
        training["lr"] = float(args.lr)
    if args.no_augment:
        training["augment"] = {"enabled": False}
    config = DeployConfig(
        max_bytes=parse_bytes(args.max_bytes),
        memory_bytes=None if args.memory is None else parse_bytes(args.memory),
        model=args.model, model_kwargs=_model_kwargs(args.model_kwargs), batch_size=args.batch,
        optimizer=args.optimizer, weight_decay=args.weight_decay, eval_samples=args.eval_samples,
        seed=args.seed, training=training or None, check=not args.no_check, dataset_root=args.data_root,
        eval_dataset=args.eval_dataset,
    )
    r = deploy(args.buffer, args.output, config)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2, default=str))
        return 0
    print(f"bundle {r.directory}: IPC {r.ipc} of {r.manifest['ipc_available']} ({r.manifest['train_images']} "
          f"training images), {r.total_bytes} B = {format_bytes(r.total_bytes)} of {format_bytes(r.max_bytes)} "
          f"(limited by the {r.reason}); training memory estimate {format_bytes(r.memory_estimate_bytes)}")
    for name, size in sorted(r.files.items()):
        print(f"  {name:<22} {size:>10} B")
    print(f"train it with: python -m clients.edge.train {r.directory}")
    return 0
