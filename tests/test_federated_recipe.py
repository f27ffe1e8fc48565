"""Issue 15 in Flower: the client trains condensed prefixes by the buffer's recipe (augmentation
and soft labels reach the step), memory budgets beside bandwidth, and an honest server split."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecond.buffer import MultisizeBuffer
from edgecond.federated import (
    ByteLedger,
    PrefixCache,
    Shipper,
    config_from_run_config,
    make_budget_reply,
    plan_transfer,
    read_transfer,
    validate_budget_reply,
)
from edgecond.recipe import Recipe

flwr_app = pytest.importorskip("flwr.app")
RecordDict = flwr_app.RecordDict

RECIPE = Recipe(augment="color_crop_cutout_scale_rotate", flips=False, cutmix_prob=0.0)


@pytest.fixture(scope="module")
def digits():
    from edgecond.data import load_dataset

    return load_dataset("digits")


def _digits_buffer(ds, n=4, *, soft=False, recipe=RECIPE):
    x, y = ds.x_train.numpy(), ds.y_train.numpy()
    images = np.stack([x[y == k][:n] for k in range(ds.num_classes)])
    s = None
    if soft:
        s = np.random.default_rng(0).normal(size=(ds.num_classes, n, 1, ds.num_classes)).astype(np.float32) * 3
    return MultisizeBuffer.from_class_major(images, class_names=ds.class_names, dataset="digits",
                                            mean=ds.mean, std=ds.std, method="random", dtype="uint8",
                                            soft_labels=s, recipe=recipe)


def _round(ds, buf, monkeypatch, *, mode="mix"):
    """One client round with spies on the augmentation and on the loss inputs."""
    import edgecond.recipe as recipe_mod
    from clients import task

    calls, losses = [], []
    real_aug, real_ce = recipe_mod.augment_batch, task._soft_ce

    def spy_aug(x, recipe, rng):
        calls.append((recipe, x.shape))
        return real_aug(x, recipe, rng)

    def spy_ce(logits, targets):
        losses.append(targets.detach().numpy().copy())
        return real_ce(logits, targets)

    monkeypatch.setattr(recipe_mod, "augment_batch", spy_aug)
    monkeypatch.setattr(task, "_soft_ce", spy_ce)
    cfg = config_from_run_config({"model-width": 4, "num-partitions": 3, "buffer-mode": mode,
                                  "batch-size": 32, "server-fraction": 0.0})
    shipper, cache = Shipper(buf, buffer_mode=mode), PrefixCache()
    _, _, records = shipper.handle(1, "0", make_budget_reply(buf.bytes_for(buf.ipc)))
    transfer, payload = read_transfer(RecordDict(records))
    net = task.build_net(cfg, ds)
    res = task.client_round(cfg, partition_id=0, num_partitions=3, rnd=1, arrays=task.state_to_numpy(net),
                            cache=cache, transfer=transfer, payload=payload, indices=np.arange(0, 300, 3))
    return res, calls, losses


@pytest.mark.parametrize("mode", ["mix", "warmup"])
def test_flower_client_augments_condensed_images_by_the_buffer_recipe(digits, monkeypatch, mode):
    buf = _digits_buffer(digits)
    res, calls, losses = _round(digits, buf, monkeypatch, mode=mode)
    used = [r for r, _ in calls]
    assert RECIPE in used, "condensed batches were not augmented with the buffer's recipe"
    if mode == "mix":  # local batches get the real-data augmentation in the same steps
        from edgecond.recipe import real_recipe

        assert real_recipe(False) in used
        n_syn = sum(1 for r in used if r == RECIPE)
        n_loc = sum(1 for r in used if r == real_recipe(False))
        assert n_syn == n_loc  # one condensed batch per local step
    assert all("flip" not in r.augment for r in used)  # digits: the flip policy holds
    assert res.metrics["synthetic-examples"] == 4 * digits.num_classes


def test_flower_client_soft_labels_reach_the_loss(digits, monkeypatch):
    buf = _digits_buffer(digits, soft=True)
    res, _, losses = _round(digits, buf, monkeypatch)
    assert res.metrics["soft-labels"] == 1
    rows = np.concatenate(losses)
    soft_rows = rows[(rows.max(1) < 0.999)]
    assert len(soft_rows), "only one-hot targets reached the loss: the soft labels were dropped"
    from edgecond.recipe import targets_of

    x, y = buf.training_arrays()
    want = targets_of(y, digits.num_classes, buf.soft_targets())
    # every non-one-hot target row is one of the buffer's soft-label rows (no CutMix in RECIPE)
    for r in soft_rows[:20]:
        assert np.abs(want - r).sum(1).min() < 1e-5


def test_old_buffers_without_recipe_train_with_the_protocol_defaults(digits, monkeypatch):
    buf = _digits_buffer(digits, recipe=None)
    _, calls, _ = _round(digits, buf, monkeypatch)
    from edgecond.recipe import recipe_of

    assert recipe_of(buf, flips=False) in [r for r, _ in calls]


# ----------------------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def lean():
    rng = np.random.default_rng(0)
    full = MultisizeBuffer.from_class_major(rng.random((4, 7, 1, 8, 8)).astype(np.float32),
                                            class_names=list("abcd"), dataset="unit", mean=[0.5],
                                            std=[0.25], method="random", dtype="uint8")
    return full.lean()


def test_plan_respects_bandwidth_and_memory(lean):
    big = lean.bytes_for(7)
    for n_mem in range(1, 8):
        mem = lean.bytes_for(n_mem)
        plan = plan_transfer(lean, have=0, budget=big, memory=mem)
        assert plan.target == n_mem and plan.nbytes <= mem and plan.memory == mem
    plan = plan_transfer(lean, have=0, budget=lean.bytes_for(2), memory=lean.bytes_for(5))
    assert plan.target == 2  # bandwidth binds
    plan = plan_transfer(lean, have=3, budget=big, memory=lean.bytes_for(3) + 1)
    assert plan.kind == "none" and "memory" in plan.reason
    plan = plan_transfer(lean, have=0, budget=big, memory=0)
    assert plan.kind == "none"


def test_client_drops_ranks_when_memory_shrinks_and_gets_a_delta_when_it_grows(lean):
    ledger = ByteLedger()
    shipper, cache = Shipper(lean, ledger=ledger), PrefixCache()
    big = lean.bytes_for(7)
    schedule = [(1, 5), (2, 2), (3, 6), (4, 6)]  # (round, ranks the memory holds)
    for rnd, n_mem in schedule:
        mem = lean.bytes_for(n_mem)
        dropped = cache.fit_memory(mem)
        assert cache.held_bytes <= mem
        if rnd == 2:
            assert dropped == 3 and cache.ipc == 2
            assert cache.buffer.meta.digests == lean.meta.digests[:2]  # a prefix, not a copy
        plan, payload, records = shipper.handle(rnd, "c", make_budget_reply(big, cache.ipc, cache.digest, memory=mem))
        transfer, received = read_transfer(RecordDict(records))
        cache.apply(transfer, received)
        assert cache.ipc == n_mem and cache.held_bytes <= mem
        if rnd == 3:
            assert plan.kind == "delta" and plan.nbytes == lean.delta_bytes(2, 6)
        if rnd == 4:
            assert plan.kind == "none" and plan.nbytes == 0
    d = ledger.to_dict()
    r1, r2 = d["rounds"][0], d["rounds"][1]
    assert r1["clients"]["c"]["memory"] == lean.bytes_for(5) and r1["clients"]["c"]["held_bytes"] == lean.bytes_for(5)
    assert r2["memory_bytes"] == lean.bytes_for(2) and r2["bytes"] == 0
    assert d["cumulative_bytes"][-1] == ledger.total_bytes


def test_memory_in_the_reply_is_validated(lean):
    ok = validate_budget_reply(make_budget_reply(10, memory=500), max_budget=1000, ipc=7)
    assert ok.memory == 500 and validate_budget_reply(make_budget_reply(10), max_budget=1000, ipc=7).memory is None
    from edgecond.errors import FederatedError

    with pytest.raises(FederatedError, match="memory"):
        validate_budget_reply(make_budget_reply(10, memory=5000), max_budget=1000, ipc=7)


def test_client_app_query_fits_memory_from_the_node_config(lean):
    from flwr.app import Context, RecordDict as RD

    from clients.client_app import budget_reply

    cache = PrefixCache()
    cache.apply({"kind": "full", "target": 5, "digest": ""}, lean.to_bytes(5))
    state = RD()
    cache.to_state(state)
    mem = lean.bytes_for(2)
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2,
                                                    "memory-trace": f"constant:{mem}B"},
                  state=state, run_config={"budget-trace": "constant:4kB"})
    rec = budget_reply(ctx, 1)["budget"]
    assert rec["memory"] == mem and rec["have"] == 2 and rec["bytes"] == 4000
    assert PrefixCache.from_state(ctx.state).ipc == 2  # the drop is kept across rounds
    ctx.node_config = {"partition-id": 0, "num-partitions": 2}
    assert "memory" not in budget_reply(ctx, 2)["budget"]  # no trace: unlimited


# ----------------------------------------------------------------------------- server split


@pytest.mark.parametrize("partitioner, alpha", [("dirichlet", 0.1), ("dirichlet", 0.5), ("iid", 1.0)])
def test_server_split_is_disjoint_from_every_client_partition(digits, partitioner, alpha):
    from clients import task

    y = digits.y_train.numpy()
    srv, pool = task.server_split(y, 0.2, seed=0)
    assert abs(len(srv) - 0.2 * len(y)) <= digits.num_classes  # ~20%, per class
    assert set(np.unique(y[srv])) == set(range(digits.num_classes))
    parts = [task.partition_indices(y, i, 5, partitioner=partitioner, alpha=alpha, seed=0, server_fraction=0.2)
             for i in range(5)]
    seen = np.concatenate(parts)
    assert not set(srv.tolist()) & set(seen.tolist())
    assert len(seen) == len(set(seen.tolist())) == len(pool)  # clients share out the rest, once each
    cfg = config_from_run_config({"server-fraction": 0.2, "partitioner": partitioner, "dirichlet-alpha": alpha,
                                  "num-partitions": 5})
    sds = task.server_dataset(digits, cfg)
    assert len(sds.y_train) == len(srv) and sds.mean == digits.mean


def test_condense_job_condenses_the_server_split_and_logs_progress(tmp_path, caplog, digits):
    from clients import task
    from servers.condense_job import ensure_buffer, progress_logger

    path = tmp_path / "buf.safetensors"
    cfg = config_from_run_config({"buffer-path": str(path), "condense-method": "random", "condense-hooks": "",
                                  "condense-ipc": 2, "server-fraction": 0.2})
    with caplog.at_level(logging.INFO, logger="edgecond"):
        ensure_buffer(cfg)
    assert "server split" in caplog.text
    buf = MultisizeBuffer.load(path)
    srv, _ = task.server_split(digits.y_train.numpy(), 0.2, seed=0)
    assert buf.meta.extra["data"]["digest"] == task.server_dataset(digits, cfg).digest()
    x_srv = digits.x_train.numpy()[srv]
    held = buf.images_class_major().reshape(-1, 64)
    # every stored image is one of the server's images (uint8-rounded)
    d = np.abs(held[:, None, :] - x_srv.reshape(len(srv), 64)[None]).max(-1).min(1)
    assert d.max() < 1 / 255 + 1e-6
    assert buf.meta.recipe is not None
    caplog.clear()
    log = logging.getLogger("edgecond.server.condense")
    report = progress_logger(log, 0.0)
    with caplog.at_level(logging.INFO, logger="edgecond"):
        for t in range(40):
            report({"iteration": t, "loss": 1.0, "total": 40})
    assert caplog.text.count("condensing: iteration") == 20 and "40/40 (100%)" in caplog.text


# ----------------------------------------------------------------------------- benchmark helpers


def test_benchmark_traces_and_equal_bytes_summary(lean):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "federated.py"
    spec = importlib.util.spec_from_file_location("bench_federated_i15", path)
    fed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fed)
    assert fed.ARMS == ("none", "random", "herding", "C", "mdc")
    bw, mem = fed.traces_for(lean, {"budget_ipc": 2.5, "sigma": 0.6}, seed=3)
    b2, b3 = lean.bytes_for(2, provenance=False), lean.bytes_for(3, provenance=False)
    assert f"median={round((b2 + b3) / 2)}B" in bw and "seed=3" in bw and "seed=1003" in mem
    res = {"none": {"accuracy": [0.1, 0.2], "cumulative_bytes": [0, 0], "seconds": 1},
           "random": {"accuracy": [0.3, 0.4], "cumulative_bytes": [100, 300], "seconds": 1},
           "mdc": {"accuracy": [0.5, 0.6], "cumulative_bytes": [150, 200], "seconds": 1}}
    rows = {r["arm"]: r for r in fed.summarize(res)}
    assert rows["random"]["equal_bytes"] == 200 and rows["random"]["accuracy_at_equal_bytes"] == 0.3
    assert rows["mdc"]["accuracy_at_equal_bytes"] == 0.6 and rows["mdc"]["rounds_to_none_final"] == 1
