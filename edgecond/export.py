"""ONNX export and ONNX Runtime on-device training artifacts for registry models.

Two products, both checked before they are reported as done (timm's ``utils/onnx.py`` habit):

* an **inference model** (``inference.onnx``, dynamic batch): :func:`export_onnx`, then
  ``onnx.checker.check_model(full_check=True)`` and onnxruntime's logits compared with torch's
  (:func:`check_inference`);
* **training artifacts** for ONNX Runtime's on-device training (``training_model.onnx``,
  ``eval_model.onnx``, ``optimizer_model.onnx``, ``checkpoint``): :func:`export_training_artifacts`,
  then one ORT training step is compared with one torch step on the same batch (loss, every
  gradient and, for SGD, every updated parameter).

What the export does about ONNX Runtime training's traps (see ``docs/on-device.md``):

* ``InstanceNormalization``/``GroupNormalization`` have no gradient builder in ORT training, so an
  export-time *copy* of the model has every :class:`torch.nn.GroupNorm` (instance norm is
  ``GroupNorm(C, C)``) swapped for :class:`PrimitiveGroupNorm`, the same computation written with
  ReduceMean/Sub/Mul/Sqrt/Div (numerically equal; the parameter names stay the same, so the
  checkpoint's names are the torch ``state_dict`` names). The caller's model is never modified.
* the training artifacts have a **fixed batch size** (``ExportConfig.batch_size``); the edge
  trainer fills its last batch (see ``clients/edge/train.py``). The eval model is generated from
  the dynamic-batch graph, so it and the trainer's ``trained_inference.onnx`` accept any batch.
* the dynamo exporter is called with ``optimize=False`` so initializers are neither folded nor
  merged: each trainable parameter stays one named initializer (checked).
* onnx ≥ 1.18 writes the optimizer model with IR version 14, which ORT 1.19 cannot read: it is
  rewritten with IR version 10.

Models with batch norm (``convnet-bn``, ``resnet10-ap``) or dropout raise :class:`ExportError`:
their training-mode behaviour (batch statistics, random masks) is not reproduced by a graph
exported in eval mode.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ExportError
from .onnx_compat import PrimitiveGroupNorm, make_exportable  # noqa: F401  (re-exported)
from .progress import progress_bar

__all__ = [
    "ExportConfig",
    "ExportCheck",
    "ExportResult",
    "PrimitiveGroupNorm",
    "make_exportable",
    "export_onnx",
    "check_inference",
    "export_training_artifacts",
    "export_model",
    "read_export_info",
    "ARTIFACT_FILES",
    "INFERENCE_FILE",
    "EXPORT_INFO_FILE",
    "INPUT_NAME",
    "LABEL_NAME",
    "TARGETS_NAME",
    "LOSSES",
    "LOGITS_NAME",
    "OPTIMIZERS",
]

log = logging.getLogger(__name__)

#: Files of one set of ORT training artifacts, by role.
ARTIFACT_FILES: dict[str, str] = {
    "training_model": "training_model.onnx",
    "eval_model": "eval_model.onnx",
    "optimizer_model": "optimizer_model.onnx",
    "checkpoint": "checkpoint",
}
INFERENCE_FILE = "inference.onnx"
EXPORT_INFO_FILE = "export.json"
INPUT_NAME = "input"
LABEL_NAME = "labels"
#: graph input of the soft-target loss (``ExportConfig.loss = "soft"``): float32 [B, num_classes]
TARGETS_NAME = "targets"
#: training losses: ``ce`` — cross-entropy over int64 class ids (input ``labels`` [B]);
#: ``soft`` — cross-entropy against target distributions (input ``targets`` [B, L]: soft
#: labels, CutMix-mixed or one-hot), ``-mean_b sum_l t[b, l] log_softmax(z)[b, l]``
LOSSES = ("ce", "soft")
LOGITS_NAME = "logits"
OPTIMIZERS = ("sgd", "adamw")
#: The IR version ORT 1.19 reads at most.
ORT_MAX_IR_VERSION = 10


@dataclass
class ExportConfig:
    """How to export.

    Attributes:
        batch_size: fixed batch size of the training/eval models (ORT training needs one).
        optimizer: ``"sgd"`` (plain SGD: ORT's ``SGDOptimizerV2`` has no momentum or weight
            decay) or ``"adamw"`` (ORT's ``AdamWOptimizer``, betas (0.9, 0.999), eps 1e-6).
        weight_decay: AdamW weight decay baked into the optimizer model (ignored for SGD).
        opset: ONNX opset; ``None`` = the exporter's default.
        inference: also write ``inference.onnx`` with a dynamic batch dimension.
        check: run the checks (checker, ORT vs torch logits, one training step).
        atol: absolute tolerance of the logit/loss/parameter comparisons.
        grad_rtol: tolerance of the gradient comparison, relative to each gradient's max-abs.
        check_lr: learning rate of the checked SGD step.
        loss: ``"ce"`` (class ids) or ``"soft"`` (target distributions: soft labels and CutMix
            reach a device; see :data:`LOSSES`).
    """

    batch_size: int = 32
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    opset: int | None = None
    inference: bool = True
    check: bool = True
    atol: float = 1e-4
    grad_rtol: float = 1e-3
    check_lr: float = 0.05
    loss: str = "ce"

    def validate(self) -> "ExportConfig":
        """Raise :class:`ConfigError` for values that cannot work; returns ``self``."""
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(
                f"batch_size={self.batch_size!r}; expected an integer >= 1 (the fixed batch of the "
                "training artifacts, e.g. --batch 32)."
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}.")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay}; expected a value >= 0.")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r}; expected one of {', '.join(LOSSES)} ('soft' trains on "
                              "target distributions: soft labels, CutMix).")
        return self


@dataclass
class ExportCheck:
    """What the self-check measured (all absolute differences ORT vs torch)."""

    checker: bool = False
    inference_max_abs: float | None = None
    train_loss_torch: float | None = None
    train_loss_ort: float | None = None
    grad_max_rel: float | None = None
    param_max_abs: float | None = None
    eval_logits_max_abs: float | None = None


@dataclass
class ExportResult:
    """What :func:`export_training_artifacts` wrote."""

    directory: Path
    files: dict[str, str]
    bytes: dict[str, int]
    parameter_names: list[str]
    num_parameters: int
    image_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    optimizer: str
    weight_decay: float
    check: ExportCheck | None
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_bytes(self) -> int:
        """Bytes of the four training artifacts (what a device must receive to train)."""
        return sum(self.bytes[role] for role in ARTIFACT_FILES)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["directory"] = str(self.directory)
        d["artifact_bytes"] = self.artifact_bytes
        return d


# --------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """Hold back the C++ log ORT's artifact generation prints to stderr (one INFO line per graph
    transformer); it is logged at DEBUG level, and shown when the block raises."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            if failed and text:
                sys.stderr.write(text[-4000:])
            elif text:
                log.debug("onnxruntime artifact generation log:\n%s", text[-4000:])


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the exporter's chatty loggers (one INFO line per graph pass) to WARNING for a block."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"image_shape={image_shape!r}; expected (C, H, W) with positive sizes.")
    return shape  # type: ignore[return-value]


def export_onnx(
    model: nn.Module,
    image_shape: Sequence[int],
    path: str | Path,
    *,
    batch_size: int | None = None,
    opset: int | None = None,
    exportable: bool = False,
) -> Path:
    """Export ``model`` (logits of normalised images) to ONNX at ``path``.

    ``batch_size=None`` gives a dynamic batch dimension (inference); an int fixes it (training
    artifacts need that). The graph has input ``"input"`` [B, C, H, W] float32 and output
    ``"logits"`` [B, K]. ``exportable=True`` says ``model`` already is a :func:`make_exportable`
    copy. Raises :class:`ExportError` when the exporter fails.
    """
    shape = _check_image_shape(image_shape)
    net = model if exportable else make_exportable(model)
    example_batch = 2 if batch_size is None else int(batch_size)
    x = torch.zeros((example_batch, *shape), dtype=torch.float32)
    kwargs: dict[str, Any] = dict(
        input_names=[INPUT_NAME],
        output_names=[LOGITS_NAME],
        dynamo=True,
        optimize=False,
        verbose=False,
    )
    if opset is not None:
        kwargs["opset_version"] = int(opset)
    if batch_size is None:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx"):
            program = torch.onnx.export(net, (x,), **kwargs)
            program.save(str(path))
        _strip_metadata(path)
    except Exception as exc:  # the exporter raises many types; report one
        raise ExportError(
            f"torch.onnx.export (dynamo) failed for {type(model).__name__} with input shape "
            f"{tuple(x.shape)}: {type(exc).__name__}: {str(exc)[:500]}. Expected a model built from "
            "standard layers (conv, linear, group/instance norm, relu, pooling); fix: export a "
            "registry model such as 'convnet' or 'mlp'."
        ) from exc
    return path


def _strip_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (stack traces, FX names): about half of a
    small model's bytes, useless on a device."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    onnx.save(model, str(path))


def _onnx_check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected {path}: {exc}. Expected a valid ONNX model; "
                          "this is a bug in the export, please report it.") from exc


def check_inference(
    model: nn.Module,
    path: str | Path,
    image_shape: Sequence[int],
    *,
    batch_size: int = 4,
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """``onnx.checker`` (full check), then onnxruntime's logits vs torch's on a random batch.

    Returns the max absolute difference; raises :class:`ExportError` above ``atol``.
    """
    import onnxruntime

    path = Path(path)
    _onnx_check(path)
    shape = _check_image_shape(image_shape)
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn((batch_size, *shape), generator=g)
    net = copy.deepcopy(model).cpu().float().eval()
    with torch.no_grad():
        want = net(x).numpy()
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([LOGITS_NAME], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.max(np.abs(got - want)))
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(
            f"{path}: onnxruntime logits differ from torch by {diff:.3g} (expected <= atol={atol}). "
            "The exported graph does not compute the model; please report it with the model config."
        )
    return diff


# --------------------------------------------------------------------------------------------
# training artifacts
# --------------------------------------------------------------------------------------------


def _soft_target_loss(onnxblock):
    """An onnxblock loss: cross-entropy of the logits against a float32 ``targets`` [B, L] input,
    ``-(1/B) sum_{b,l} t log_softmax(z)`` (= ``-L · mean(t · log_softmax(z))``), built from
    LogSoftmax, Mul and ReduceMean (ops with ORT gradient builders)."""
    import onnx

    class SoftTargetCrossEntropy(onnxblock.Block):
        def build(self, scores_name: str, targets_name: str = TARGETS_NAME) -> str:
            g = self.base.graph
            scores = next(o for o in g.output if o.name == scores_name)
            if not any(i.name == targets_name for i in g.input):
                t = copy.deepcopy(scores)
                t.name = targets_name
                t.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
                g.input.append(t)
            width = scores.type.tensor_type.shape.dim[-1].dim_value
            uid = f"edgecond_softce_{len(g.node)}"
            scale = f"{uid}_scale"
            g.initializer.append(onnx.numpy_helper.from_array(np.asarray(-float(width), np.float32), scale))
            g.node.extend([
                onnx.helper.make_node("LogSoftmax", [scores_name], [f"{uid}_logp"], axis=-1, name=f"{uid}_ls"),
                onnx.helper.make_node("Mul", [f"{uid}_logp", targets_name], [f"{uid}_tl"], name=f"{uid}_mul"),
                onnx.helper.make_node("ReduceMean", [f"{uid}_tl"], [f"{uid}_mean"], keepdims=0, name=f"{uid}_rm"),
                onnx.helper.make_node("Mul", [f"{uid}_mean", scale], [f"{uid}_loss"], name=f"{uid}_neg"),
            ])
            return f"{uid}_loss"

    return SoftTargetCrossEntropy()


def _generate(onnx_path: Path, out_dir: Path, param_names: list[str], config: ExportConfig) -> None:
    import onnx

    with _quiet_ort():
        from onnxruntime.training import artifacts, onnxblock

        base = onnx.load(str(onnx_path))
        init_names = {t.name for t in base.graph.initializer}
        missing = [n for n in param_names if n not in init_names]
        if missing:
            raise ExportError(
                f"the exported graph has no initializer named {missing[:5]} (parameters of the torch "
                f"model; found {sorted(init_names)[:10]}). Expected every parameter to stay one named "
                "initializer; the exporter folded or merged them. Fix: a model whose parameters are "
                "used directly by its layers (no weight sharing or parameter arithmetic)."
            )
        frozen = sorted(init_names - set(param_names))
        if config.optimizer == "sgd":
            optimizer: Any = artifacts.OptimType.SGD
        else:
            optimizer = onnxblock.optim.AdamW(weight_decay=float(config.weight_decay))
        try:
            artifacts.generate_artifacts(
                base,
                requires_grad=list(param_names),
                frozen_params=frozen,
                loss=(_soft_target_loss(onnxblock) if config.loss == "soft"
                      else artifacts.LossType.CrossEntropyLoss),
                optimizer=optimizer,
                artifact_directory=str(out_dir),
                additional_output_names=[LOGITS_NAME],
            )
        except Exception as exc:
            raise ExportError(
                f"onnxruntime.training could not build training artifacts: {type(exc).__name__}: "
                f"{str(exc)[:500]}. Expected ops with gradient builders (conv, gemm, relu, pooling, "
                "primitive norm ops); fix: export a registry model such as 'convnet' or 'mlp'."
            ) from exc
    opt_path = out_dir / ARTIFACT_FILES["optimizer_model"]
    opt = onnx.load(str(opt_path))
    if opt.ir_version > ORT_MAX_IR_VERSION:
        opt.ir_version = ORT_MAX_IR_VERSION
        onnx.save(opt, str(opt_path))
    for role in ("training_model", "eval_model"):
        p = out_dir / ARTIFACT_FILES[role]
        m = onnx.load(str(p))
        if m.ir_version > ORT_MAX_IR_VERSION:
            m.ir_version = ORT_MAX_IR_VERSION
            onnx.save(m, str(p))


def export_training_artifacts(
    model: nn.Module,
    image_shape: Sequence[int],
    num_classes: int,
    out_dir: str | Path,
    *,
    config: ExportConfig | None = None,
    seed: int = 0,
    model_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> ExportResult:
    """Write ORT training artifacts (and, with ``config.inference``, ``inference.onnx``) for
    ``model`` into ``out_dir``, check them against torch, and write ``export.json``.

    ``progress``: one bar over the export steps (log lines when stderr is not a terminal).

    The checkpoint holds the weights of ``model`` as given (so a torch run from the same
    initialisation is reproducible); parameter names are ``model.state_dict()`` names.
    ``seed`` draws the random check batch only.
    """
    config = (config or ExportConfig()).validate()
    shape = _check_image_shape(image_shape)
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes={num_classes}; expected >= 2 for a cross-entropy training model.")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = _exportable_logits_model(model, shape, int(num_classes), model_info)
    param_names = [n for n, _ in net.named_parameters()]
    check = ExportCheck()
    files: dict[str, str] = dict(ARTIFACT_FILES)
    steps = 2 + bool(config.inference) + int(config.check) * (2 + bool(config.inference))
    bar = progress_bar(total=steps, desc=f"export {(model_info or {}).get('name', type(model).__name__)}",
                       unit="step", disable=not progress)

    def step(done: str) -> None:
        bar.set_postfix_str(done)
        bar.update(1)

    try:
        with _scratch(out) as scratch:
            base_path = export_onnx(net, shape, scratch / "base.onnx", batch_size=config.batch_size,
                                    opset=config.opset, exportable=True)
            step("training graph exported")
            if config.check:
                _onnx_check(base_path)
                check.checker = True
                step("onnx.checker ok")
            _generate(base_path, out, param_names, config)
            # the same graph with a dynamic batch axis: it gives the eval model (so the trainer's
            # export_model_for_inferencing writes a dynamic-batch model) and inference.onnx
            dyn_path = export_onnx(net, shape, scratch / "dynamic.onnx", opset=config.opset, exportable=True)
            _dynamic_eval_model(dyn_path, out, scratch / "dynamic", param_names, config)
            step("ORT training artifacts written")
            if config.inference:
                inf_path = out / INFERENCE_FILE
                shutil.copyfile(dyn_path, inf_path)
                files["inference_model"] = INFERENCE_FILE
                step("inference model exported")
        if config.inference:
            if config.check:
                check.inference_max_abs = check_inference(model, inf_path, shape, atol=config.atol, seed=seed)
                step("inference checked against torch")
        if config.check:
            train_check = _training_check()(net, out, shape, int(num_classes), config, seed)
            train_check.checker, train_check.inference_max_abs = check.checker, check.inference_max_abs
            check = train_check
            step("training step checked against torch")
    finally:
        bar.close()
    sizes = {role: (out / name).stat().st_size for role, name in files.items()}
    result = ExportResult(
        directory=out,
        files=files,
        bytes=sizes,
        parameter_names=param_names,
        num_parameters=int(sum(p.numel() for p in net.parameters())),
        image_shape=shape,
        num_classes=int(num_classes),
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        weight_decay=float(config.weight_decay) if config.optimizer == "adamw" else 0.0,
        check=check if config.check else None,
        seconds=time.perf_counter() - t0,
        model=dict(model_info or {"class": type(model).__name__}),
    )
    _write_export_info(out, result, config)
    return result


def _exportable_logits_model(model: nn.Module, shape: tuple[int, int, int], num_classes: int,
                             model_info: dict[str, Any] | None) -> nn.Module:
    """The export-time copy of ``model`` (:func:`make_exportable`), checked to output ``[B, K]`` logits."""
    net = make_exportable(model, name=(model_info or {}).get("name", type(model).__name__))
    with torch.no_grad():
        probe = net(torch.zeros((1, *shape)))
    if probe.dim() != 2 or probe.shape[1] != int(num_classes):
        raise ExportError(
            f"the model maps {tuple(shape)} images to outputs of shape {tuple(probe.shape)}; expected "
            f"[B, {num_classes}] logits. Fix: build the model with num_classes={num_classes}."
        )
    return net


def _write_export_info(out: Path, result: ExportResult, config: ExportConfig) -> None:
    """``export.json``: the result plus the format, the graph's tensor names and the tool versions."""
    info = result.to_dict()
    info.update(format="edgecond-export", version=1, input_name=INPUT_NAME,
                label_name=TARGETS_NAME if config.loss == "soft" else LABEL_NAME, loss=config.loss,
                logits_name=LOGITS_NAME, versions=_versions())
    (out / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _dynamic_eval_model(dyn_path: Path, out: Path, scratch: Path, param_names: list[str],
                        config: ExportConfig) -> None:
    """Replace ``out``'s eval model by one generated from the dynamic-batch graph.

    The training, optimizer and checkpoint artifacts keep the fixed batch (ORT on-device training
    needs it); the eval model (same parameter names, no weights inside) accepts any batch, and so
    does the inference model the trainer derives from it. When ORT cannot build it, the fixed
    eval model stays and a warning says so.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        _generate(dyn_path, scratch, param_names, config)
    except ExportError as exc:
        log.warning("kept a fixed-batch eval model (the dynamic one failed: %s)", exc)
        return
    shutil.copyfile(scratch / ARTIFACT_FILES["eval_model"], out / ARTIFACT_FILES["eval_model"])


@contextlib.contextmanager
def _scratch(out: Path) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        yield Path(tmp)


def _versions() -> dict[str, str]:
    import onnx
    from onnxruntime.capi import _pybind_state as C

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": C.get_version_string()}


def export_model(
    name: str,
    image_shape: Sequence[int],
    num_classes: int,
    out_dir: str | Path,
    *,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    config: ExportConfig | None = None,
    progress: bool = True,
) -> ExportResult:
    """Build registry model ``name`` (initialised with ``seed``) and export its artifacts.

    See :func:`export_training_artifacts`. ``export.json`` records the name, kwargs and seed, so
    the same torch initialisation can be rebuilt with ``build_model(name, ..., seed=seed)``.
    """
    from .models import build_model

    kwargs = dict(model_kwargs or {})
    model = build_model(name, image_shape, num_classes, seed=seed, **kwargs)
    info = {"name": name, "kwargs": kwargs, "seed": int(seed)}
    return export_training_artifacts(model, image_shape, num_classes, out_dir, config=config,
                                     seed=seed, model_info=info, progress=progress)


def read_export_info(directory: str | Path) -> dict[str, Any]:
    """Read ``export.json`` of an export directory (raises :class:`ExportError` if absent/broken)."""
    path = Path(directory) / EXPORT_INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist; expected an `edgecond export` output directory. "
                          "Run `edgecond export --model M --dataset D -o DIR` first.") from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not readable JSON ({exc}); re-run `edgecond export`.") from None
    if info.get("format") != "edgecond-export":
        raise ExportError(f"{path} has format {info.get('format')!r}; expected 'edgecond-export'.")
    return info


def _training_check():
    """The self-check (a module of its own, imported when an export is checked)."""
    from .export_check import check_training_step

    return check_training_step
