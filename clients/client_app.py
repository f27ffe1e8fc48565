"""Flower ClientApp: answers budget queries, caches the received prefix, trains, evaluates.

Thin adapter over :mod:`clients.task` and :mod:`edgecond.federated`. Node config
(``--node-config`` in a deployment; set automatically in simulation):
``partition-id``, ``num-partitions`` and optionally ``budget-trace`` / ``memory-trace``
(override the run config's): this round's bandwidth and device memory for the held prefix.
When memory shrinks the client drops ranks from the end of its prefix *before* replying (a
prefix of a multisize buffer is still a buffer), so the server then sends only a delta when it
grows again. Partitions are drawn from the clients' share of the training set (the server keeps
``server-fraction`` of it to condense from; ``clients.task.server_split``).

``context.state`` keeps, across rounds: the received prefix (``edgecond-cache``, raw bytes of a
valid buffer file in an ``ArrayRecord``, with its ipc/id in ``edgecond-cache-meta``) and the
partition's indices (``edgecond-partition``). The budget query path imports no torch, so a
deployment's per-message ClientApp process answers it quickly.
"""
from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edgecond.errors import FederatedError
from edgecond.federated import (
    PrefixCache,
    config_from_run_config,
    make_budget_reply,
    parse_faults,
    parse_trace,
    read_transfer,
)

app = ClientApp()

PARTITION_RECORD = "edgecond-partition"


def _node(context: Context, cfg) -> tuple[int, int]:
    nc = context.node_config
    if "partition-id" not in nc:
        raise FederatedError(
            "this SuperNode has no 'partition-id' in its node config; start it with "
            "--node-config 'partition-id=0 num-partitions=N'."
        )
    pid = _int_field(nc, "partition-id", "node config", 0)
    num = _int_field(nc, "num-partitions", "node config", 1, default=cfg.num_partitions)
    return pid, num


def _int_field(record, key: str, where: str, lo: int, default=None) -> int:
    """One integer field of a Flower record (node config, message config), validated: FederatedError otherwise."""
    v = record.get(key, default) if hasattr(record, "get") else default
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise FederatedError(f"{where} {key!r} is {v!r:.40}; expected an integer >= {lo}.")
    return v


def _float_field(record, key: str, where: str, default: float) -> float:
    v = record.get(key, default) if hasattr(record, "get") else default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise FederatedError(f"{where} {key!r} is {v!r:.40}; expected a finite number >= 0.")
    return float(v)


def _arrays(msg: Message) -> dict:
    if "arrays" not in msg.content:
        raise FederatedError("the message has no 'arrays' record (the global model); expected one from the "
                             "edgecond ServerApp.")
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


def _round(msg: Message) -> int:
    config = msg.content.get("config")
    return _int_field(config, "server-round", "message config", 0) if config is not None and "server-round" in config else 0


def _indices(context: Context, cfg, pid: int, num: int) -> np.ndarray:
    """The partition's training indices, computed once (flwr-datasets) and kept in context.state."""
    from clients import task

    if PARTITION_RECORD in context.state:
        return context.state[PARTITION_RECORD]["indices"].numpy()
    dataset = task.load_data(cfg.dataset)
    idx = task.partition_indices(dataset.y_train.numpy(), pid, num, partitioner=cfg.partitioner,
                                 alpha=cfg.dirichlet_alpha, seed=cfg.seed,
                                 server_fraction=cfg.server_fraction)
    context.state[PARTITION_RECORD] = ArrayRecord({"indices": Array(np.asarray(idx, dtype=np.int64))})
    return idx


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with this round's bandwidth and memory budgets and what the prefix cache holds
    (after dropping the ranks that no longer fit this round's memory)."""
    return Message(budget_reply(context, _round(msg)), reply_to=msg)


def budget_reply(context: Context, rnd: int) -> RecordDict:
    """The query reply's content for round ``rnd``: bandwidth from ``budget-trace``, memory from
    ``memory-trace``; the held prefix is first cut to the memory (ranks dropped from the end,
    the smaller prefix kept in ``context.state``), so ``have`` is what the device still holds."""
    cfg = config_from_run_config(context.run_config)
    pid, _ = _node(context, cfg)
    trace = parse_trace(str(context.node_config.get("budget-trace", cfg.budget_trace)))
    cache = PrefixCache.from_state(context.state)
    budget = int(trace.budget(pid, rnd))
    memory = memory_budget(context, cfg, pid, rnd)
    if cache.fit_memory(memory):
        cache.to_state(context.state)
    return make_budget_reply(budget, cache.ipc, cache.digest, partition=pid, memory=memory)


def memory_budget(context: Context, cfg, pid: int, rnd: int) -> int | None:
    """This round's device memory for the held prefix (node config ``memory-trace``, else the run
    config's); ``None`` when neither sets one (unlimited)."""
    spec = str(context.node_config.get("memory-trace", cfg.memory_trace) or "")
    return int(parse_trace(spec).budget(pid, rnd)) if spec else None


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Apply the transfer to the cache, train locally, return weights + metrics."""
    from clients import task

    cfg = config_from_run_config(context.run_config)
    pid, num = _node(context, cfg)
    rnd = _round(msg)
    if rnd in parse_faults(cfg.fault_crash).get(pid, set()):
        raise RuntimeError(f"fault-crash: partition {pid} crashes in round {rnd} (injected)")
    config = msg.content.get("config") or {}
    transfer, payload = read_transfer(msg.content)
    cache = PrefixCache.from_state(context.state)
    result = task.client_round(
        cfg, partition_id=pid, num_partitions=num, rnd=rnd,
        arrays=_arrays(msg),
        cache=cache, transfer=transfer, payload=payload,
        proximal_mu=_float_field(config, "proximal-mu", "message config", 0.0),
        indices=_indices(context, cfg, pid, num),
    )
    cache.to_state(context.state)
    metrics = MetricRecord({"num-examples": result.num_examples, "partition-id": pid, **result.metrics})
    arrays = ArrayRecord({k: Array(v) for k, v in result.arrays.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model on the local held-out split."""
    from clients import task

    cfg = config_from_run_config(context.run_config)
    pid, num = _node(context, cfg)
    arrays = _arrays(msg)
    n, metrics = task.client_evaluate(cfg, partition_id=pid, num_partitions=num, arrays=arrays,
                                      indices=_indices(context, cfg, pid, num))
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": n, **metrics})}), reply_to=msg)
