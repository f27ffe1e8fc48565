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

import contextlib
import json
import math
import os
import shutil
import stat
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
    "validate_manifest",
    "bundle_file",
    "check_onnx_external_data",
    "write_file_atomic",
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
FILE_ROLES = (*_ARTIFACTS, "buffer", "eval")
# Caps on what a manifest may ask of a device (checked before anything proportional is allocated).
MAX_BATCH_SIZE = 4096
MAX_CROP_PAD = 64
MAX_EPOCHS = 100_000
MAX_LR = 100.0
MIN_STD = 1e-6
MAX_MANIFEST_BYTES = 1 << 20


def default_training(dataset: str, image_shape: tuple[int, int, int], optimizer: str, *,
                     flips: bool = False) -> dict[str, Any]:
    """Training settings written into a manifest when the caller gives none. ``flips``: the
    data's flip policy (:func:`edgecond.data.flips_of_buffer`), never guessed from a name."""
    return {
        "epochs": 300,
        "lr": 0.01 if optimizer == "sgd" else 0.001,
        "schedule": "step",
        "optimizer": optimizer,
        "augment": {
            "enabled": True,
            "crop_pad": max(1, int(round(image_shape[1] * 0.125))),
            "flip": bool(flips),
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
        loss: training loss of the artifacts: ``"soft"`` (target distributions: the buffer's soft
            labels and its recipe's CutMix reach the device), ``"ce"`` (class ids), or ``None`` =
            ``"soft"`` when the buffer has soft labels, else ``"ce"``.
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
    loss: str | None = None


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
    from .data import flips_of_buffer

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
        "flips": flips_of_buffer(meta),
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
    training = default_training(facts["dataset"], facts["image_shape"], config.optimizer, flips=facts["flips"])
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
    loss = _loss_of(buf, config)
    export, sizes = _export_artifacts(out, config, facts, loss=loss, progress=progress)  # 1. artifacts
    files = dict(_ARTIFACTS, buffer=BUFFER_FILE)
    eval_n = _write_eval_set(out, config, facts, sizes, files)  # 2. held-out set
    bundle = _Bundle(buf, config, facts, training, export, files, eval_n, sizes)
    n = bundle.largest_n(buffer_path)  # 3. the largest n: bytes(buffer n) + fixed files + manifest(n) <= max_bytes
    # The device gets a lean slice: method config, accuracy table and MLS history stay with the
    # server's master buffer (rank digests are the same; see docs/buffer-format.md).
    buf.slice_to(out / BUFFER_FILE, n, provenance=False)
    total, text = bundle.settled(n, (out / BUFFER_FILE).stat().st_size)
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
                        files=measured, memory_estimate_bytes=bundle.memory(n), reason=bundle.limited_by(n),
                        manifest=manifest)


def _loss_of(buf, config: DeployConfig) -> str:
    """The artifacts' training loss: ``config.loss``, else ``"soft"`` when the buffer has soft labels."""
    return config.loss or ("soft" if buf.has_soft_labels else "ce")


def _export_artifacts(out: Path, config: DeployConfig, facts: dict[str, Any], *, loss: str,
                      progress: bool) -> tuple[Any, dict[str, int]]:
    """The four ORT training files, exported next door and moved into ``out``; their sizes."""
    from .export import ExportConfig, export_model

    with tempfile.TemporaryDirectory(prefix=".artifacts-", dir=out) as tmp:
        export = export_model(
            config.model, facts["image_shape"], facts["num_classes"], tmp, model_kwargs=config.model_kwargs,
            seed=config.seed,
            config=ExportConfig(batch_size=config.batch_size, optimizer=config.optimizer,
                                weight_decay=config.weight_decay, check=config.check, inference=False,
                                loss=loss),
            progress=progress,
        )
        for name in _ARTIFACTS.values():
            shutil.move(str(Path(tmp) / name), str(out / name))
    return export, {name: (out / name).stat().st_size for name in _ARTIFACTS.values()}


def _write_eval_set(out: Path, config: DeployConfig, facts: dict[str, Any], sizes: dict[str, int],
                    files: dict[str, str]) -> int:
    """The held-out set (``config.eval_samples`` images, 0 = none); records its size and file."""
    if not config.eval_samples:
        return 0
    ex, ey = _eval_subset(config.eval_dataset or facts["dataset"], config.dataset_root,
                          config.eval_samples, config.seed, facts["image_shape"], facts["labels"])
    _save_eval(out / EVAL_FILE, ex, ey, facts["dataset"])
    sizes[EVAL_FILE] = (out / EVAL_FILE).stat().st_size
    files["eval"] = EVAL_FILE
    return int(len(ey))


class _Bundle:
    """One bundle being sized: its fixed files, the manifest of ``n`` ranks, the budgets."""

    def __init__(self, buf, config: DeployConfig, facts: dict[str, Any], training: dict[str, Any], export,
                 files: dict[str, str], eval_n: int, sizes: dict[str, int]) -> None:
        from .budget import MemoryModel

        self.buf, self.config, self.facts, self.training, self.export = buf, config, facts, training, export
        self.files, self.eval_n, self.sizes = files, eval_n, sizes
        self.fixed = sum(sizes.values())
        self.memory_model = MemoryModel(num_params=export.num_parameters, batch_size=config.batch_size)
        self.reason = "byte budget"

    def memory(self, n: int) -> int:
        from .budget import memory_for

        return memory_for(self.buf, n, model=self.memory_model)

    def limited_by(self, n: int) -> str:
        return "buffer size (all of it fits)" if n == self.buf.ipc and self.reason == "byte budget" else self.reason

    def manifest_for(self, n: int, buffer_bytes: int, total: int) -> dict[str, Any]:
        facts, config, export = self.facts, self.config, self.export
        loss = _loss_of(self.buf, config)
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "dataset": facts["dataset"],
            "method": facts["method"],
            "class_names": facts["class_names"],
            "labels": facts["labels"],
            "num_classes": facts["num_classes"],
            "image_shape": list(facts["image_shape"]),
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
            "label_name": "targets" if loss == "soft" else "labels",
            "loss": loss,
            "logits_name": "logits",
            "training": self.training,
            "eval_samples": self.eval_n,
            "files": self.files,
            "bytes": {**self.sizes, BUFFER_FILE: buffer_bytes, "total": total},
            "budget": {"max_bytes": config.max_bytes, "memory_bytes": config.memory_bytes,
                       "memory_estimate_bytes": self.memory(n), "limited_by": self.limited_by(n)},
        }

    def settled(self, n: int, buffer_bytes: int) -> tuple[int, bytes]:
        """``(total bytes, manifest JSON)``: the manifest states the total including itself, so
        the number of digits is settled by re-encoding."""
        total = self.fixed + buffer_bytes
        text = _json_bytes(self.manifest_for(n, buffer_bytes, total))
        for _ in range(3):
            total = self.fixed + buffer_bytes + len(text)
            text = _json_bytes(self.manifest_for(n, buffer_bytes, total))
        return total, text

    def largest_n(self, buffer_path) -> int:
        """The largest ``n`` whose bundle fits the byte budget (and the memory budget); raises
        :class:`BudgetError` when not even one rank fits."""
        from .budget import ipc_for_memory

        buf, config, fixed = self.buf, self.config, self.fixed
        n = buf.largest_fitting(max(config.max_bytes - fixed, 0), provenance=False)  # lean slice
        if config.memory_bytes is not None:
            decision = ipc_for_memory(buf, config.memory_bytes, model=self.memory_model)
            if decision.n < n:
                n, self.reason = decision.n, "memory budget"
        while n > 0:
            b = buf.bytes_for(n, provenance=False)
            if fixed + b + len(self.settled(n, b)[1]) <= config.max_bytes:
                break
            n -= 1
        if n < 1:
            one = buf.bytes_for(1, provenance=False)
            what = (f"the memory budget {config.memory_bytes} B (a 1-IPC slice needs ~{self.memory(1)} B)"
                    if self.reason == "memory budget" else
                    f"the byte budget {config.max_bytes} B: the artifacts and eval set take {fixed} B and a 1-IPC "
                    f"slice {one} B more")
            raise BudgetError(
                f"no slice of {buffer_path} fits {what}. Expected a budget of at least ~{fixed + one + 4096} B; "
                "fix: raise --max-bytes/--memory, use a smaller model (--model mlp, or --model-kwargs "
                "'{\"width\": 16}'), or drop --eval-samples."
            )
        return n


def read_manifest(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a bundle; the dict gets ``"dir"`` (a :class:`Path`).

    Raises :class:`ConfigError` for a missing, foreign, incomplete or out-of-range manifest
    (:func:`validate_manifest`) and for any file path that leaves the bundle directory.
    """
    d = Path(bundle_dir)
    path = d / MANIFEST_FILE
    try:
        if path.is_symlink() or path.exists():
            _inside(d, MANIFEST_FILE, "manifest")
        if path.exists() and path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ConfigError(f"{path} has {path.stat().st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} "
                              "bytes. Re-create the bundle with `edgecond deploy`.")
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; expected a bundle directory written by `edgecond deploy "
                          "BUFFER --max-bytes B -o DIR`.") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); re-create the bundle with `edgecond deploy`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{path} is not an edgecond bundle manifest (format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {BUNDLE_FORMAT!r}).")
    if manifest.get("version") != BUNDLE_VERSION:
        raise ConfigError(f"{path} has bundle version {manifest.get('version')!r}; this edgecond reads version "
                          f"{BUNDLE_VERSION}. Re-create the bundle with this edgecond's `edgecond deploy`.")
    required = ("files", "mean", "std", "batch_size", "training", "logits_name", "num_classes")
    missing = [k for k in required if k not in manifest]
    files = manifest.get("files", {})
    missing += [f"files.{k}" for k in (*_ARTIFACTS, "buffer") if isinstance(files, dict) and k not in files]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; expected a complete manifest. "
                          "Re-create the bundle with `edgecond deploy`.")
    validate_manifest(manifest, str(path))
    manifest["dir"] = d
    for role, name in manifest["files"].items():
        if name is not None:
            bundle_file(manifest, role)  # every path resolves inside the bundle
    return manifest


def _bad(where: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {key} is {value!r:.80}; expected {expected}. Re-create the bundle with "
                       "`edgecond deploy`.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_manifest(manifest: dict[str, Any], where: str = MANIFEST_FILE) -> None:
    """The manifest schema: every field the edge trainer reads, its type, range and cap.

    Raises :class:`ConfigError` naming the first field that is wrong. Caps: batch_size <=
    ``MAX_BATCH_SIZE``, crop_pad <= ``MAX_CROP_PAD`` (and < the image side), epochs <=
    ``MAX_EPOCHS``, std >= ``MIN_STD``; paths are checked by :func:`bundle_file`.
    """
    m = manifest
    files = m["files"]
    if not isinstance(files, dict):
        raise _bad(where, "files", files, "an object {role: file name}")
    unknown = sorted(set(files) - set(FILE_ROLES))
    if unknown:
        raise _bad(where, "files", unknown, f"only the roles {list(FILE_ROLES)}")
    for role, name in files.items():
        if not (isinstance(name, str) and name) and not (role == "eval" and name is None):
            raise _bad(where, f"files.{role}", name, "a file name inside the bundle")
    shape = m.get("image_shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and 1 <= v <= 4096
                                                                                        for v in shape)):
        raise _bad(where, "image_shape", shape, "[C, H, W] positive integers (<= 4096)")
    for key in ("mean", "std"):
        v = m[key]
        if not (isinstance(v, list) and 1 <= len(v) <= 16 and all(_is_num(x) for x in v)):
            raise _bad(where, key, v, "a list of 1..16 finite numbers (one per channel)")
        if shape is not None and len(v) != shape[0]:
            raise _bad(where, key, v, f"{shape[0]} numbers (image_shape has {shape[0]} channels)")
    if len(m["mean"]) != len(m["std"]):
        raise _bad(where, "std", m["std"], f"{len(m['mean'])} numbers, as many as mean")
    if not all(x >= MIN_STD for x in m["std"]):
        raise _bad(where, "std", m["std"], f"numbers >= {MIN_STD} (dividing by a zero std trains to NaN)")
    if not (_is_int(m["batch_size"]) and 1 <= m["batch_size"] <= MAX_BATCH_SIZE):
        raise _bad(where, "batch_size", m["batch_size"], f"an integer in 1..{MAX_BATCH_SIZE}")
    if not (_is_int(m["num_classes"]) and 1 <= m["num_classes"] <= 1 << 17):
        raise _bad(where, "num_classes", m["num_classes"], "an integer in 1..131072")
    if m.get("loss", "ce") not in ("ce", "soft"):
        raise _bad(where, "loss", m.get("loss"), "'ce' (class ids) or 'soft' (target distributions)")
    if not (isinstance(m["logits_name"], str) and m["logits_name"]):
        raise _bad(where, "logits_name", m["logits_name"], "the name of the logits output")
    for key in ("ipc", "factor"):
        if key in m and m[key] is not None and not (_is_int(m[key]) and 1 <= m[key] <= 1 << 20):
            raise _bad(where, key, m[key], "a positive integer")
    t = m["training"]
    if not isinstance(t, dict):
        raise _bad(where, "training", t, "an object {epochs, lr, schedule, optimizer, augment}")
    if not (_is_int(t.get("epochs")) and 1 <= t["epochs"] <= MAX_EPOCHS):
        raise _bad(where, "training.epochs", t.get("epochs"), f"an integer in 1..{MAX_EPOCHS}")
    if not (_is_num(t.get("lr")) and 0 < t["lr"] <= MAX_LR):
        raise _bad(where, "training.lr", t.get("lr"), f"a number in (0, {MAX_LR}]")
    if t.get("schedule", "step") not in ("step", "constant"):
        raise _bad(where, "training.schedule", t.get("schedule"), "'step' or 'constant'")
    if "optimizer" in t and not isinstance(t["optimizer"], str):
        raise _bad(where, "training.optimizer", t["optimizer"], "a name")
    aug = t.get("augment")
    if not isinstance(aug, dict) or not isinstance(aug.get("enabled"), bool):
        raise _bad(where, "training.augment", aug, "an object {enabled: bool, crop_pad: int, flip: bool}")
    pad = aug.get("crop_pad", 0)
    side = min(shape[1:]) if shape is not None else MAX_CROP_PAD + 1
    if not (_is_int(pad) and 0 <= pad <= min(MAX_CROP_PAD, side - 1 if side > 1 else 0)):
        raise _bad(where, "training.augment.crop_pad", pad,
                   f"an integer in 0..{min(MAX_CROP_PAD, max(side - 1, 0))} (below the image side, cap {MAX_CROP_PAD})")
    if not isinstance(aug.get("flip", False), bool):
        raise _bad(where, "training.augment.flip", aug.get("flip"), "true or false")


def _inside(bundle_dir: Path, name: Any, role: str) -> Path:
    """``bundle_dir / name`` if it stays inside the bundle (no absolute path, no '..', no link out)."""
    where = f"bundle {bundle_dir}"
    if not isinstance(name, str) or not name or "\0" in name:
        raise ConfigError(f"{where}: files.{role} is {name!r:.80}; expected a file name inside the bundle.")
    rel = Path(name)
    if rel.is_absolute() or name.startswith(("/", "\\")) or ".." in rel.parts or ".." in name.split("\\"):
        raise ConfigError(f"{where}: files.{role} is {name!r:.120}; expected a path inside the bundle directory "
                          "(no absolute path, no '..'). The bundle is damaged or hostile.")
    root = bundle_dir.resolve()
    target = (bundle_dir / rel).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"{where}: files.{role} {name!r:.120} resolves to {target}, outside the bundle (a "
                          "symbolic link out of it). Refusing to read it; the bundle is damaged or hostile.")
    return bundle_dir / rel


def bundle_file(manifest: dict[str, Any], role: str) -> Path:
    """The path of ``files[role]``, confined to the bundle directory, that is a regular file (or absent)."""
    d = Path(manifest["dir"])
    path = _inside(d, manifest["files"][role], role)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path  # the reader reports the missing file with its own message
    except OSError as exc:
        raise ConfigError(f"bundle {d}: files.{role} {path} cannot be read ({exc}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"bundle {d}: files.{role} {path} is not a regular file (a device, pipe or directory); "
                          "the bundle is damaged or hostile.")
    return path


def write_file_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh temp file (O_EXCL|O_NOFOLLOW) and an atomic rename.

    ``os.replace`` replaces a symbolic link at ``path`` instead of writing through it, so a link
    planted in a bundle never redirects an output.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ONNX protobuf field numbers (onnx.proto): which fields hold messages that may contain tensors.
_ONNX_MESSAGES = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}


def check_onnx_external_data(path: str | os.PathLike) -> None:
    """Refuse an ONNX model whose tensors live in external files (``data_location = EXTERNAL`` or
    ``external_data`` entries): ONNX Runtime would open those paths, which may leave the bundle.

    A small schema-aware protobuf walk (no ``onnx`` import); raises :class:`ConfigError` for
    external data and for a file that is not a well-formed protobuf.
    """
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the ONNX model ({exc}).") from None
    try:
        _walk_onnx(data, "model", 0)
    except _ExternalData:
        raise ConfigError(f"{path}: the ONNX model stores tensors in external data files; a bundle must be "
                          "self-contained (edgecond deploy never writes external data). Refusing to load it.") from None
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"{path}: not a well-formed ONNX model ({exc}); re-create the bundle.") from None


class _ExternalData(Exception):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _walk_onnx(buf: memoryview, kind: str, depth: int) -> None:
    if depth > 64:
        raise ValueError("messages nested too deeply")
    fields = _ONNX_MESSAGES[kind]
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
            if kind == "tensor" and num == 14 and val == 1:  # data_location = EXTERNAL
                raise _ExternalData
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > end:
                raise ValueError("a field runs past the end of its message")
            if kind == "tensor" and num == 13:  # external_data entries
                raise _ExternalData
            if num in fields:
                _walk_onnx(buf[i:i + size], fields[num], depth + 1)
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > end:
            raise ValueError("truncated message")


from ._api import make_module_callable  # noqa: E402

make_module_callable(__name__, "deploy")  # `from edgecond import deploy; deploy(buffer, out, config)`
