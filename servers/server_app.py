"""Flower ServerApp: every round, ship each sampled client the prefix its bandwidth allows.

Round r (the logic: :mod:`edgecond.transfer`; the records: :mod:`edgecond.apps.flower_records`):

1. the wrapped FedAvg-family strategy samples clients (``configure_train``);
2. a ``query`` message asks each of them for its budget (bytes) and what it holds;
3. each client gets its *own* ``RecordDict``: the global model, the train config and the
   ranks it lacks up to the largest prefix that fits (nothing when the budget is below one rank,
   the reply was malformed/oversized or the query failed);
4. replies are aggregated by the strategy (failed clients are logged and skipped), the global
   model is evaluated on the test split, and ``OUTPUT_DIR/metrics.json`` is rewritten with the
   exact bytes per client per round.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flwr_strategy
from flwr.serverapp.strategy import Strategy

from edgecond.apps.flower_model import build_net, central_evaluate, load_data
from edgecond.apps.flower_config import FederatedConfig, config_from_run_config
from edgecond.apps.flower_records import Shipper, reply_partition
from edgecond.buffer import MultisizeBuffer
from edgecond.errors import FederatedError
from edgecond.transfer import ByteLedger, buffer_identity, short_reason
from servers.condense_job import ensure_buffer

log = logging.getLogger("edgecond.server")

app = ServerApp()

STRATEGIES = {
    "fedavg": "FedAvg", "fedavgm": "FedAvgM", "fedprox": "FedProx", "fedadam": "FedAdam",
    "fedyogi": "FedYogi", "fedadagrad": "FedAdagrad", "fedmedian": "FedMedian",
    "fedtrimmedavg": "FedTrimmedAvg",
}


def make_strategy(cfg: FederatedConfig) -> Strategy:
    """The FedAvg-family strategy named by ``strategy`` (sampling settings from the config)."""
    name = cfg.strategy.strip().lower().replace("_", "").replace("-", "")
    if name not in STRATEGIES:
        raise FederatedError(
            f"strategy {cfg.strategy!r} is not supported; expected one of {', '.join(STRATEGIES)}. "
            "Fix strategy in [tool.flwr.app.config]."
        )
    cls = getattr(flwr_strategy, STRATEGIES[name])
    kwargs = dict(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                  min_train_nodes=cfg.min_train_nodes, min_evaluate_nodes=cfg.min_evaluate_nodes,
                  min_available_nodes=cfg.min_available_nodes)
    if name == "fedprox":
        kwargs["proximal_mu"] = cfg.proximal_mu
    return cls(**kwargs)


class ShippingStrategy(Strategy):
    """Wraps a strategy: per-client budget query + buffer transfer before every training round."""

    def __init__(self, inner: Strategy, shipper: Shipper, *, query_timeout: float = 120.0):
        self.inner = inner
        self.shipper = shipper
        self.query_timeout = float(query_timeout)
        self._sent: dict[int, set[int]] = {}
        self._names: dict[int, str] = {}  # Flower node id -> partition id (from budget replies)

    def client_name(self, node: int) -> str:
        """How logs and metrics.json name a client: its partition id once it has said it
        (``fault-crash`` and ``--node-config`` use partition ids), else ``node-<id>``."""
        return self._names.get(node, f"node-{node}")

    # -- training: query budgets, then one RecordDict per client ----------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        planned = list(self.inner.configure_train(server_round, arrays, config, grid))
        if not planned:
            return []
        queries = [
            Message(RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                    dst_node_id=m.metadata.dst_node_id, message_type=MessageType.QUERY)
            for m in planned
        ]
        replies = {r.metadata.src_node_id: r for r in
                   grid.send_and_receive(queries, timeout=self.query_timeout)}
        out = []
        for node, r in replies.items():
            pid = None if r.has_error() else reply_partition(r.content)
            if pid is not None:
                self._names[node] = str(pid)
        for m in planned:
            node = m.metadata.dst_node_id
            reply = replies.get(node)
            if reply is None:
                error = f"no reply within query-timeout {self.query_timeout:.0f} s"
            elif reply.has_error():
                error = f"client error: {short_reason(reply.error.reason)}"
            else:
                error = None
            if error is not None:
                self.shipper.ledger.record_failure(server_round, self.client_name(node), "query", error)
            _, _, records = self.shipper.handle(
                server_round, self.client_name(node), None if error else reply.content, error=error)
            content = RecordDict({**dict(m.content.items()), **records})  # a fresh dict per client
            out.append(Message(content, dst_node_id=node, message_type=m.metadata.message_type))
        self._sent[server_round] = {m.metadata.dst_node_id for m in out}
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        for r in replies:
            if r.has_error():
                node = r.metadata.src_node_id
                log.warning("round %s: client %s failed in training: %s", server_round, self.client_name(node),
                            short_reason(r.error.reason))
                self.shipper.ledger.record_failure(server_round, self.client_name(node), "train", r.error.reason)
        for node in sorted(self._sent.pop(server_round, set()) - {r.metadata.src_node_id for r in replies}):
            log.warning("round %s: client %s sent no training reply in time (round-timeout)", server_round,
                        self.client_name(node))
            self.shipper.ledger.record_failure(server_round, self.client_name(node), "train",
                                               "no reply within round-timeout")
        ok = [r for r in replies if not r.has_error()]
        if ok:
            keys = ("bytes-received", "ipc-used", "budget-bytes", "memory-bytes", "held-bytes", "ranks-dropped")
            per_client = {self.client_name(r.metadata.src_node_id): {k: r.content["metrics"].get(k) for k in keys}
                          for r in ok if "metrics" in r.content}
            self.shipper.ledger.record_metrics(server_round, {"client-metrics": per_client})
        return self.inner.aggregate_train(server_round, replies)

    # -- everything else is the wrapped strategy's -------------------------------------------
    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        for r in replies:
            if r.has_error():
                self.shipper.ledger.record_failure(server_round, self.client_name(r.metadata.src_node_id),
                                                   "evaluate", r.error.reason)
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


def _share_flower_log_handlers() -> None:
    """Show edgecond's log lines (transfers, rejected replies, failures) in Flower's log stream."""
    edge = logging.getLogger("edgecond")
    if not edge.handlers:
        for handler in logging.getLogger("flwr").handlers:
            edge.addHandler(handler)
        edge.setLevel(logging.INFO)
        edge.propagate = False


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Load (or condense) the buffer, run the strategy, save ``metrics.json``."""
    t0 = time.perf_counter()
    _share_flower_log_handlers()
    cfg = config_from_run_config(context.run_config)
    path = ensure_buffer(cfg, progress=True)  # a start-up condensation logs its progress
    buffer = MultisizeBuffer.load(path)
    digest = buffer_identity(buffer)
    out_dir = Path(cfg.output_dir).expanduser().resolve()
    ledger = ByteLedger(config={**cfg.to_dict(), "buffer-path": str(path), "buffer-id": digest})
    shipper = Shipper(buffer, buffer_mode=cfg.buffer_mode,
                      max_budget=cfg.max_budget(), ledger=ledger)
    log.info("edgecond server: buffer %s (ipc %d, %d B full), %d rounds, strategy %s, mode %s, "
             "bandwidth trace %r, memory trace %r, server split %g",
             path, buffer.ipc, buffer.bytes_for(buffer.ipc), cfg.num_server_rounds, cfg.strategy,
             cfg.buffer_mode, cfg.budget_trace, cfg.memory_trace or "unlimited", cfg.server_fraction)

    dataset = load_data(cfg.dataset)
    net = build_net(cfg, dataset)
    initial = ArrayRecord(net.state_dict())

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = central_evaluate(cfg, {k: v.numpy() for k, v in arrays.items()})
        ledger.record_metrics(server_round, {**metrics, "elapsed-s": time.perf_counter() - t0})
        ledger.save(out_dir / "metrics.json")
        return MetricRecord(metrics)

    strategy = ShippingStrategy(make_strategy(cfg), shipper, query_timeout=cfg.query_timeout)
    result = strategy.start(
        grid=grid, initial_arrays=initial, num_rounds=cfg.num_server_rounds,
        timeout=cfg.round_timeout,
        train_config=ConfigRecord({"lr": cfg.lr, "local-epochs": cfg.local_epochs}),
        evaluate_fn=evaluate_fn,
    )
    ledger.save(out_dir / "metrics.json")
    log.info("edgecond server: done in %.1f s; %d payload bytes sent in total; metrics in %s",
             time.perf_counter() - t0, ledger.total_bytes, out_dir / "metrics.json")
    if result.arrays is not None:
        from safetensors.numpy import save_file

        save_file({k: v.numpy() for k, v in result.arrays.items()}, str(out_dir / "final_model.safetensors"))
