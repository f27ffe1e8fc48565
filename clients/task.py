"""Model, partition, train and test helpers of the federated apps (Flower quickstart shape).

``servers/server_app.py`` (central evaluation), ``clients/client_app.py`` and
``benchmarks/federated.py`` all use these functions, so the benchmark's in-process rounds do
exactly what a ClientApp does. Byte accounting and the buffer transfer logic live in
:mod:`edgecond.federated`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecond.data import ImageDataset, load_dataset
from edgecond.errors import FederatedError
from edgecond.federated import FederatedConfig, PrefixCache
from edgecond.models import build_model
from edgecond.utils import make_generator, resolve_device

__all__ = [
    "load_data",
    "partition_indices",
    "local_data",
    "build_net",
    "state_to_numpy",
    "numpy_to_state",
    "train",
    "test",
    "client_round",
    "ClientResult",
    "client_evaluate",
    "central_evaluate",
]


@functools.lru_cache(maxsize=4)
def load_data(name: str) -> ImageDataset:
    """The dataset (cached per process: simulation runs many ClientApp calls in one worker)."""
    return load_dataset(name)


@functools.lru_cache(maxsize=16)
def _partitions(labels: tuple, num_partitions: int, partitioner: str, alpha: float,
                seed: int) -> tuple:
    """All partitions' index arrays, from flwr-datasets on an in-memory ``datasets.Dataset``."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    ds = Dataset.from_dict({"label": list(labels), "index": list(range(len(labels)))})
    if partitioner == "iid":
        part = IidPartitioner(num_partitions=num_partitions)
    else:
        min_size = max(1, min(10, len(labels) // (2 * num_partitions)))
        part = DirichletPartitioner(num_partitions=num_partitions, partition_by="label",
                                    alpha=float(alpha), min_partition_size=min_size,
                                    self_balancing=False, shuffle=True, seed=int(seed))
    part.dataset = ds
    return tuple(np.asarray(part.load_partition(i)["index"], dtype=np.int64)
                 for i in range(num_partitions))


def partition_indices(labels, partition_id: int, num_partitions: int, *, partitioner: str = "dirichlet",
                      alpha: float = 0.1, seed: int = 0) -> np.ndarray:
    """Training-set indices of partition ``partition_id`` (Dirichlet over labels, or IID)."""
    if not 0 <= int(partition_id) < int(num_partitions):
        raise FederatedError(
            f"partition-id {partition_id} is outside [0, {num_partitions}); set the node's "
            "--node-config 'partition-id=I num-partitions=N' with 0 <= I < N."
        )
    y = tuple(int(v) for v in np.asarray(labels).reshape(-1))
    try:
        parts = _partitions(y, int(num_partitions), partitioner, float(alpha), int(seed))
    except ValueError as err:
        raise FederatedError(
            f"cannot split {len(y)} examples into {num_partitions} {partitioner} partitions "
            f"(alpha={alpha}): {err}. Use fewer partitions or a larger dirichlet-alpha."
        ) from None
    return parts[int(partition_id)]


def local_data(dataset: ImageDataset, cfg: FederatedConfig, partition_id: int, num_partitions: int,
               indices: np.ndarray | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_val, y_val)`` of one client: its partition split 80/20.

    ``indices`` (the partition's training-set indices, e.g. cached in ``context.state``) skips
    recomputing the partition."""
    idx = indices if indices is not None else partition_indices(
        dataset.y_train.numpy(), partition_id, num_partitions,
        partitioner=cfg.partitioner, alpha=cfg.dirichlet_alpha, seed=cfg.seed)
    idx = np.asarray(idx, dtype=np.int64)
    rng = np.random.default_rng([cfg.seed, int(partition_id)])
    idx = idx[rng.permutation(len(idx))]
    n_val = max(1, len(idx) // 5) if len(idx) >= 5 else 0
    val, tr = idx[:n_val], idx[n_val:]
    t = torch.from_numpy
    return (dataset.x_train[t(tr)], dataset.y_train[t(tr)],
            dataset.x_train[t(val)], dataset.y_train[t(val)])


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


def _epochs(net, x, y, *, epochs, lr, batch_size, gen, normalize, device, prox=None) -> float:
    if len(x) == 0 or epochs <= 0:
        return 0.0
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            b = order[start:start + batch_size]
            xb = normalize(x[b]).to(device)
            yb = y[b].to(device)
            loss = F.cross_entropy(net(xb), yb)
            if prox is not None:
                mu, ref = prox
                loss = loss + 0.5 * mu * sum(((p - r) ** 2).sum() for p, r in zip(net.parameters(), ref))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
    return total / max(count, 1)


def train(net: nn.Module, x_local: torch.Tensor, y_local: torch.Tensor, x_syn: torch.Tensor | None,
          y_syn: torch.Tensor | None, *, mode: str, epochs: int, warmup_epochs: int, lr: float,
          batch_size: int, seed: int, normalize, device="cpu", proximal_mu: float = 0.0) -> float:
    """Local training. ``mode``: ``mix`` (local + condensed, shuffled together), ``warmup``
    (``warmup_epochs`` on the condensed set, then ``epochs`` on local data) or ``off``.
    Inputs are pixel space; ``normalize`` maps them to model inputs. Returns the mean loss."""
    device = resolve_device(device)
    net.to(device)
    gen = make_generator(seed)
    prox = None
    if proximal_mu > 0:
        prox = (proximal_mu, [p.detach().clone() for p in net.parameters()])
    has_syn = x_syn is not None and len(x_syn) > 0
    kw = dict(lr=lr, batch_size=batch_size, gen=gen, normalize=normalize, device=device, prox=prox)
    if mode == "mix" and has_syn:
        x = torch.cat([x_local, x_syn.to(x_local.dtype)])
        y = torch.cat([y_local, y_syn.to(y_local.dtype)])
        return _epochs(net, x, y, epochs=epochs, **kw)
    if mode == "warmup" and has_syn:
        _epochs(net, x_syn.to(x_local.dtype), y_syn.to(y_local.dtype), epochs=warmup_epochs, **kw)
    return _epochs(net, x_local, y_local, epochs=epochs, **kw)


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


@dataclass
class ClientResult:
    arrays: dict
    num_examples: int
    metrics: dict


def client_round(cfg: FederatedConfig, *, partition_id: int, num_partitions: int, rnd: int,
                 arrays: Mapping[str, np.ndarray], cache: PrefixCache, transfer: Mapping,
                 payload: bytes, local_epochs: int | None = None, lr: float | None = None,
                 proximal_mu: float = 0.0, indices: np.ndarray | None = None) -> ClientResult:
    """One ClientApp training round: apply the received transfer to ``cache`` (in place), then
    train on the local partition (+ the held condensed prefix) and report metrics."""
    received = cache.apply(transfer, payload)
    dataset = load_data(cfg.dataset)
    x_tr, y_tr, _, _ = local_data(dataset, cfg, partition_id, num_partitions, indices)
    x_syn = y_syn = None
    buf = cache.buffer
    mode = str(transfer.get("buffer-mode", cfg.buffer_mode)) if transfer else cfg.buffer_mode
    if buf is not None and mode != "off":
        xs, ys = buf.training_arrays(buf.ipc)
        x_syn, y_syn = torch.from_numpy(np.ascontiguousarray(xs)).float(), torch.from_numpy(np.asarray(ys)).long()
    net = build_net(cfg, dataset)
    numpy_to_state(net, arrays)
    loss = train(net, x_tr, y_tr, x_syn, y_syn, mode=mode,
                 epochs=cfg.local_epochs if local_epochs is None else int(local_epochs),
                 warmup_epochs=cfg.warmup_epochs, lr=cfg.lr if lr is None else float(lr),
                 batch_size=cfg.batch_size, seed=(cfg.seed * 1_000_003 + int(partition_id) * 1009 + int(rnd)) % (2**31),
                 normalize=dataset.normalize, device=cfg.device, proximal_mu=proximal_mu)
    metrics = {
        "train-loss": float(loss),
        "bytes-received": int(received),
        "ipc-used": int(cache.ipc if mode != "off" else 0),
        "budget-bytes": int(transfer.get("budget", 0)) if transfer else 0,
        "synthetic-examples": int(0 if x_syn is None else len(x_syn)),
        "local-examples": int(len(x_tr)),
    }
    return ClientResult(arrays=state_to_numpy(net), num_examples=max(int(len(x_tr)), 1), metrics=metrics)


def client_evaluate(cfg: FederatedConfig, *, partition_id: int, num_partitions: int,
                    arrays: Mapping[str, np.ndarray], indices: np.ndarray | None = None) -> tuple[int, dict]:
    """Evaluate the global model on the client's held-out 20%."""
    dataset = load_data(cfg.dataset)
    _, _, x_val, y_val = local_data(dataset, cfg, partition_id, num_partitions, indices)
    net = build_net(cfg, dataset)
    numpy_to_state(net, arrays)
    loss, acc = test(net, x_val, y_val, normalize=dataset.normalize, device=cfg.device)
    return max(int(len(x_val)), 1), {"eval-loss": float(loss), "eval-acc": float(acc)}


def central_evaluate(cfg: FederatedConfig, arrays: Mapping[str, np.ndarray]) -> dict:
    """Server-side accuracy of the global model on the dataset's test split."""
    dataset = load_data(cfg.dataset)
    net = build_net(cfg, dataset)
    numpy_to_state(net, arrays)
    loss, acc = test(net, dataset.x_test, dataset.y_test, normalize=dataset.normalize, device=cfg.device)
    return {"test-loss": float(loss), "test-acc": float(acc)}
