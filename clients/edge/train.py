"""Train a deploy bundle on a device with ONNX Runtime, without PyTorch.

Usage::

    python -m clients.edge.train BUNDLE_DIR [--epochs E] [--seed S] [--lr LR] [--threads T]

``BUNDLE_DIR`` is the output of ``edgecond deploy`` (``manifest.json``, the buffer slice, the ORT
training artifacts and optionally a held-out eval set). The trainer

1. reads the slice and decodes its formation in numpy (:meth:`MultisizeBuffer.training_arrays`),
2. trains with ORT's training classes from ``onnxruntime.capi._pybind_state`` (``Module``,
   ``Optimizer``, ``load_checkpoint``) — ``onnxruntime.training`` would import torch,
3. evaluates on the bundle's held-out set when it has one,
4. writes ``trained_checkpoint`` (updated parameters), ``trained_inference.onnx`` (the training
   graph cut at the logits, ``Module.export_model_for_inferencing``) and ``metrics.json``.

**Fixed batch size.** ORT training artifacts have a fixed batch size ``B``. Every epoch draws a
permutation of the ``M`` training images and cuts it into ``ceil(M / B)`` batches; the last one is
*completed with the first images of the same permutation* ("wrap"), so no image is dropped and a
few are seen twice in that epoch. With ``M < B`` the permutation is repeated to fill one batch.
Evaluation pads its last batch with copies and ignores their predictions.

**Augmentation** (numpy): when the bundle's buffer slice carries a training recipe (essential
metadata ``recipe``, ``docs/buffer-format.md`` §3.1) the trainer applies *that* recipe's
augmentation — the DSA ops, strength and flip policy the buffer was evaluated with — on
normalised images, with the same function as the Flower and Avalanche clients
(:func:`edgecond.recipe.augment_batch`). Slices without a recipe (older buffers) get the
manifest's own: random crop after zero padding by ``crop_pad`` pixels and, where the manifest
enables it, horizontal flip (per image, pixel space). Two parts of a recipe do not reach a
phone: **CutMix** and **soft labels** need a loss over target distributions, and the ONNX
Runtime training artifacts (``edgecond.export``) are built with a cross-entropy over class ids
(int64 labels). The trainer then trains on the stored class ids and says so in ``metrics.json``
(``recipe.cutmix`` / ``recipe.soft_labels``); a soft-target artifact is future work.

**Torch never loads.** On a dev machine with torch installed, importing ``onnxruntime`` runs its
package check, which imports ``onnxruntime.training.ortmodule`` and with it torch (≈1-2 s and a
few hundred MB of RSS). A phone has no torch; to measure what a phone would run, the trainer
imports onnxruntime with torch hidden (``sys.modules['torch'] = None`` for the duration of that
import only: the check then sees "no torch" and skips it). ``metrics.json`` reports
``torch_imported`` (whether any torch module is loaded at the end).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgecond.deploy import read_manifest
from edgecond.errors import ConfigError, ExportError

__all__ = [
    "EdgeTrainConfig",
    "train_bundle",
    "epoch_batches",
    "augment_batch",
    "lr_at",
    "normalize",
    "load_training_arrays",
    "load_eval_arrays",
    "peak_rss_bytes",
    "main",
]

METRICS_FILE = "metrics.json"
TRAINED_CHECKPOINT = "trained_checkpoint"
TRAINED_INFERENCE = "trained_inference.onnx"
SCHEDULES = ("step", "constant")


@dataclass
class EdgeTrainConfig:
    """Settings of one on-device training run; ``None`` takes the bundle manifest's value.

    Attributes:
        epochs: passes over the slice.
        lr: base learning rate (the optimizer itself — SGD or AdamW — is fixed by the artifacts).
        seed: seeds batch order and augmentation (numpy ``default_rng``; global state untouched).
        augment: crop (+ flip where the manifest allows it); ``False`` trains on the images as is.
        schedule: ``"step"`` (×0.1 at 2/3 and 5/6 of the epochs, as ``edgecond.evaluate``) or
            ``"constant"``.
        threads: ONNX Runtime intra-op threads (``None`` = ORT's default, all cores).
        save: write the trained checkpoint and inference model.
        verbose: print one line per epoch.
    """

    epochs: int | None = None
    lr: float | None = None
    seed: int = 0
    augment: bool | None = None
    schedule: str | None = None
    threads: int | None = None
    save: bool = True
    verbose: bool = False


# --------------------------------------------------------------------------------------------
# numpy pieces (also used by the torch reference run of the parity test)
# --------------------------------------------------------------------------------------------


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of one epoch, shape ``[ceil(n / batch_size), batch_size]`` (wrap-filled, see module doc)."""
    if n < 1 or batch_size < 1:
        raise ConfigError(f"cannot batch {n} images in batches of {batch_size}; expected both >= 1.")
    perm = rng.permutation(n)
    steps = max(1, math.ceil(n / batch_size))
    need = steps * batch_size
    idx = np.resize(perm, need)  # np.resize repeats the array cyclically
    return idx.reshape(steps, batch_size)


def lr_at(epoch: int, epochs: int, base_lr: float, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based)."""
    if schedule == "constant":
        return float(base_lr)
    if schedule == "step":
        lr = float(base_lr)
        if epoch >= (2 * epochs) // 3:
            lr *= 0.1
        if epoch >= (5 * epochs) // 6:
            lr *= 0.1
        return lr
    raise ConfigError(f"schedule={schedule!r}; expected one of {', '.join(SCHEDULES)}.")


def normalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Pixel space → model input ``(x - mean) / std`` per channel, float32."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32, copy=False)


def augment_batch(x: np.ndarray, rng: np.random.Generator, *, crop_pad: int, flip: bool) -> np.ndarray:
    """Random crop after zero padding by ``crop_pad`` pixels, and a random horizontal flip with
    probability 0.5 if ``flip``; per image, pixel space, returns a new float32 array."""
    b, c, h, w = x.shape
    out = np.empty_like(x, dtype=np.float32)
    if crop_pad > 0:
        p = int(crop_pad)
        padded = np.zeros((b, c, h + 2 * p, w + 2 * p), dtype=np.float32)
        padded[:, :, p:p + h, p:p + w] = x
        dy = rng.integers(0, 2 * p + 1, size=b)
        dx = rng.integers(0, 2 * p + 1, size=b)
        for i in range(b):
            out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    else:
        out[...] = x
    if flip:
        mask = rng.random(b) < 0.5
        out[mask] = out[mask][..., ::-1]
    return out


def load_training_arrays(bundle: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's buffer slice decoded for training: x float32 [M, C, H, W] pixel, y int64 [M]."""
    buf = _bundle_buffer(bundle)
    x, y = buf.training_arrays()
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


def _bundle_buffer(bundle: dict[str, Any]):
    from edgecond.buffer import MultisizeBuffer

    return MultisizeBuffer.load(bundle["dir"] / bundle["files"]["buffer"])


def bundle_recipe(bundle: dict[str, Any]):
    """The training recipe the bundle's buffer slice carries (``None`` for older slices); its
    flip policy is the manifest's (the data facts recorded at deploy time)."""
    from edgecond.recipe import with_flips

    rec = _bundle_buffer(bundle).meta.recipe
    if rec is None:
        return None
    return with_flips(rec, bool(bundle["training"]["augment"].get("flip", rec.flips)) and rec.flips)


def load_eval_arrays(bundle: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The bundle's held-out set (x float32 pixel, y int64), or ``None`` if it has none."""
    name = bundle["files"].get("eval")
    if not name:
        return None
    from safetensors.numpy import load_file

    path = bundle["dir"] / name
    try:
        tensors = load_file(str(path))
        x, y = tensors["x"], tensors["y"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable eval set ({exc}); expected a safetensors file with "
                          "tensors 'x' and 'y' as written by `edgecond deploy --eval-samples N`.") from None
    if x.dtype == np.uint8:  # stored as pixel × 255
        return x.astype(np.float32) / np.float32(255.0), y.astype(np.int64)
    return x.astype(np.float32), y.astype(np.int64)


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (``None`` where unknown).

    Linux: ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this program's memory
    map; ``ru_maxrss`` would include the RSS of a large parent that forked this process before
    its ``exec``). Elsewhere: ``getrusage`` ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


# --------------------------------------------------------------------------------------------
# ONNX Runtime (torch-free)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    """Hide torch while onnxruntime initialises (see module doc); no-op if torch is loaded."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ModuleNotFoundError
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def _ort():
    with _torch_hidden():
        from onnxruntime.capi import _pybind_state as C
    return C


def torch_imported() -> bool:
    """Whether any torch module is loaded in this process."""
    return any(k == "torch" or k.startswith("torch.") for k, v in sys.modules.items() if v is not None)


class _Session:
    """ORT's training Module + Optimizer over a bundle's artifacts."""

    def __init__(self, bundle: dict[str, Any], threads: int | None) -> None:
        C = _ort()
        self.C = C
        d, files = bundle["dir"], bundle["files"]
        for role in ("training_model", "eval_model", "optimizer_model", "checkpoint"):
            if not (d / files[role]).exists():
                raise ExportError(f"{d / files[role]} is missing; expected the bundle's {role}. "
                                  "Re-create the bundle with `edgecond deploy`.")
        self.state = C.load_checkpoint(str(d / files["checkpoint"]))
        device = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
        options = C.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.module = C.Module(str(d / files["training_model"]), self.state, str(d / files["eval_model"]),
                               device, options)
        self.optimizer = C.Optimizer(str(d / files["optimizer_model"]), self.state, device, options)

    def set_lr(self, lr: float) -> None:
        self.optimizer.set_learning_rate(float(lr))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        fetches = self.C.OrtValueVector()
        self.module.lazy_reset_grad()
        self.module.train_step([x, y], fetches)
        self.optimizer.optimizer_step()
        return float(fetches[0].numpy())

    def logits(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        fetches = self.C.OrtValueVector()
        self.module.eval_step([x, y], fetches)
        return fetches[1].numpy()

    def save(self, checkpoint: Path, inference: Path, logits_name: str) -> None:
        self.C.save_checkpoint(self.state, str(checkpoint), False)
        self.module.export_model_for_inferencing(str(inference), [logits_name])


def _evaluate(session: _Session, x: np.ndarray, y: np.ndarray, batch: int, mean, std) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on (x, y), padded fixed-size batches."""
    n = len(x)
    correct, loss_sum = 0, 0.0
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        real = len(idx)
        idx = np.concatenate([idx, np.full(batch - real, idx[0])]) if real < batch else idx
        logits = session.logits(normalize(x[idx], mean, std), y[idx])[:real].astype(np.float64)
        target = y[idx][:real]
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss_sum += float(-logp[np.arange(real), target].sum())
        correct += int((logits.argmax(axis=1) == target).sum())
    return correct / n, loss_sum / n


def train_bundle(bundle_dir: str | os.PathLike, config: EdgeTrainConfig | None = None) -> dict[str, Any]:
    """Train the bundle in ``bundle_dir``; writes ``metrics.json`` there and returns it as a dict."""
    config = config or EdgeTrainConfig()
    t_start = time.perf_counter()
    bundle = read_manifest(bundle_dir)
    training = bundle["training"]
    epochs = int(config.epochs if config.epochs is not None else training["epochs"])
    base_lr = float(config.lr if config.lr is not None else training["lr"])
    schedule = config.schedule or training.get("schedule", "step")
    do_aug = training["augment"]["enabled"] if config.augment is None else bool(config.augment)
    crop_pad = int(training["augment"].get("crop_pad", 0)) if do_aug else 0
    flip = bool(training["augment"].get("flip", False)) if do_aug else False
    if epochs < 1:
        raise ConfigError(f"epochs={epochs}; expected an integer >= 1 (--epochs).")
    if not base_lr > 0:
        raise ConfigError(f"lr={base_lr}; expected a positive learning rate (--lr).")
    lr_at(0, epochs, base_lr, schedule)  # validates the schedule name
    mean, std = bundle["mean"], bundle["std"]
    batch = int(bundle["batch_size"])

    x, y = load_training_arrays(bundle)
    held_out = load_eval_arrays(bundle)
    recipe = bundle_recipe(bundle) if do_aug else None
    has_soft = _bundle_buffer(bundle).has_soft_labels
    session = _Session(bundle, config.threads)
    rng = np.random.default_rng(int(config.seed))

    losses: list[float] = []
    step_times: list[float] = []
    t_train = time.perf_counter()
    for epoch in range(epochs):
        session.set_lr(lr_at(epoch, epochs, base_lr, schedule))
        epoch_losses = []
        for idx in epoch_batches(len(x), batch, rng):
            xb = x[idx]
            if recipe is not None:  # the buffer's own recipe, on normalised images
                from edgecond import recipe as _recipe

                xb = _recipe.augment_batch(normalize(xb, mean, std), recipe, rng)
            else:
                if do_aug:
                    xb = augment_batch(xb, rng, crop_pad=crop_pad, flip=flip)
                xb = normalize(xb, mean, std)
            t0 = time.perf_counter()
            epoch_losses.append(session.train_step(xb, y[idx]))
            step_times.append(time.perf_counter() - t0)
        losses.append(float(np.mean(epoch_losses)))
        if config.verbose:
            print(f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f}", flush=True)
    train_seconds = time.perf_counter() - t_train

    accuracy = eval_loss = None
    if held_out is not None:
        accuracy, eval_loss = _evaluate(session, held_out[0], held_out[1], batch, mean, std)
    files: dict[str, str] = {}
    if config.save:
        d = bundle["dir"]
        session.save(d / TRAINED_CHECKPOINT, d / TRAINED_INFERENCE, bundle["logits_name"])
        files = {"checkpoint": TRAINED_CHECKPOINT, "inference_model": TRAINED_INFERENCE}

    steps = len(step_times)
    metrics: dict[str, Any] = {
        "loss_per_epoch": losses,
        "final_loss": losses[-1],
        "accuracy": accuracy,
        "eval_loss": eval_loss,
        "eval_samples": None if held_out is None else int(len(held_out[0])),
        "epochs": epochs,
        "steps": steps,
        "batch_size": batch,
        "train_images": int(len(x)),
        "ipc": bundle.get("ipc"),
        "factor": bundle.get("factor"),
        "lr": base_lr,
        "schedule": schedule,
        "optimizer": training.get("optimizer"),
        "augment": {"enabled": do_aug, "crop_pad": crop_pad, "flip": flip},
        "recipe": None if recipe is None else {
            **recipe.to_json(),
            "cutmix": "not applied: the ORT artifacts' loss takes class ids" if recipe.cutmix_prob else "off",
        },
        "soft_labels": ("not used: the ORT artifacts' loss takes class ids (trained on the stored labels)"
                        if has_soft else None),
        "seed": int(config.seed),
        "threads": config.threads,
        # the first step builds ORT's execution plan: reported apart, not in the mean
        "seconds_per_step": float(np.mean(step_times[1:] if steps > 1 else step_times)),
        "seconds_per_step_median": float(np.median(step_times)),
        "first_step_seconds": float(step_times[0]),
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "peak_rss_bytes": peak_rss_bytes(),
        "torch_imported": torch_imported(),
        "onnxruntime": session.C.get_version_string(),
        "files": files,
        "config": asdict(config),
    }
    (bundle["dir"] / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.edge.train",
        description="Train an `edgecond deploy` bundle with ONNX Runtime (no PyTorch); writes metrics.json.",
    )
    p.add_argument("bundle", help="bundle directory (contains manifest.json)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the manifest's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the manifest's)")
    p.add_argument("--seed", type=int, default=0, help="batch order / augmentation seed (default 0)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="LR schedule (default: the manifest's)")
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None, help="force augmentation on")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="train without augmentation")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--no-save", action="store_true", help="do not write the trained checkpoint/inference model")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-epoch lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = EdgeTrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, augment=args.augment,
                             schedule=args.schedule, threads=args.threads, save=not args.no_save,
                             verbose=not args.quiet)
    from edgecond.errors import EdgecondError

    try:
        m = train_bundle(args.bundle, config)
    except EdgecondError as exc:
        print(f"clients.edge.train: error: {exc}", file=sys.stderr)
        return 2
    acc = "n/a (no eval set in the bundle)" if m["accuracy"] is None else f"{m['accuracy']:.4f}"
    print(f"trained {m['steps']} steps ({m['seconds_per_step'] * 1e3:.2f} ms/step), final loss "
          f"{m['final_loss']:.4f}, accuracy {acc}, peak RSS {(m['peak_rss_bytes'] or 0) / 2**20:.1f} MiB; "
          f"wrote {Path(args.bundle) / METRICS_FILE}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
