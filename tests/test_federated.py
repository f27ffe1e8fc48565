"""Budget → payload bytes, delta transfer, reply validation (no Flower processes started)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecond.buffer import MultisizeBuffer
from edgecond.errors import BudgetError, FederatedError
from edgecond.federated import (
    PAYLOAD_RECORD,
    TRANSFER_RECORD,
    ByteLedger,
    PrefixCache,
    Shipper,
    buffer_identity,
    config_from_run_config,
    make_budget_reply,
    parse_faults,
    parse_trace,
    plan_transfer,
    read_transfer,
    validate_budget_reply,
)

flwr_app = pytest.importorskip("flwr.app")
ConfigRecord, MetricRecord, RecordDict = flwr_app.ConfigRecord, flwr_app.MetricRecord, flwr_app.RecordDict


@pytest.fixture(scope="module")
def buffer() -> MultisizeBuffer:
    rng = np.random.default_rng(0)
    images = rng.random((4, 7, 1, 8, 8)).astype(np.float32)
    full = MultisizeBuffer.from_class_major(
        images, class_names=list("abcd"), dataset="unit", mean=[0.5], std=[0.25],
        method="random", config={"seed": 0}, dtype="uint8")
    # What clients receive is the lean form (no provenance): byte expectations below use it.
    return full.lean()


def test_shipper_sends_lean_slices_of_a_full_buffer(buffer):
    rng = np.random.default_rng(0)
    full = MultisizeBuffer.from_class_major(
        rng.random((4, 7, 1, 8, 8)).astype(np.float32), class_names=list("abcd"), dataset="unit",
        mean=[0.5], std=[0.25], method="random", config={"seed": 0}, dtype="uint8")
    assert full.meta.has_provenance
    budget = full.bytes_for(3)
    plan, payload = _round_trip(Shipper(full), PrefixCache(), 1, budget)
    assert plan.nbytes == len(payload) == full.bytes_for(plan.target, provenance=False)
    assert plan.target >= 3 and payload == full.to_bytes(plan.target, provenance=False)
    assert buffer_identity(full) == buffer_identity(full.lean())


def _round_trip(shipper: Shipper, cache: PrefixCache, rnd: int, budget: int, client: str = "c"):
    plan, payload, records = shipper.handle(rnd, client, make_budget_reply(budget, cache.ipc, cache.digest))
    transfer, received = read_transfer(RecordDict(records))
    assert received == payload
    cache.apply(transfer, received)
    return plan, payload


@pytest.mark.parametrize("budget", [0, 1, 500, 1500, 2000, 2600, 3000, 10_000, 1 << 20])
def test_budget_to_payload_bytes_exact(buffer, budget):
    plan, payload = _round_trip(Shipper(buffer), PrefixCache(), 1, budget)
    n = buffer.largest_fitting(budget)
    assert plan.target == n and plan.have == 0
    assert len(payload) == plan.nbytes == buffer.bytes_for(n)
    assert len(payload) <= budget
    if n == 0:
        assert plan.kind == "none" and payload == b""
    else:
        assert payload == buffer.to_bytes(n)


def test_budget_below_one_rank_sends_nothing_and_logs(buffer, caplog):
    shipper = Shipper(buffer)
    with caplog.at_level(logging.INFO, logger="edgecond.federated"):
        plan, payload = _round_trip(shipper, PrefixCache(), 1, buffer.bytes_for(1) - 1)
    assert plan.kind == "none" and payload == b"" and plan.nbytes == 0
    assert "below one rank" in plan.reason
    assert shipper.ledger.total_bytes == 0


def test_delta_transfer_sends_only_missing_ranks(buffer):
    shipper, cache = Shipper(buffer), PrefixCache()
    budgets = [buffer.bytes_for(2), buffer.bytes_for(1), buffer.bytes_for(5) + 3, buffer.bytes_for(7)]
    sent = []
    for rnd, budget in enumerate(budgets, 1):
        plan, payload = _round_trip(shipper, cache, rnd, budget)
        sent.append((plan.kind, plan.have, plan.target, len(payload)))
        assert len(payload) <= budget
        assert cache.buffer.to_bytes() == buffer.to_bytes(cache.ipc)  # byte-identical prefix
    assert sent[0] == ("full", 0, 2, buffer.bytes_for(2))
    assert sent[1] == ("none", 2, 2, 0)  # smaller budget: keep what it holds, nothing sent
    assert sent[2] == ("delta", 2, 5, buffer.delta_bytes(2, 5))
    assert sent[3] == ("delta", 5, 7, buffer.delta_bytes(5, 7))
    assert shipper.ledger.total_bytes == sum(s[3] for s in sent)
    rounds = shipper.ledger.to_dict()["rounds"]
    assert [r["clients"]["c"]["payload_bytes"] for r in rounds] == [s[3] for s in sent]


def test_cache_survives_context_state(buffer):
    shipper, cache = Shipper(buffer), PrefixCache()
    _round_trip(shipper, cache, 1, buffer.bytes_for(3))
    state = RecordDict()
    cache.to_state(state)
    again = PrefixCache.from_state(state)
    assert again.ipc == 3 and again.digest == buffer_identity(buffer)
    plan, _ = _round_trip(shipper, again, 2, buffer.bytes_for(4))
    assert plan.kind == "delta" and plan.have == 3 and again.ipc == 4


def test_foreign_or_stale_cache_gets_a_full_prefix(buffer):
    shipper = Shipper(buffer)
    plan, _, _ = shipper.handle(1, "c", make_budget_reply(buffer.bytes_for(3), 2, "0" * 64))
    assert plan.kind == "full" and plan.have == 0 and plan.nbytes == buffer.bytes_for(3)


def test_per_client_records_are_independent(buffer):
    shipper = Shipper(buffer)
    _, _, a = shipper.handle(1, "a", make_budget_reply(buffer.bytes_for(1)))
    _, _, b = shipper.handle(1, "b", make_budget_reply(buffer.bytes_for(4)))
    assert a[TRANSFER_RECORD] is not b[TRANSFER_RECORD]
    assert a[TRANSFER_RECORD]["target"] == 1 and b[TRANSFER_RECORD]["target"] == 4
    assert len(a[PAYLOAD_RECORD]["bytes"].numpy()) == buffer.bytes_for(1)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (RecordDict({"budget": ConfigRecord({"bytes": -5})}), "negative"),
        (RecordDict({"budget": ConfigRecord({"bytes": "lots"})}), "expected an int"),
        (RecordDict({"budget": ConfigRecord({"bytes": 1.5})}), "expected an int"),
        (RecordDict({"budget": ConfigRecord({"have": 1})}), "no 'bytes'"),
        (RecordDict({"budget": ConfigRecord({"bytes": 10, "evil": 1})}), "unexpected keys"),
        (RecordDict({"budget": ConfigRecord({"bytes": 10, "have": 99})}), "'have'"),
        (RecordDict({"budget": MetricRecord({"bytes": 10})}), "expected a ConfigRecord"),
        (RecordDict({"other": ConfigRecord({"bytes": 10})}), "expected exactly"),
        (RecordDict({"budget": ConfigRecord({"bytes": 10, "digest": "x" * 5000})}), "oversized"),
        (RecordDict({"budget": ConfigRecord({"bytes": 1 << 40})}), "oversized"),
        ("not a record", "expected a RecordDict"),
    ],
)
def test_malformed_or_oversized_reply_rejected_with_reason(buffer, content, fragment, caplog):
    with pytest.raises(FederatedError, match=fragment):
        validate_budget_reply(content, max_budget=1 << 30, ipc=buffer.ipc)
    shipper = Shipper(buffer, max_budget=1 << 30)
    with caplog.at_level(logging.WARNING, logger="edgecond.federated"):
        plan, payload, records = shipper.handle(3, "bad", content)
    assert plan.kind == "none" and payload == b"" and PAYLOAD_RECORD not in records
    assert "rejected" in plan.reason and fragment.split()[0] in plan.reason
    assert "bad" in shipper.ledger.to_dict()["rounds"][0]["rejected"]
    assert any("rejected" in r.getMessage() for r in caplog.records)


def test_failed_query_sends_nothing(buffer):
    shipper = Shipper(buffer)
    plan, payload, _ = shipper.handle(1, "x", None, error="timeout")
    assert plan.kind == "none" and payload == b"" and "timeout" in plan.reason


def test_mode_off_never_ships(buffer):
    plan = plan_transfer(buffer, have=0, budget=1 << 20, enabled=False)
    assert plan.kind == "none" and plan.nbytes == 0


def test_damaged_payload_is_rejected_by_client(buffer):
    shipper, cache = Shipper(buffer), PrefixCache()
    _round_trip(shipper, cache, 1, buffer.bytes_for(2))
    plan, payload, records = shipper.handle(2, "c", make_budget_reply(buffer.bytes_for(4), cache.ipc, cache.digest))
    transfer, received = read_transfer(RecordDict(records))
    bad = bytearray(received)
    bad[-1] ^= 0xFF
    with pytest.raises(Exception):
        cache.apply(transfer, bytes(bad))
    assert cache.ipc == 2  # unchanged


def test_ledger_json_round_trip(buffer, tmp_path):
    import json

    ledger = ByteLedger(config={"x": 1})
    shipper = Shipper(buffer, ledger=ledger)
    shipper.handle(1, "a", make_budget_reply(buffer.bytes_for(2)))
    ledger.record_failure(1, "b", "train", "boom")
    ledger.record_metrics(1, {"test-acc": 0.5})
    data = json.loads(ledger.save(tmp_path / "m.json").read_text())
    assert data["total_bytes"] == buffer.bytes_for(2)
    assert data["rounds"][0]["failed"]["b"]["reason"] == "boom"


def test_run_config_parsing_and_errors():
    cfg = config_from_run_config({"num-server-rounds": 2, "buffer-mode": "warmup", "lr": 1})
    assert cfg.num_server_rounds == 2 and cfg.buffer_mode == "warmup" and cfg.lr == 1.0
    with pytest.raises(FederatedError, match="buffer-mode"):
        config_from_run_config({"buffer-mode": "sometimes"})
    with pytest.raises(FederatedError, match="wrong type"):
        config_from_run_config({"num-server-rounds": "three"})
    with pytest.raises(BudgetError, match="budget-trace"):
        config_from_run_config({"budget-trace": "sine:3"})


def test_traces_and_faults(tmp_path):
    assert parse_trace("constant:40kB").budget(0, 1) == 40_000
    t = parse_trace("lognormal:median=40kB,sigma=0.5,seed=0")
    assert t.budget(1, 2) == t.budget(1, 2) and t.budget(1, 2) != t.budget(2, 2)
    csv = tmp_path / "b.csv"
    csv.write_text("client,round,bytes\n0,1,100\n")
    assert parse_trace(f"csv:{csv}").budget(0, 1) == 100
    with pytest.raises(BudgetError):
        parse_trace("lognormal:sigma=1")
    assert parse_faults("1:2, 3:1") == {1: {2}, 3: {1}}
    with pytest.raises(FederatedError):
        parse_faults("oops")


def test_server_condenses_missing_buffer_at_startup(tmp_path):
    from servers.condense_job import ensure_buffer

    path = tmp_path / "sub" / "buf.safetensors"
    cfg = config_from_run_config({"buffer-path": str(path), "condense-method": "random",
                                  "condense-hooks": "", "condense-ipc": 3})
    assert ensure_buffer(cfg) == path.resolve() and path.is_file()
    buf = MultisizeBuffer.load(path)
    assert buf.ipc == 3 and buf.meta.method == "random"
    mtime = path.stat().st_mtime_ns
    assert ensure_buffer(cfg) == path.resolve() and path.stat().st_mtime_ns == mtime  # reused
    bad = config_from_run_config({"buffer-path": str(tmp_path / "x.safetensors"), "condense-method": "nope"})
    with pytest.raises(FederatedError, match="condense"):
        ensure_buffer(bad)


@pytest.mark.parametrize("mode", ["mix", "warmup", "off"])
def test_client_round_uses_the_received_prefix(mode):
    """(Partition indices passed in: the flwr-datasets partitioner is exercised by the Flower runs.)"""
    from clients import task
    from edgecond.data import load_dataset

    ds = load_dataset("digits")
    x, y = ds.x_train.numpy(), ds.y_train.numpy()
    images = np.stack([x[y == k][:4] for k in range(ds.num_classes)])
    buf = MultisizeBuffer.from_class_major(images, class_names=ds.class_names, dataset="digits",
                                           mean=ds.mean, std=ds.std, method="random", dtype="uint8")
    cfg = config_from_run_config({"model-width": 4, "num-partitions": 3, "buffer-mode": mode,
                                  "batch-size": 128})
    shipper, cache = Shipper(buf, buffer_mode=mode), PrefixCache()
    _, _, records = shipper.handle(1, "0", make_budget_reply(buf.bytes_for(3)))
    transfer, payload = read_transfer(RecordDict(records))
    net = task.build_net(cfg, ds)
    res = task.client_round(cfg, partition_id=0, num_partitions=3, rnd=1, arrays=task.state_to_numpy(net),
                            cache=cache, transfer=transfer, payload=payload, indices=np.arange(0, 200, 3))
    expect = 0 if mode == "off" else 3
    assert res.metrics["ipc-used"] == expect
    assert res.metrics["synthetic-examples"] == expect * ds.num_classes
    assert res.metrics["bytes-received"] == (0 if mode == "off" else buf.bytes_for(3, provenance=False))
    assert set(res.arrays) == set(task.state_to_numpy(net))
