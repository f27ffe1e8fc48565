"""The federated apps' shared model pieces: data, the model, weights <-> arrays, test accuracy.

The ServerApp (central evaluation) and the ClientApp (``clients/task.py``) both import them from
here, so the server does not import the client's code. Needs torch.
"""
from __future__ import annotations

import functools
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageDataset, load_dataset
from ..errors import FederatedError
from ..models import build_model
from ..utils import resolve_device
from .flower_config import FederatedConfig

__all__ = ["load_data", "build_net", "state_to_numpy", "numpy_to_state", "test", "central_evaluate"]


@functools.lru_cache(maxsize=4)
def load_data(name: str) -> ImageDataset:
    """The dataset (cached per process: simulation runs many ClientApp calls in one worker)."""
    return load_dataset(name)


def build_net(cfg: FederatedConfig, dataset: ImageDataset) -> nn.Module:
    """The shared model (same seed everywhere, so every node starts from the same weights)."""
    kwargs = {"width": cfg.model_width} if cfg.model.startswith("convnet") else {}
    return build_model(cfg.model, dataset.image_shape, dataset.num_classes, seed=cfg.seed, **kwargs)


def state_to_numpy(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def numpy_to_state(net: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    state = net.state_dict()
    missing = set(state) - set(arrays)
    if missing:
        raise FederatedError(
            f"received model arrays lack {sorted(missing)[:3]}...; the server and client models "
            "differ. Use the same model / model-width / dataset on both sides."
        )
    for k in state:
        a = np.asarray(arrays[k])
        if tuple(a.shape) != tuple(state[k].shape) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) \
                or (np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()):
            raise FederatedError(
                f"received model array {k!r} is {a.dtype} {list(a.shape)}; expected finite numbers of shape "
                f"{list(state[k].shape)}. The server and client models differ or the message is damaged."
            )
    net.load_state_dict({k: torch.as_tensor(np.asarray(arrays[k])).to(state[k].dtype)
                         for k in state})


@torch.no_grad()
def test(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, normalize, device="cpu",
         batch_size: int = 512) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``net`` on pixel-space ``x``."""
    if len(x) == 0:
        return 0.0, 0.0
    device = resolve_device(device)
    net.to(device).eval()
    loss, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        xb = normalize(x[s:s + batch_size]).to(device)
        yb = y[s:s + batch_size].to(device)
        out = net(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return loss / len(x), correct / len(x)


def central_evaluate(cfg: FederatedConfig, arrays: Mapping[str, np.ndarray]) -> dict:
    """Server-side accuracy of the global model on the dataset's test split."""
    dataset = load_data(cfg.dataset)
    net = build_net(cfg, dataset)
    numpy_to_state(net, arrays)
    loss, acc = test(net, dataset.x_test, dataset.y_test, normalize=dataset.normalize, device=cfg.device)
    return {"test-loss": float(loss), "test-acc": float(acc)}
