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
enables it, horizontal flip (per image, pixel space).

**Soft labels and CutMix** need a loss over target distributions. A bundle whose manifest says
``"loss": "soft"`` (``edgecond deploy`` exports that by default when the buffer has soft
labels; :data:`edgecond.export.LOSSES`) has artifacts whose second input is ``targets`` float32
[B, num_classes]: the trainer feeds the buffer's soft labels (:func:`edgecond.recipe.targets_of`:
softmax of the stored logits at the recipe's temperature; one-hot where a buffer has none) and
applies the recipe's CutMix (:func:`edgecond.recipe.cutmix_batch`). With ``"loss": "ce"``
(class ids, older bundles) it trains on the stored class ids and says in ``metrics.json`` that
soft labels / CutMix were not used.

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

from edgecond.deploy import bundle_file, check_onnx_external_data, read_manifest, write_file_atomic
from edgecond.errors import ConfigError, ExportError

__all__ = [
    "EdgeTrainConfig",
    "train_bundle",
    "epoch_batches",
    "augment_batch",
    "lr_at",
    "normalize",
    "load_training_arrays",
    "load_targets",
    "load_prefix",
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


def load_prefix(bundle: dict[str, Any], buf=None):
    """The bundle's buffer slice as every client reads a prefix
    (:func:`edgecond.prefix.prefix_arrays`: images, labels, targets over the manifest's
    ``num_classes``, normalisation, recipe). Its normalisation must be the manifest's."""
    from edgecond.prefix import prefix_arrays

    buf = _bundle_buffer(bundle) if buf is None else buf
    p = prefix_arrays(buf, num_classes=int(bundle["num_classes"]),
                      flips=bool(bundle["training"]["augment"].get("flip", False)))
    for key in ("mean", "std"):
        if not np.allclose(getattr(p, key), bundle[key], rtol=1e-6, atol=1e-7):
            raise ConfigError(f"bundle {bundle['dir']}: the manifest's {key} {bundle[key]} differs from its buffer's "
                              f"{list(getattr(p, key))}; re-create the bundle with `edgecond deploy`.")
    return p


def load_training_arrays(bundle: dict[str, Any], buf=None) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's buffer slice decoded for training: x float32 [M, C, H, W] pixel, y int64 [M].
    ``buf``: the slice already read by :func:`_bundle_buffer` (read here when omitted)."""
    p = load_prefix(bundle, buf)
    return p.x, p.y


def _check_buffer_fits_manifest(buf, bundle: dict[str, Any]) -> None:
    """The slice must match what the manifest (and so the exported model) says."""
    shape = bundle.get("image_shape")
    where = f"bundle {bundle['dir']}"
    if shape is not None and tuple(buf.image_shape) != tuple(shape):
        raise ConfigError(f"{where}: the buffer holds {list(buf.image_shape)} images, the manifest says {shape}; "
                          "re-create the bundle with `edgecond deploy`.")
    if len(bundle["mean"]) != buf.image_shape[0]:
        raise ConfigError(f"{where}: mean/std have {len(bundle['mean'])} channels, the buffer's images "
                          f"{buf.image_shape[0]}; re-create the bundle.")
    if max(buf.labels) >= bundle["num_classes"]:
        raise ConfigError(f"{where}: the buffer has label {max(buf.labels)}, the model {bundle['num_classes']} "
                          "classes; re-create the bundle.")


def _bundle_buffer(bundle: dict[str, Any]):
    """The bundle's buffer slice, read from inside the bundle (confined path) and checked against
    the manifest."""
    from edgecond.buffer import MultisizeBuffer

    buf = MultisizeBuffer.load(bundle_file(bundle, "buffer"))
    _check_buffer_fits_manifest(buf, bundle)
    return buf


def bundle_recipe(bundle: dict[str, Any], buf=None):
    """The training recipe the bundle's buffer slice carries (``None`` for older slices); its
    flip policy is the manifest's (the data facts recorded at deploy time). ``buf``: as in
    :func:`load_training_arrays`."""
    from edgecond.recipe import with_flips

    rec = (_bundle_buffer(bundle) if buf is None else buf).meta.recipe
    if rec is None:
        return None
    return with_flips(rec, bool(bundle["training"]["augment"].get("flip", rec.flips)) and rec.flips)


def load_eval_arrays(bundle: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The bundle's held-out set (x float32 pixel, y int64), or ``None`` if it has none."""
    name = bundle["files"].get("eval")
    if not name:
        return None
    from safetensors import SafetensorError, safe_open

    from edgecond.buffer import decode_budget

    path = bundle_file(bundle, "eval")
    fix = "expected a safetensors file with tensors 'x' [M, C, H, W] and 'y' [M] as written by `edgecond deploy --eval-samples N`"
    try:
        with safe_open(str(path), framework="numpy") as fh:
            if set(fh.keys()) != {"x", "y"}:
                raise ConfigError(f"{path}: tensors {sorted(fh.keys())[:5]}; {fix}.")
            xs, ys = fh.get_slice("x"), fh.get_slice("y")
            xshape, yshape = list(xs.get_shape()), list(ys.get_shape())
            if len(xshape) != 4 or yshape != xshape[:1] or xs.get_dtype() not in ("U8", "F32") \
                    or ys.get_dtype() not in ("I64", "I32", "U8"):
                raise ConfigError(f"{path}: x is {xs.get_dtype()} {xshape}, y {ys.get_dtype()} {yshape}; {fix}.")
            need = 8 * math.prod(xshape)
            if need > decode_budget():
                raise ConfigError(f"{path}: the eval set would need {need} bytes, above the decoding budget "
                                  f"{decode_budget()} (EDGECOND_DECODE_BUDGET); the bundle is damaged or hostile.")
            x, y = fh.get_tensor("x"), fh.get_tensor("y")
    except (OSError, SafetensorError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: not a readable eval set ({exc}); {fix}.") from None
    shape = bundle.get("image_shape")
    if shape is not None and list(x.shape[1:]) != list(shape):
        raise ConfigError(f"{path}: eval images are {list(x.shape[1:])}, the manifest says {shape}; {fix}.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= bundle["num_classes"]):
        raise ConfigError(f"{path}: eval labels span {int(y.min())}..{int(y.max())}; expected 0..{bundle['num_classes'] - 1} "
                          "(the manifest's num_classes).")
    if len(y) == 0:
        raise ConfigError(f"{path}: the eval set is empty; {fix}.")
    if x.dtype == np.uint8:  # stored as pixel × 255
        return x.astype(np.float32) / np.float32(255.0), y
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(f"{path}: eval images contain NaN or infinite values; {fix}.")
    return x, y


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
        paths = {}
        for role in ("training_model", "eval_model", "optimizer_model", "checkpoint"):
            paths[role] = bundle_file(bundle, role)  # confined to the bundle, a regular file
            if not paths[role].exists():
                raise ExportError(f"{paths[role]} is missing; expected the bundle's {role}. "
                                  "Re-create the bundle with `edgecond deploy`.")
            if role != "checkpoint":
                check_onnx_external_data(paths[role])  # ORT would follow external-data locations
        try:
            self.state = C.load_checkpoint(str(paths["checkpoint"]))
            device = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
            options = C.SessionOptions()
            if threads:
                options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.module = C.Module(str(paths["training_model"]), self.state, str(paths["eval_model"]),
                                   device, options)
            self.optimizer = C.Optimizer(str(paths["optimizer_model"]), self.state, device, options)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidArgument, ...)
            raise ExportError(f"bundle {bundle['dir']}: ONNX Runtime cannot load the training artifacts "
                              f"({type(exc).__name__}: {str(exc)[:300]}); they are damaged or do not match. "
                              "Re-create the bundle with `edgecond deploy`.") from None

    def set_lr(self, lr: float) -> None:
        self.optimizer.set_learning_rate(float(lr))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        fetches = self.C.OrtValueVector()
        try:
            self.module.lazy_reset_grad()
            self.module.train_step([x, y], fetches)
            self.optimizer.optimizer_step()
            return float(fetches[0].numpy())
        except Exception as exc:  # ORT's own exception types: the artifacts do not fit the data
            raise ExportError(f"ONNX Runtime training step failed on a batch {list(x.shape)} ({type(exc).__name__}: "
                              f"{str(exc)[:300]}); the bundle's model does not match its data. Re-create it.") from None

    def logits(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        fetches = self.C.OrtValueVector()
        try:
            self.module.eval_step([x, y], fetches)
            return fetches[1].numpy()
        except Exception as exc:
            raise ExportError(f"ONNX Runtime eval step failed on a batch {list(x.shape)} ({type(exc).__name__}: "
                              f"{str(exc)[:300]}); the bundle's model does not match its data. Re-create it.") from None

    def save(self, checkpoint: Path, inference: Path, logits_name: str) -> None:
        """ORT writes into a fresh private directory; the files are then renamed into place, so a
        symbolic link planted at either name is replaced, never written through."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix=".trained-", dir=checkpoint.parent) as tmp:
            t_ckpt, t_inf = Path(tmp) / checkpoint.name, Path(tmp) / inference.name
            try:
                self.C.save_checkpoint(self.state, str(t_ckpt), False)
                self.module.export_model_for_inferencing(str(t_inf), [logits_name])
            except Exception as exc:  # ORT's own exception types
                raise ExportError(f"cannot export the trained model ({type(exc).__name__}: {str(exc)[:300]}); "
                                  f"check logits_name {logits_name!r} in the manifest.") from None
            os.replace(t_ckpt, checkpoint)
            os.replace(t_inf, inference)


def _evaluate(session: _Session, x: np.ndarray, y: np.ndarray, batch: int, mean, std,
              num_classes: int | None = None) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on (x, y), padded fixed-size batches (``num_classes``:
    soft-target artifacts, fed one-hot targets)."""
    n = len(x)
    correct, loss_sum = 0, 0.0
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        real = len(idx)
        idx = np.concatenate([idx, np.full(batch - real, idx[0])]) if real < batch else idx
        lab = y[idx] if num_classes is None else np.eye(num_classes, dtype=np.float32)[y[idx]]
        logits = session.logits(normalize(x[idx], mean, std), lab)[:real].astype(np.float64)
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

    buf = _bundle_buffer(bundle)  # read and verified once
    prefix = load_prefix(bundle, buf)
    x, y = prefix.x, prefix.y
    soft_loss = bundle.get("loss", "ce") == "soft"
    _check_batch_memory(x.shape, batch, crop_pad)
    held_out = load_eval_arrays(bundle)
    recipe = bundle_recipe(bundle, buf) if do_aug else None
    has_soft = buf.has_soft_labels
    targets = load_targets(bundle, buf, prefix) if soft_loss else None
    session = _Session(bundle, config.threads)
    rng = np.random.default_rng(int(config.seed))

    losses: list[float] = []
    step_times: list[float] = []
    cutmixed = 0
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
            yb = y[idx]
            if targets is not None:  # soft-target artifacts: distributions, CutMix by the recipe
                yb = targets[idx]
                if recipe is not None and recipe.cutmix_prob > 0 and rng.random() < recipe.cutmix_prob:
                    from edgecond import recipe as _recipe

                    xb, yb = _recipe.cutmix_batch(xb, yb, rng)
                    cutmixed += 1
            t0 = time.perf_counter()
            loss = session.train_step(np.ascontiguousarray(xb, dtype=np.float32), yb)
            step_times.append(time.perf_counter() - t0)
            if not math.isfinite(loss):
                raise ConfigError(f"training became non-finite (loss {loss}) at epoch {epoch + 1}, step "
                                  f"{len(epoch_losses) + 1} with lr {lr_at(epoch, epochs, base_lr, schedule)}; "
                                  "lower --lr or check the manifest's mean/std. Nothing was saved.")
            epoch_losses.append(loss)
        losses.append(float(np.mean(epoch_losses)))
        if config.verbose:
            print(f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f}", flush=True)
    train_seconds = time.perf_counter() - t_train

    accuracy = eval_loss = None
    if held_out is not None:
        accuracy, eval_loss = _evaluate(session, held_out[0], held_out[1], batch, mean, std,
                                        num_classes=int(bundle["num_classes"]) if soft_loss else None)
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
        "loss": "soft" if soft_loss else "ce",
        "recipe": None if recipe is None else {
            **recipe.to_json(),
            "cutmix": ("off" if not recipe.cutmix_prob else
                       f"applied to {cutmixed} of {len(step_times)} batches" if soft_loss else
                       "not applied: the ORT artifacts' loss takes class ids"),
        },
        "soft_labels": (None if not has_soft else
                        "used: soft-target loss on the buffer's soft labels" if soft_loss else
                        "not used: the ORT artifacts' loss takes class ids (trained on the stored labels)"),
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
    write_file_atomic(bundle["dir"] / METRICS_FILE, (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def load_targets(bundle: dict[str, Any], buf=None, prefix=None) -> np.ndarray:
    """Target distributions [M, num_classes] of the slice for soft-target artifacts: the
    buffer's soft labels (softmax of the stored logits at the recipe's temperature) in training
    order, or one-hot labels when the buffer has none (:func:`load_prefix`)."""
    p = load_prefix(bundle, buf) if prefix is None else prefix
    k = int(bundle["num_classes"])
    t, y = p.targets, p.y
    if t.shape != (len(y), k):
        raise ConfigError(f"bundle {bundle['dir']}: the buffer's soft labels have {t.shape[1]} entries per image, "
                          f"the model {k} outputs; re-create the bundle with `edgecond deploy`.")
    return np.ascontiguousarray(t, dtype=np.float32)


def _check_batch_memory(shape: tuple[int, ...], batch: int, crop_pad: int) -> None:
    """A batch with its padded augmentation copy must fit the decoding budget (EDGECOND_DECODE_BUDGET)."""
    from edgecond.buffer import decode_budget

    _, c, h, w = shape
    need = 4 * batch * c * (h * w * 3 + (h + 2 * crop_pad) * (w + 2 * crop_pad))
    if need > decode_budget():
        raise ConfigError(f"batch_size {batch} with crop_pad {crop_pad} on {c}x{h}x{w} images would need {need} bytes "
                          f"per step, above the decoding budget {decode_budget()} (EDGECOND_DECODE_BUDGET).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.edge.train",
        description="Train an `edgecond deploy` bundle with ONNX Runtime (no PyTorch); writes metrics.json.",
    )
    p.add_argument("bundle", help="bundle directory (contains manifest.json)")
    from edgecond.commands.checks import float_arg, int_arg

    p.add_argument("--epochs", type=int_arg(1, 100_000), default=None, help="epochs (default: the manifest's)")
    p.add_argument("--lr", type=float_arg(0.0, 100.0, lo_open=True), default=None,
                   help="learning rate (default: the manifest's)")
    p.add_argument("--seed", type=int_arg(0), default=0, help="batch order / augmentation seed (default 0)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="LR schedule (default: the manifest's)")
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None, help="force augmentation on")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="train without augmentation")
    p.add_argument("--threads", type=int_arg(1, 4096), default=None, help="ONNX Runtime intra-op threads (default: all cores)")
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
