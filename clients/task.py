"""Model, partition, train and test helpers of the federated apps (Flower quickstart shape).

``clients/client_app.py`` and ``benchmarks/federated.py`` both use these functions, so the
benchmark's in-process rounds do exactly what a ClientApp does. The model pieces the server
shares (data, model, weights, test accuracy) live in :mod:`edgecond.apps.flower_model`; byte
accounting and the buffer transfer logic in :mod:`edgecond.transfer`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecond.data import ImageDataset
from edgecond.errors import FederatedError
from edgecond.federated import FederatedConfig, PrefixCache
from edgecond.recipe import Recipe
from edgecond.utils import resolve_device
from edgecond.apps.flower_model import (build_net, central_evaluate, load_data, numpy_to_state,  # noqa: F401
                                         state_to_numpy, test)

__all__ = [
    "load_data",
    "server_split",
    "server_dataset",
    "partition_indices",
    "local_data",
    "build_net",
    "state_to_numpy",
    "numpy_to_state",
    "train",
    "CondensedSet",
    "condensed_set",
    "test",
    "client_round",
    "ClientResult",
    "client_evaluate",
    "central_evaluate",
]


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


def server_split(labels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(server, clients)``: disjoint training-set indices. The server holds ``fraction`` of
    every class (at least one image of each class when ``fraction > 0``; stratified, seeded);
    the clients partition the rest. ``fraction = 0``: the server holds nothing."""
    y = np.asarray(labels).reshape(-1)
    if not 0.0 <= float(fraction) < 1.0:
        raise FederatedError(f"server-fraction = {fraction} must be within [0, 1) (default 0.2).")
    if float(fraction) == 0.0:
        return np.zeros(0, dtype=np.int64), np.arange(len(y), dtype=np.int64)
    rng = np.random.default_rng([int(seed), 20_241_203])
    server = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(len(idx) - 1, max(1, int(round(len(idx) * float(fraction))))) if len(idx) > 1 else 0
        server.append(rng.permutation(idx)[:k])
    srv = np.sort(np.concatenate(server).astype(np.int64)) if server else np.zeros(0, np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[srv] = False
    return srv, np.flatnonzero(mask).astype(np.int64)


def partition_indices(labels, partition_id: int, num_partitions: int, *, partitioner: str = "dirichlet",
                      alpha: float = 0.1, seed: int = 0, server_fraction: float = 0.0) -> np.ndarray:
    """Training-set indices of partition ``partition_id`` (Dirichlet over labels, or IID), drawn
    from the clients' share of the training set (all of it minus :func:`server_split`)."""
    if not 0 <= int(partition_id) < int(num_partitions):
        raise FederatedError(
            f"partition-id {partition_id} is outside [0, {num_partitions}); set the node's "
            "--node-config 'partition-id=I num-partitions=N' with 0 <= I < N."
        )
    labels = np.asarray(labels).reshape(-1)
    _, pool = server_split(labels, server_fraction, seed)
    y = tuple(int(v) for v in labels[pool])
    try:
        parts = _partitions(y, int(num_partitions), partitioner, float(alpha), int(seed))
    except ValueError as err:
        raise FederatedError(
            f"cannot split {len(y)} examples into {num_partitions} {partitioner} partitions "
            f"(alpha={alpha}): {err}. Use fewer partitions or a larger dirichlet-alpha."
        ) from None
    return pool[parts[int(partition_id)]]


def server_dataset(dataset: ImageDataset, cfg: FederatedConfig) -> ImageDataset:
    """The server's own data: the training split restricted to :func:`server_split` (test split
    and normalisation statistics unchanged, so the model sees one normalisation everywhere)."""
    import dataclasses

    if cfg.server_fraction <= 0:
        return dataset
    srv, _ = server_split(dataset.y_train.numpy(), cfg.server_fraction, cfg.seed)
    t = torch.from_numpy(srv)
    return dataclasses.replace(dataset, x_train=dataset.x_train[t], y_train=dataset.y_train[t],
                               source=f"{dataset.source} server split {cfg.server_fraction:g} seed {cfg.seed}")


def local_data(dataset: ImageDataset, cfg: FederatedConfig, partition_id: int, num_partitions: int,
               indices: np.ndarray | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_val, y_val)`` of one client: its partition split 80/20.

    ``indices`` (the partition's training-set indices, e.g. cached in ``context.state``) skips
    recomputing the partition."""
    idx = indices if indices is not None else partition_indices(
        dataset.y_train.numpy(), partition_id, num_partitions,
        partitioner=cfg.partitioner, alpha=cfg.dirichlet_alpha, seed=cfg.seed,
        server_fraction=cfg.server_fraction)
    idx = np.asarray(idx, dtype=np.int64)
    rng = np.random.default_rng([cfg.seed, int(partition_id)])
    idx = idx[rng.permutation(len(idx))]
    n_val = max(1, len(idx) // 5) if len(idx) >= 5 else 0
    val, tr = idx[:n_val], idx[n_val:]
    t = torch.from_numpy
    return (dataset.x_train[t(tr)], dataset.y_train[t(tr)],
            dataset.x_train[t(val)], dataset.y_train[t(val)])


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions (one-hot, CutMix-mixed or soft labels)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _prox_term(net, prox):
    if prox is None:
        return 0.0
    mu, ref = prox
    return 0.5 * mu * sum(((p - r) ** 2).sum() for p, r in zip(net.parameters(), ref))


@dataclass
class CondensedSet:
    """The held condensed prefix as a client trains on it: pixel-space images, target
    distributions (one-hot, or the buffer's soft labels) and the buffer's training recipe."""

    x: np.ndarray
    targets: np.ndarray
    recipe: "Recipe"

    def __len__(self) -> int:
        return len(self.x)


def condensed_set(buf, num_classes: int, *, flips: bool | None = None) -> CondensedSet:
    """Turn a held buffer prefix into a :class:`CondensedSet` (decoded images, soft labels
    when the buffer has them, its recipe — or the protocol defaults for older buffers), through
    the one function every client uses (:func:`edgecond.prefix.prefix_arrays`)."""
    from edgecond.prefix import prefix_arrays

    from edgecond.data import flips_of_buffer

    p = prefix_arrays(buf, buf.ipc, num_classes=num_classes, flips=flips_of_buffer(buf.meta) if flips is None else flips)
    return CondensedSet(p.x, p.targets, p.recipe)


def _local_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), max(1, -(-n // batch_size)))


def train(net: nn.Module, x_local: torch.Tensor, y_local: torch.Tensor, condensed: CondensedSet | None, *,
          mode: str, epochs: int, warmup_epochs: int, lr: float, batch_size: int, seed: int,
          mean, std, flips: bool = False, device="cpu", proximal_mu: float = 0.0,
          condensed_weight: float = 0.5) -> float:
    """Local training on pixel-space local data (+ a held condensed prefix). Returns the mean loss.

    ``mode``:

    * ``mix`` — every step takes one batch of local images **and** one batch of condensed images;
      loss ``= (1 - w) · CE(local) + w · CE(condensed)`` with ``w = condensed_weight`` (default
      0.5: the condensed prefix counts as much as the local batch, whatever the two sets' sizes).
      An epoch is one pass over the local data; the condensed stream cycles through its own
      shuffled epochs. A client with no local data trains on the condensed set alone (``w = 1``).
    * ``warmup`` — ``warmup_epochs`` on the condensed set alone (its recipe), then local epochs.
    * ``off`` — local only.

    Augmentation (``edgecond.recipe.augment_batch``, on normalised images): local images get
    :func:`edgecond.recipe.real_recipe` (random crop, + flip where the data allows), condensed
    images get **their buffer's recipe** (its DSA ops, strength, CutMix, flip policy); their
    targets are the buffer's soft labels when it has them. The federation's ``lr`` drives one
    SGD optimiser (momentum 0.9, weight decay 5e-4) for both.
    """
    from edgecond.recipe import augment_batch, real_recipe, recipe_batches

    device = resolve_device(device)
    net.to(device)
    net.train()
    rng = np.random.default_rng(int(seed))
    prox = (proximal_mu, [p.detach().clone() for p in net.parameters()]) if proximal_mu > 0 else None
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    mu = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    sd = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    xl = x_local.detach().cpu().numpy().astype(np.float32, copy=False)
    yl = y_local.detach().cpu().numpy().astype(np.int64, copy=False)
    has_syn = condensed is not None and len(condensed) > 0 and mode != "off"
    w = min(max(float(condensed_weight), 0.0), 1.0)
    local_aug = real_recipe(flips)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    total, count = 0.0, 0

    def step(loss) -> None:
        nonlocal total, count
        loss = loss + _prox_term(net, prox)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach())
        count += 1

    def local_x(idx):
        return augment_batch((xl[idx] - mu) / sd, local_aug, rng)

    def local_loss(idx):
        return F.cross_entropy(net(t(local_x(idx))), t(yl[idx]))

    def mixed_loss(idx, xs, ts):
        # one forward pass over [local | condensed] (instance norm: the same as two passes;
        # batch norm: statistics over the mixed batch)
        out = net(t(np.concatenate([local_x(idx), xs])))
        n = len(idx)
        return (1.0 - w) * F.cross_entropy(out[:n], t(yl[idx])) + w * _soft_ce(out[n:], t(ts))

    def syn_stream(steps=None):
        return recipe_batches(condensed.x, condensed.targets, condensed.recipe, rng, mean=mean, std=std,
                              batch_size=min(batch_size, condensed.recipe.for_size(len(condensed)).batch_size),
                              steps=steps)

    if has_syn and (mode == "warmup" or len(xl) == 0):
        for _ in range(warmup_epochs if mode == "warmup" and len(xl) else epochs):
            for xb, tb in syn_stream():
                step(_soft_ce(net(t(xb)), t(tb)))
        if len(xl) == 0:
            return total / max(count, 1)
    if len(xl) == 0:
        return 0.0
    for _ in range(epochs):
        batches = _local_batches(len(xl), batch_size, rng)
        if mode == "mix" and has_syn:
            for idx, (xs, ts) in zip(batches, syn_stream(steps=len(batches))):
                step(mixed_loss(idx, xs, ts))
        else:
            for idx in batches:
                step(local_loss(idx))
    return total / max(count, 1)


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
    memory = int(transfer.get("memory", -1)) if transfer else -1
    dropped = cache.fit_memory(memory) if memory >= 0 else 0  # never train on more than fits
    dataset = load_data(cfg.dataset)
    x_tr, y_tr, _, _ = local_data(dataset, cfg, partition_id, num_partitions, indices)
    syn = None
    buf = cache.buffer
    mode = str(transfer.get("buffer-mode", cfg.buffer_mode)) if transfer else cfg.buffer_mode
    if buf is not None and mode != "off":
        syn = condensed_set(buf, dataset.num_classes)
    net = build_net(cfg, dataset)
    numpy_to_state(net, arrays)
    loss = train(net, x_tr, y_tr, syn, mode=mode,
                 epochs=cfg.local_epochs if local_epochs is None else int(local_epochs),
                 warmup_epochs=cfg.warmup_epochs, lr=cfg.lr if lr is None else float(lr),
                 batch_size=cfg.batch_size, seed=(cfg.seed * 1_000_003 + int(partition_id) * 1009 + int(rnd)) % (2**31),
                 mean=dataset.mean, std=dataset.std, flips=bool(getattr(dataset, "flips", False)),
                 device=cfg.device, proximal_mu=proximal_mu, condensed_weight=cfg.condensed_weight)
    metrics = {
        "train-loss": float(loss),
        "bytes-received": int(received),
        "ipc-used": int(cache.ipc if mode != "off" else 0),
        "budget-bytes": int(transfer.get("budget", 0)) if transfer else 0,
        "memory-bytes": memory,
        "held-bytes": int(cache.held_bytes),
        "ranks-dropped": int(dropped),
        "synthetic-examples": int(0 if syn is None else len(syn)),
        "soft-labels": int(bool(buf is not None and buf.has_soft_labels and syn is not None)),
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
