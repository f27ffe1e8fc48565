"""The export's self-check: one ONNX Runtime training step of the artifacts against torch."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .export import ARTIFACT_FILES, ExportCheck, ExportConfig

__all__ = ["check_training_step"]


def _ort_training(out_dir: Path, lr: float, threads: int = 1):
    """(state, module, optimizer) from ORT's pybind training classes."""
    from onnxruntime.capi import _pybind_state as C

    state = C.load_checkpoint(str(out_dir / ARTIFACT_FILES["checkpoint"]))
    device = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
    options = C.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the optimizer graph's harmless shape-merge warning
    module = C.Module(
        str(out_dir / ARTIFACT_FILES["training_model"]), state,
        str(out_dir / ARTIFACT_FILES["eval_model"]), device, options,
    )
    optimizer = C.Optimizer(str(out_dir / ARTIFACT_FILES["optimizer_model"]), state, device, options)
    optimizer.set_learning_rate(float(lr))
    return state, module, optimizer


def check_training_step(
    net: nn.Module, out_dir: Path, shape: tuple[int, int, int], num_classes: int, config: ExportConfig, seed: int
) -> ExportCheck:
    from onnxruntime.capi import _pybind_state as C

    check = ExportCheck()
    g = torch.Generator().manual_seed(int(seed) + 1)
    x = torch.randn((config.batch_size, *shape), generator=g)
    y = torch.randint(0, num_classes, (config.batch_size,), generator=g)
    if config.loss == "soft":  # random target distributions
        y = torch.softmax(2.0 * torch.randn((config.batch_size, num_classes), generator=g), dim=1)
    target = y.numpy().astype(np.float32) if config.loss == "soft" else y.numpy().astype(np.int64)
    params = dict(net.named_parameters())

    # torch: one step
    ref = copy.deepcopy(net).train()
    ref_params = dict(ref.named_parameters())
    loss = (-(y * torch.log_softmax(ref(x), dim=1)).sum(1).mean() if config.loss == "soft"
            else nn.functional.cross_entropy(ref(x), y))
    ref.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in ref_params.items()}
    with torch.no_grad():
        after = {n: (p - config.check_lr * p.grad).numpy() for n, p in ref_params.items()}
    check.train_loss_torch = loss.item()

    # ORT: one step (in memory; the checkpoint file is not rewritten)
    state, module, optimizer = _ort_training(out_dir, config.check_lr)
    fetches = C.OrtValueVector()
    module.lazy_reset_grad()
    module.train_step([x.numpy(), target], fetches)
    check.train_loss_ort = float(fetches[0].numpy())
    # relative to the largest gradient of the model: some gradients are zero in exact arithmetic
    # (a conv bias followed by instance norm) and only rounding noise in both frameworks
    scale = max(max(float(np.max(np.abs(g))) for g in grads.values()), 1e-6)
    worst = 0.0
    for n in params:
        got = state.get_parameter(n).grad.numpy()
        worst = max(worst, float(np.max(np.abs(got - grads[n]))) / scale)
    check.grad_max_rel = worst
    optimizer.optimizer_step()
    if config.optimizer == "sgd":
        check.param_max_abs = max(
            float(np.max(np.abs(state.get_parameter(n).data.numpy() - after[n]))) for n in params
        )
    # eval model logits with the initial weights would need a fresh state: compare after the step
    fetches = C.OrtValueVector()
    module.eval_step([x.numpy(), target], fetches)
    stepped = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in stepped.named_parameters():
            p.copy_(torch.from_numpy(state.get_parameter(n).data.numpy()))
        want = stepped(x).numpy()
    check.eval_logits_max_abs = float(np.max(np.abs(fetches[1].numpy() - want)))

    problems = []
    if not abs(check.train_loss_ort - check.train_loss_torch) <= config.atol:
        problems.append(f"loss {check.train_loss_ort:.6g} vs torch {check.train_loss_torch:.6g}")
    if not worst <= config.grad_rtol:
        problems.append(f"gradients differ by {worst:.3g} of their scale (grad_rtol={config.grad_rtol})")
    if check.param_max_abs is not None and not check.param_max_abs <= config.atol:
        problems.append(f"parameters after one SGD step differ by {check.param_max_abs:.3g}")
    if not check.eval_logits_max_abs <= config.atol * 10:
        problems.append(f"eval-model logits differ by {check.eval_logits_max_abs:.3g}")
    if problems:
        raise ExportError(
            f"{out_dir}: one ONNX Runtime training step does not match torch: {'; '.join(problems)} "
            f"(expected differences <= atol={config.atol}). Please report it with the model config."
        )
    return check
