"""Deploy bundles: what a phone receives to train on a slice of a multisize buffer.

A bundle is a directory; **every file in it ships** and counts against the byte budget:

| file | content |
|---|---|
| ``manifest.json`` | sizes, normalisation, labels, model, batch size, training settings (below) |
| ``buffer.safetensors`` | the largest slice of the buffer that fits what the budget leaves |
| ``training_model.onnx``, ``eval_model.onnx``, ``optimizer_model.onnx``, ``checkpoint`` | ORT training artifacts (:mod:`edgecond.export`) |
| ``eval.safetensors`` | optional held-out set: ``x`` uint8 [M, C, H, W] (pixel × 255), ``y`` int64 [M] |

:func:`deploy` picks ``n`` = the largest IPC with ``bytes(all files) <= max_bytes`` (and, with a
memory budget, ``edgecond.budget.memory_for(n) <= memory``), writes the slice without decoding it,
then measures the directory and checks the total. The edge trainer
(``python -m clients.edge.train DIR``) reads the manifest with :func:`read_manifest`.

This module imports no torch at import time (the trainer reads manifests with it); exporting
artifacts and reading a dataset for the eval set import torch inside :func:`deploy`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BudgetError, ConfigError, ExportError

__all__ = [
    "DeployConfig",
    "DeployResult",
    "deploy",
    "read_manifest",
    "default_training",
    "MANIFEST_FILE",
    "BUFFER_FILE",
    "EVAL_FILE",
    "BUNDLE_FORMAT",
]

MANIFEST_FILE = "manifest.json"
BUFFER_FILE = "buffer.safetensors"
EVAL_FILE = "eval.safetensors"
BUNDLE_FORMAT = "edgecond-bundle"
BUNDLE_VERSION = 1
_ARTIFACTS = {  # same names as edgecond.export.ARTIFACT_FILES (not imported: it imports torch)
    "training_model": "training_model.onnx",
    "eval_model": "eval_model.onnx",
    "optimizer_model": "optimizer_model.onnx",
    "checkpoint": "checkpoint",
}
#: Datasets whose classes change under a horizontal flip (digits): no flip augmentation.
NO_FLIP_DATASETS = ("digits", "mnist", "svhn")


def default_training(dataset: str, image_shape: tuple[int, int, int], optimizer: str) -> dict[str, Any]:
    """Training settings written into a manifest when the caller gives none."""
    name = dataset.split(":")[0].lower()
    return {
        "epochs": 300,
        "lr": 0.01 if optimizer == "sgd" else 0.001,
        "schedule": "step",
        "optimizer": optimizer,
        "augment": {
            "enabled": True,
            "crop_pad": max(1, int(round(image_shape[1] * 0.125))),
            "flip": name not in NO_FLIP_DATASETS,
        },
    }


@dataclass
class DeployConfig:
    """How to build a bundle.

    Attributes:
        max_bytes: byte budget of the whole bundle (every file, manifest included).
        memory_bytes: optional RAM budget of the trainer: :func:`edgecond.budget.ipc_for_memory`
            with a :class:`~edgecond.budget.MemoryModel` of the exported model and batch size
            (data + model working set; the runtime itself, ≈ 60-100 MB, is not counted).
        model: registry model name (exportable: ``convnet`` with instance/no norm, ``mlp``).
        model_kwargs: its keyword arguments (e.g. ``{"width": 32}``).
        batch_size: fixed training batch size of the artifacts.
        optimizer: ``"sgd"`` or ``"adamw"`` (see :class:`edgecond.export.ExportConfig`).
        weight_decay: AdamW weight decay.
        eval_samples: size of the held-out set to include (0 = none); drawn from the test split
            of the buffer's dataset.
        seed: model initialisation and eval-subset seed.
        training: manifest training settings (``None`` = :func:`default_training`); keys
            ``epochs``, ``lr``, ``schedule``, ``augment`` {``enabled``, ``crop_pad``, ``flip``}.
        check: run the export self-checks.
        dataset_root: where to look for the dataset of the eval set.
        eval_dataset: dataset spec to draw the eval set from (default: the buffer's dataset name;
            give it when that name is not loadable as is, e.g. ``imagefolder:/full/path``).
    """

    max_bytes: int
    memory_bytes: int | None = None
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    eval_samples: int = 0
    seed: int = 0
    training: dict[str, Any] | None = None
    check: bool = True
    dataset_root: str | None = None
    eval_dataset: str | None = None


@dataclass
class DeployResult:
    """What :func:`deploy` wrote."""

    directory: Path
    ipc: int
    total_bytes: int
    max_bytes: int
    files: dict[str, int]
    memory_estimate_bytes: int
    reason: str
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["directory"] = str(self.directory)
        return d


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")


def _eval_subset(dataset_name: str, root: str | None, samples: int, seed: int, shape, labels):
    """``samples`` random test images (uint8 pixel×255) of the classes the buffer holds."""
    from .data import load_dataset

    data = load_dataset(dataset_name, root=root)
    if tuple(data.image_shape) != tuple(shape):
        raise ConfigError(
            f"dataset {dataset_name!r} has images of shape {data.image_shape}, the buffer {tuple(shape)}; "
            "expected the buffer's own dataset for the eval set. Fix: --eval-samples 0 or the right --data-root."
        )
    x = data.x_test.numpy()
    y = data.y_test.numpy().astype(np.int64)
    keep = np.isin(y, np.asarray(labels))
    x, y = x[keep], y[keep]
    rng = np.random.default_rng(int(seed))
    idx = np.sort(rng.permutation(len(y))[: min(int(samples), len(y))])
    xq = np.clip(np.rint(x[idx] * 255.0), 0, 255).astype(np.uint8)
    return xq, y[idx]


def _save_eval(path: Path, x: np.ndarray, y: np.ndarray, dataset: str) -> None:
    from safetensors.numpy import save_file

    save_file({"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y)}, str(path),
              metadata={"format": "edgecond-eval/1", "dataset": dataset, "space": "pixel*255"})


def _buffer_facts(buf) -> dict[str, Any]:
    meta = buf.meta
    labels = [int(v) for v in buf.labels]
    return {
        "dataset": str(meta.dataset),
        "class_names": [str(c) for c in buf.class_names],
        "labels": labels,
        "mean": [float(v) for v in meta.mean],
        "std": [float(v) for v in meta.std],
        "factor": int(buf.factor),
        "image_shape": tuple(int(s) for s in buf.image_shape),
        "num_classes": max(labels) + 1,
        "ipc_available": int(buf.ipc),
        "method": str(meta.method),
    }


def deploy(buffer_path: str | os.PathLike, out_dir: str | os.PathLike, config: DeployConfig, *,
           progress: bool = True) -> DeployResult:
    """Build a bundle in ``out_dir`` (created; must be empty or absent) from the buffer file.

    ``progress``: the export's steps as a bar (or log lines when stderr is not a terminal).

    Raises :class:`BudgetError` when even a 1-rank slice does not fit next to the artifacts,
    :class:`ExportError` for a model that cannot be exported.
    """
    from .buffer import MultisizeBuffer

    if isinstance(config.max_bytes, bool) or not isinstance(config.max_bytes, int) or config.max_bytes < 1:
        raise BudgetError(f"max_bytes={config.max_bytes!r}; expected a positive number of bytes (e.g. --max-bytes 2MB).")
    if config.memory_bytes is not None and config.memory_bytes < 1:
        raise BudgetError(f"memory_bytes={config.memory_bytes!r}; expected a positive number of bytes or none.")
    if config.eval_samples < 0:
        raise ConfigError(f"eval_samples={config.eval_samples}; expected an integer >= 0.")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output directory {out} is not empty; expected a new or empty directory "
                          "(every file in a bundle ships). Pick another -o or remove it.")
    buf = MultisizeBuffer.load(buffer_path)
    facts = _buffer_facts(buf)
    training = _training_settings(config, facts)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from .progress import progress_label

        with progress_label("deploy"):
            return _deploy(buf, buffer_path, out, config, facts, training, progress=progress)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-written bundle
        raise


def _training_settings(config: DeployConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``training``: :func:`default_training` updated with ``config.training``."""
    training = default_training(facts["dataset"], facts["image_shape"], config.optimizer)
    given = dict(config.training or {})
    unknown = sorted(set(given) - set(training))
    if unknown:
        raise ConfigError(f"training settings {unknown} are unknown; expected keys among {sorted(training)}.")
    augment = dict(training["augment"])
    if "augment" in given:
        extra = sorted(set(given["augment"]) - set(augment))
        if extra:
            raise ConfigError(f"training augment keys {extra} are unknown; expected {sorted(augment)}.")
        augment.update(given.pop("augment"))
    training.update(given)
    training["augment"] = augment
    if training["optimizer"] != config.optimizer:
        raise ConfigError(f"training optimizer {training['optimizer']!r} differs from the exported optimizer "
                          f"{config.optimizer!r}; set DeployConfig.optimizer instead.")
    if isinstance(training["epochs"], bool) or not isinstance(training["epochs"], int) or training["epochs"] < 1:
        raise ConfigError(f"training epochs {training['epochs']!r}; expected an integer >= 1.")
    if not float(training["lr"]) > 0:
        raise ConfigError(f"training lr {training['lr']!r}; expected a positive number.")
    return training


def _deploy(buf, buffer_path, out: Path, config: DeployConfig, facts: dict[str, Any],
            training: dict[str, Any], *, progress: bool = True) -> DeployResult:
    from .budget import MemoryModel, ipc_for_memory, memory_for
    from .export import ExportConfig, export_model

    shape = facts["image_shape"]

    # 1. artifacts (exported next door; only the four training files enter the bundle)
    with tempfile.TemporaryDirectory(prefix=".artifacts-", dir=out) as tmp:
        export = export_model(
            config.model, shape, facts["num_classes"], tmp, model_kwargs=config.model_kwargs, seed=config.seed,
            config=ExportConfig(batch_size=config.batch_size, optimizer=config.optimizer,
                                weight_decay=config.weight_decay, check=config.check, inference=False),
            progress=progress,
        )
        for name in _ARTIFACTS.values():
            shutil.move(str(Path(tmp) / name), str(out / name))
    sizes = {name: (out / name).stat().st_size for name in _ARTIFACTS.values()}

    # 2. held-out set
    files = dict(_ARTIFACTS, buffer=BUFFER_FILE)
    eval_n = 0
    if config.eval_samples:
        ex, ey = _eval_subset(config.eval_dataset or facts["dataset"], config.dataset_root,
                              config.eval_samples, config.seed, shape, facts["labels"])
        _save_eval(out / EVAL_FILE, ex, ey, facts["dataset"])
        sizes[EVAL_FILE] = (out / EVAL_FILE).stat().st_size
        files["eval"] = EVAL_FILE
        eval_n = int(len(ey))

    memory_model = MemoryModel(num_params=export.num_parameters, batch_size=config.batch_size)

    def memory(n: int) -> int:
        return memory_for(buf, n, model=memory_model)

    def limited_by(n: int) -> str:
        return "buffer size (all of it fits)" if n == buf.ipc and reason == "byte budget" else reason

    def manifest_for(n: int, buffer_bytes: int, total: int) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "dataset": facts["dataset"],
            "method": facts["method"],
            "class_names": facts["class_names"],
            "labels": facts["labels"],
            "num_classes": facts["num_classes"],
            "image_shape": list(shape),
            "mean": facts["mean"],
            "std": facts["std"],
            "factor": facts["factor"],
            "ipc": n,
            "ipc_available": facts["ipc_available"],
            "train_images": n * len(facts["labels"]) * facts["factor"] ** 2,
            "model": export.model,
            "num_parameters": export.num_parameters,
            "batch_size": config.batch_size,
            "input_name": "input",
            "label_name": "labels",
            "logits_name": "logits",
            "training": training,
            "eval_samples": eval_n,
            "files": files,
            "bytes": {**sizes, BUFFER_FILE: buffer_bytes, "total": total},
            "budget": {"max_bytes": config.max_bytes, "memory_bytes": config.memory_bytes,
                       "memory_estimate_bytes": memory(n), "limited_by": limited_by(n)},
        }

    # 3. the largest n: bytes(buffer n) + fixed files + manifest(n) <= max_bytes
    fixed = sum(sizes.values())
    n = buf.largest_fitting(max(config.max_bytes - fixed, 0), provenance=False)  # lean slice
    reason = "byte budget"
    if config.memory_bytes is not None:
        decision = ipc_for_memory(buf, config.memory_bytes, model=memory_model)
        if decision.n < n:
            n, reason = decision.n, "memory budget"
    while n > 0:
        b = buf.bytes_for(n, provenance=False)
        total = fixed + b
        text = _json_bytes(manifest_for(n, b, total))
        # the manifest states the total including itself: settle the number of digits
        for _ in range(3):
            total = fixed + b + len(text)
            text = _json_bytes(manifest_for(n, b, total))
        if fixed + b + len(text) <= config.max_bytes:
            break
        n -= 1
    if n < 1:
        one = buf.bytes_for(1, provenance=False)
        what = (f"the memory budget {config.memory_bytes} B (a 1-IPC slice needs ~{memory(1)} B)"
                if reason == "memory budget" else
                f"the byte budget {config.max_bytes} B: the artifacts and eval set take {fixed} B and a 1-IPC "
                f"slice {one} B more")
        raise BudgetError(
            f"no slice of {buffer_path} fits {what}. Expected a budget of at least ~{fixed + one + 4096} B; fix: "
            "raise --max-bytes/--memory, use a smaller model (--model mlp, or --model-kwargs "
            "'{\"width\": 16}'), or drop --eval-samples."
        )

    # The device gets a lean slice: method config, accuracy table and MLS history stay with the
    # server's master buffer (rank digests are the same; see docs/buffer-format.md).
    buf.slice_to(out / BUFFER_FILE, n, provenance=False)
    b = (out / BUFFER_FILE).stat().st_size
    total = fixed + b
    text = _json_bytes(manifest_for(n, b, total))
    for _ in range(3):
        total = fixed + b + len(text)
        text = _json_bytes(manifest_for(n, b, total))
    (out / MANIFEST_FILE).write_bytes(text)
    measured = {p.name: p.stat().st_size for p in out.iterdir()}
    real_total = sum(measured.values())
    if real_total > config.max_bytes or real_total != total:
        raise ExportError(
            f"bundle {out} measures {real_total} B (manifest says {total}, budget {config.max_bytes}); expected "
            "them equal and within the budget. This is a bug in edgecond.deploy, please report it."
        )
    manifest = json.loads(text)
    return DeployResult(directory=out, ipc=n, total_bytes=real_total, max_bytes=config.max_bytes,
                        files=measured, memory_estimate_bytes=memory(n), reason=limited_by(n),
                        manifest=manifest)


def read_manifest(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a bundle; the dict gets ``"dir"`` (a :class:`Path`).

    Raises :class:`ConfigError` for a missing, foreign or incomplete manifest.
    """
    d = Path(bundle_dir)
    path = d / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; expected a bundle directory written by `edgecond deploy "
                          "BUFFER --max-bytes B -o DIR`.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); re-create the bundle with `edgecond deploy`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{path} is not an edgecond bundle manifest (format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {BUNDLE_FORMAT!r}).")
    if manifest.get("version") != BUNDLE_VERSION:
        raise ConfigError(f"{path} has bundle version {manifest.get('version')!r}; this edgecond reads version "
                          f"{BUNDLE_VERSION}. Re-create the bundle with this edgecond's `edgecond deploy`.")
    required = ("files", "mean", "std", "batch_size", "training", "logits_name", "num_classes")
    missing = [k for k in required if k not in manifest]
    missing += [f"files.{k}" for k in (*_ARTIFACTS, "buffer") if k not in manifest.get("files", {})]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; expected a complete manifest. "
                          "Re-create the bundle with `edgecond deploy`.")
    manifest["dir"] = d
    return manifest


from ._api import make_module_callable  # noqa: E402

make_module_callable(__name__, "deploy")  # `from edgecond import deploy; deploy(buffer, out, config)`
