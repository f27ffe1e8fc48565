"""MDC: MLS selection and freezing on hand-made distance sequences, frozen ranks under momentum,
a tiny end-to-end condensation, and the Baseline B/C assembly."""
from __future__ import annotations

import math

import pytest
import torch

from edgecond.condense.base import EngineHooks, MatchOutput, SyntheticSet
from edgecond.condense.presets import mdc_settings
from edgecond.condense.multisize import (
    MDCConfig,
    MultisizeHooks,
    build_hooks,
    freeze_after,
    prefix_feature_distances,
    rate_of_change,
    select_mls,
)
from edgecond.errors import CondenseError, ConfigError






# ------------------------------------------------------------------ pure functions


def test_prefix_feature_distances_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    ipc, factor2 = 5, 4
    owner = torch.arange(ipc).repeat_interleave(factor2)
    feats = torch.randn(ipc * factor2, 7, generator=g)
    real = torch.randn(30, 7, generator=g)
    got = prefix_feature_distances(feats, owner, real, ipc)
    assert got.shape == (ipc - 1,)
    for n in range(1, ipc):
        want = ((feats[owner < n].mean(0) - real.mean(0)) ** 2).mean()
        assert got[n - 1].item() == pytest.approx(want.item(), rel=1e-6)


def test_prefix_feature_distances_handles_shuffled_rows_and_missing_ranks():
    owner = torch.tensor([2, 0, 2, 0])  # rank 1 absent, rows not in rank order
    feats = torch.tensor([[4.0], [1.0], [6.0], [3.0]])
    real = torch.zeros(3, 1)
    got = prefix_feature_distances(feats, owner, real, 4)
    assert got[0].item() == pytest.approx(4.0)  # mean of rank 0 = 2 → 2² = 4
    assert got[1].item() == pytest.approx(4.0)  # rank 1 adds nothing
    assert got[2].item() == pytest.approx(12.25)  # mean(1,3,4,6) = 3.5
    got = prefix_feature_distances(feats, torch.tensor([3, 3, 3, 3]), real, 4)
    assert all(math.isnan(v) for v in got.tolist())


def test_rate_and_argmax_pick_the_fastest_changing_prefix():
    f_old = torch.tensor([10.0, 6.0, 5.0, 4.0])
    f_new = torch.tensor([9.0, 5.5, 2.0, 3.9])  # n=3 changes by 3: largest
    rates = rate_of_change(f_old, f_new, 10)
    assert rates.tolist() == pytest.approx([0.1, 0.05, 0.3, 0.01])
    assert select_mls(rates) == 3
    # paper Table 7 (CIFAR-10 IPC10, t=1 vs t=50): the largest drop is prefix 1
    t1 = torch.tensor([3012, 1678, 1249, 1013, 896, 807, 738, 701, 675.0])
    t50 = torch.tensor([2596, 1294, 891, 661, 514, 429, 373, 332, 298.0])
    assert rate_of_change(t1, t50, 50)[0].item() == pytest.approx(8.32)
    assert select_mls(rate_of_change(t1, t50, 50)) == 1
    # ties → smaller prefix, NaN never wins, class-wise gives one size per class
    assert select_mls(torch.tensor([1.0, 1.0, 0.5])) == 1
    assert select_mls(torch.tensor([float("nan"), 0.2, 0.1])) == 2
    assert select_mls(torch.tensor([[0.1, 0.9], [0.8, 0.2]])).tolist() == [2, 1]


def test_freezing_rule_eq10():
    assert freeze_after(1, 3, 0) == 1  # grow 1→3: freeze rank 0
    assert freeze_after(3, 5, 1) == 3  # grow again: freeze the previous MLS
    assert freeze_after(3, 2, 1) == 0  # shrink: update everything
    assert freeze_after(3, 3, 1) == 1  # same size: unchanged
    assert freeze_after(1, 3, 0, enabled=False) == 0


# ------------------------------------------------------------------ hooks on hand-made sequences


def _feed(hooks: MultisizeHooks, t: int, distances: list[list[float]]) -> None:
    """One outer iteration whose per-class averaged distances are ``distances`` [K][N-1]."""
    hooks.begin_outer(t)
    for c, d in enumerate(distances):
        hooks.meter.add(c, torch.tensor(d, dtype=torch.float64))
    hooks.end_outer(t)


def test_hooks_select_every_delta_t_and_freeze():
    h = MultisizeHooks(MDCConfig(delta_t=2), ipc=4, num_classes=2)
    assert h.mls == [1, 1] and h.prefixes([0]) == (None, 1)
    _feed(h, 0, [[9, 5, 4], [9, 5, 4]])  # reference
    _feed(h, 1, [[8, 4, 1], [8, 4, 1]])  # t=1: (1+1) % 2 == 0 → select: n=3 dropped most
    assert h.mls == [3, 3] and h.frozen == [1, 1]
    assert h.prefixes([1]) == (None, 3)
    _feed(h, 2, [[0, 0, 0], [0, 0, 0]])  # not a selection step (Δt respected)
    assert h.mls == [3, 3]
    _feed(h, 3, [[8, 3.5, 1], [8, 3.5, 1]])  # vs t=1: n=2 changed most → shrink 3→2
    assert h.mls == [2, 2] and h.frozen == [0, 0]
    hist = h.metadata()["mdc"]["history"]
    assert [(e["t"], e["mls"], e["frozen"]) for e in hist] == [(0, 1, 0), (1, 3, 1), (3, 2, 0)]


def test_hooks_class_wise_choose_per_class():
    h = MultisizeHooks(MDCConfig(delta_t=1, class_wise=True), ipc=4, num_classes=2)
    _feed(h, 0, [[9, 5, 4], [9, 5, 4]])
    _feed(h, 1, [[8, 5, 1], [1, 5, 4]])
    assert h.mls == [3, 1] and h.frozen == [1, 0]
    assert h.prefixes([0, 1]) == (None, 1, 3)
    meta = h.metadata()["mdc"]
    assert meta["mls"] == [3, 1] and meta["history"][-1]["frozen"] == [1, 0]


def test_hooks_window_and_state_roundtrip():
    h = MultisizeHooks(MDCConfig(delta_t=2, window=2), ipc=3, num_classes=1)
    for t, d in enumerate([[4, 2], [4, 2], [3, 2], [2, 0]]):
        _feed(h, t, [d])
    # reference (t=0) = [4,2]; t=1 smoothed [4,2] → rates 0 → tie → 1; t=3 smoothed [2.5,1] vs [4,2]
    assert h.mls == [1]
    state = h.state_dict()
    h2 = MultisizeHooks(MDCConfig(delta_t=2, window=2), ipc=3, num_classes=1)
    h2.load_state_dict(state)
    assert h2.state_dict() == state
    with pytest.raises(CondenseError):
        MultisizeHooks(MDCConfig(), ipc=3, num_classes=2).load_state_dict(state)


def test_combine_adds_the_weighted_mls_loss_and_records_distances():
    h = MultisizeHooks(MDCConfig(subset_weight=0.5), ipc=3, num_classes=1)
    owner = torch.arange(3).repeat_interleave(2)
    out = MatchOutput(
        cls=0,
        losses={None: torch.tensor(2.0), 1: torch.tensor(4.0)},
        syn_features=torch.arange(12.0).view(6, 2),
        syn_owner=owner,
        real_features=torch.zeros(5, 2),
    )
    assert h.combine([out]).item() == pytest.approx(4.0)
    assert h.meter.counts[0].tolist() == [1.0, 1.0]
    with pytest.raises(CondenseError, match="prefix 1"):
        h.combine([MatchOutput(cls=0, losses={None: torch.tensor(1.0)})])
    with pytest.raises(CondenseError, match="features"):
        h.combine([MatchOutput(cls=0, losses={None: torch.tensor(1.0), 1: torch.tensor(1.0)})])


def test_build_hooks_and_config_errors():
    assert type(build_hooks("none", {}, ipc=3, num_classes=2)) is EngineHooks
    h = build_hooks("MDC", {"delta_t": 5, "class_wise": True}, ipc=3, num_classes=2)
    assert isinstance(h, MultisizeHooks) and h.config.delta_t == 5
    with pytest.raises(ConfigError, match="delta"):
        build_hooks("mdc", {"delta": 5}, ipc=3, num_classes=2)
    with pytest.raises(ConfigError):
        build_hooks("mdcx", {}, ipc=3, num_classes=2)
    with pytest.raises(ConfigError, match="delta_t"):
        MultisizeHooks(MDCConfig(delta_t=0), ipc=3, num_classes=2)
    with pytest.raises(ConfigError):
        MultisizeHooks(MDCConfig(metric="cosine"), ipc=3, num_classes=2)
    assert mdc_settings("paper", iterations=2000, base="idc") == {"delta_t": 100}
    # distribution-matching bases: λ = 0.1 in quick runs (the prefix loss's per-image gradient is N/n times larger)
    assert mdc_settings("quick", iterations=150, base="idm") == {"delta_t": 25, "subset_weight": 0.1}
    assert mdc_settings("quick", iterations=20, base="idc") == {"delta_t": 3}
    assert mdc_settings("paper", iterations=20, base="idm") == {"delta_t": 3}  # short paper runs still select
    # ipc 1: MDC is the plain condensation
    one = MultisizeHooks(MDCConfig(), ipc=1, num_classes=2)
    assert one.prefixes([0]) == (None,)


# ------------------------------------------------------------------ frozen ranks under momentum


def test_frozen_ranks_bitwise_unchanged_under_momentum():
    """The engine's step order: combine → backward → mask_grad → SGD(momentum) → clamp → after_step."""
    g = torch.Generator().manual_seed(0)
    syn = SyntheticSet(torch.randn(2, 4, 1, 4, 4, generator=g), factor=1, mean=(0.5,), std=(0.25,))
    h = MultisizeHooks(MDCConfig(delta_t=1), ipc=4, num_classes=2)
    h.bind(syn)
    opt = torch.optim.SGD([syn.images], lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        loss = (syn.images**2).sum()
        opt.zero_grad()
        loss.backward()
        h.mask_grad(syn.images.grad)
        opt.step()
        syn.clamp_()
        h.after_step(syn)

    for _ in range(3):  # build up momentum on every rank
        step()
    _feed(h, 0, [[9, 5, 4], [9, 5, 4]])
    _feed(h, 1, [[8, 4, 1], [8, 4, 1]])  # MLS 1 → 3 freezes rank 0
    assert h.frozen == [1, 1]
    before = syn.images.detach().clone()
    for _ in range(3):
        step()
    after = syn.images.detach()
    assert torch.equal(after[:, :1], before[:, :1])
    assert not torch.equal(after[:, 1:], before[:, 1:])


# ------------------------------------------------------------------ with the real engine (tiny)

TINY = dict(iterations=3, factor=1, batch_real=8, model_kwargs={"width": 8}, inner_steps=2, net_samples=16, net_batch=8)


@pytest.fixture(scope="module")
def tiny_ds():
    import numpy as np

    from edgecond.data import from_arrays

    g = np.random.default_rng(0)
    k = 3
    y = np.repeat(np.arange(k), 12)
    x = (g.random((len(y), 1, 8, 8)) * 0.5 + y[:, None, None, None] / k * 0.5).astype(np.float32)
    yt = np.repeat(np.arange(k), 4)
    xt = (g.random((len(yt), 1, 8, 8)) * 0.5 + yt[:, None, None, None] / k * 0.5).astype(np.float32)
    return from_arrays("tiny", x, y, xt, yt)


def test_tiny_mdc_condense_writes_mls_history(tiny_ds, tmp_path):
    from edgecond.buffer import MultisizeBuffer
    from edgecond.condense import condense, condense_preset

    cfg = condense_preset("idc", "quick", tiny_ds, ipc=3, hooks="mdc", hooks_config={"delta_t": 1}, **TINY)
    res = condense(tiny_ds, cfg, progress=False)
    path = tmp_path / "mdc.safetensors"
    res.buffer.save(path)
    meta = MultisizeBuffer.load(path).meta.extra["mdc"]
    assert meta["config"]["delta_t"] == 1
    assert [e["t"] for e in meta["history"]] == [0, 1, 2]  # reference at t=0, selections at t=1, 2
    assert all(1 <= e["mls"] <= 2 for e in meta["history"])
    assert meta["history"][0] == {"t": 0, "selected": False, "mls": 1, "frozen": 0}


class _Recording(MultisizeHooks):
    def bind(self, syn):
        super().bind(syn)
        self.initial = syn.images.detach().clone()


def test_frozen_ranks_bitwise_unchanged_in_the_engine(tiny_ds):
    from edgecond.condense import condense, condense_preset

    cfg = condense_preset("idc", "quick", tiny_ds, ipc=3, **TINY)
    assert cfg.momentum_img > 0
    hooks = _Recording(MDCConfig(delta_t=1000), ipc=3, num_classes=3)
    hooks.load_state_dict({"mls": [2, 2, 2], "frozen": [1, 1, 1]})  # as after an MLS 1 → 2 step
    condense(tiny_ds, cfg, hooks=hooks, progress=False)
    final = hooks._syn.images.detach()
    assert torch.equal(final[:, :1], hooks.initial[:, :1])
    assert not torch.equal(final[:, 1:], hooks.initial[:, 1:])


def test_baseline_b_and_c_assembly(tiny_ds):
    import numpy as np

    from benchmarks.subset_protocol import SubsetDegradationConfig, baseline_b, baseline_c, concat_size_one

    cfg = SubsetDegradationConfig(dataset="tiny", ipc=3, condense_overrides=dict(TINY, iterations=1),
                                  b_mode="independent")
    ms_b, runs = baseline_b(tiny_ds, cfg, progress=False)
    assert len(runs) == 3 and ms_b.runs == 3 and ms_b.info["b_mode"] == "independent"
    assert [r.config.seed for r in runs] == [0, 1, 2]
    buf = ms_b.buffers[0]
    assert buf.ipc == 3 and buf.num_classes == 3
    stored = buf.images_class_major()
    for k, r in enumerate(runs):  # run k is rank k of every class
        np.testing.assert_allclose(stored[:, k], r.buffer.images_class_major()[:, 0], atol=1e-6)
    # different runs started from different real images
    assert not np.allclose(stored[:, 0], stored[:, 1])
    for n in (1, 2, 3):
        x, y, nbytes = ms_b.sets[n]
        assert x.shape == (3 * n, 1, 8, 8) and y.shape == (3 * n,) and nbytes == buf.bytes_for(n)
    ms_c, res_c = baseline_c(tiny_ds, cfg, progress=False)
    assert sorted(ms_c.sets) == [1, 2, 3] and ms_c.runs == 1
    assert ms_c.sets[2][0].shape == (6, 1, 8, 8)
    assert torch.equal(ms_c.sets[1][0], ms_c.sets[3][0][:3])  # rank-major: prefix 1 = first rows
    with pytest.raises(ConfigError):
        concat_size_one([np.zeros((3, 2, 1, 8, 8))])
    # joint (default): one run with independent ranks, size 1's settings, every rank seed 0
    ms_j, (r_j,) = baseline_b(tiny_ds, SubsetDegradationConfig(dataset="tiny", ipc=3,
                                                              condense_overrides=dict(TINY, iterations=1)), progress=False)
    assert ms_j.runs == 3 and ms_j.info["b_mode"] == "joint" and r_j.config.independent_ranks
    assert r_j.config.ipc == 3 and r_j.config.seed == 0
    assert r_j.config.lr_img == runs[0].config.lr_img  # the size-1 preset's step size
    np.testing.assert_allclose(ms_j.buffers[0].images_class_major()[:, 0], stored[:, 0], atol=1e-6)  # = run 0
    with pytest.raises(ConfigError, match="b_mode"):
        SubsetDegradationConfig(b_mode="shared").validate()


def test_report_json_markdown_plot_and_merge(tmp_path):
    import json

    from benchmarks.subset_protocol import SubsetDegradationResult, merge_results

    def method(acc, runs):
        return {"sizes": [1, 2], "mean": acc, "std": [0.01, 0.02], "accuracies": [[a] for a in acc],
                "bytes": [100, 200], "storage_bytes": 200 * runs, "runs": runs, "condense_seconds": 1.0,
                "eval_seconds": 2.0}

    cfg = {"dataset": "tiny", "base": "idc", "ipc": 2, "preset": "quick", "seeds": [0]}
    a = SubsetDegradationResult(dict(cfg, methods=["C", "MDC"]), {"C": method([0.5, 0.9], 1), "MDC": method([0.8, 0.88], 1)},
                                {"total": 5.0}, {"mdc_cost_ratio": 1.1, "mdc_seconds_per_iteration": 1.1,
                                                 "base_seconds_per_iteration": 1.0})
    b = SubsetDegradationResult(dict(cfg, methods=["A"]), {"A": method([0.85, 0.9], 2)}, {"total": 7.0})
    merged = merge_results([a, b])
    assert list(merged.methods) == ["A", "C", "MDC"] and merged.runtimes["total"] == 7.0
    paths = merged.write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["MDC"]["mean"] == [0.8, 0.88] and data["runtimes"]["sum_of_processes"] == 12.0
    assert merge_results([a, b], wall_seconds=9.5).runtimes["total"] == 9.5  # the pool's measured wall
    md = paths["md"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| MDC |"))
    assert "80.00 ± 1.00" in row and "+14.00" in row  # Avg 84 vs C's 70
    assert paths["png"].stat().st_size > 1000
    assert SubsetDegradationResult.from_dict(data).methods["A"]["runs"] == 2
    with pytest.raises(ConfigError):
        merge_results([a, SubsetDegradationResult(dict(cfg, ipc=3), {}, {"total": 1.0})])


def test_holdout_split_carves_validation_from_train(tiny_ds):
    from edgecond.data import holdout_split

    val = holdout_split(tiny_ds, per_class=2, seed=0)
    assert len(val.y_test) == 6 and len(val.y_train) == len(tiny_ds.y_train) - 6
    train_rows = {tuple(r.flatten().tolist()) for r in tiny_ds.x_train}
    assert all(tuple(r.flatten().tolist()) in train_rows for r in val.x_test)
    assert not {tuple(r.flatten().tolist()) for r in val.x_train} & {tuple(r.flatten().tolist()) for r in val.x_test}
    with pytest.raises(ConfigError):
        holdout_split(tiny_ds, per_class=50)


def test_benchmark_command_with_two_workers_runs_every_method_and_merges(tiny_ds, tmp_path):
    """`benchmarks/subset_degradation.py --workers 2` on a tiny npz dataset: one command runs
    random, A (split by sizes), B, C and MDC as processes side by side and merges one report."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    ds = tiny_ds
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=ds.x_train.numpy(), y_train=ds.y_train.numpy(), x_test=ds.x_test.numpy(),
             y_test=ds.y_test.numpy())
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench"
    cmd = [sys.executable, str(root / "benchmarks" / "subset_degradation.py"), "--dataset", f"npz:{npz}",
           "--base", "dm", "--ipc", "3", "--seeds", "1", "--workers", "2", "--out", str(out),
           "--condense", 'iterations=2,batch_real=4,model_kwargs={"width":4}',
           "--eval", 'epochs=2,model_kwargs={"width":4}']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads((out / "subset_degradation.json").read_text())
    for key in ("random", "A", "B", "C", "MDC"):
        assert data[key]["sizes"] == [1, 2, 3], key
        assert all(0.0 <= m <= 1.0 for m in data[key]["mean"])
    assert data["A"]["runs"] == 3 and data["B"]["runs"] == 3
    # A's size N is C's run: reused inside the job that has it; B runs jointly (one job, no A)
    assert "random-C-MDC-A3" in proc.stdout and " B: done" in proc.stdout, proc.stdout
    assert data["A"]["reused_sizes"] == [3] and data["B"]["b_mode"] == "joint"
    assert data["A"]["accuracies"][2] == data["C"]["accuracies"][2]
    assert data["config"]["condense_overrides"]["model_kwargs"] == {"width": 4}  # a JSON value with commas
    assert (out / "subset_degradation.md").read_text().count("| MDC |") == 2


def test_benchmark_jobs_share_reused_runs():
    """--workers splits: A's size N runs with C (it is C's run); with independent B, A's size 1
    runs with B (it is B's first run); the rest of A one size per job, largest first."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "subset_degradation.py"
    spec = importlib.util.spec_from_file_location("subset_degradation_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    every = ["random", "A", "B", "C", "MDC"]
    names = [n for n, _ in mod._jobs(every, 4, None)]
    assert names == ["random-C-MDC-A4", "B", "A3", "A2", "A1"]
    names = [n for n, _ in mod._jobs(every, 4, None, b_mode="independent")]
    assert names == ["random-C-MDC-A4", "B-A1", "A3", "A2"]
    jobs = dict(mod._jobs(["A"], 2, None))
    assert jobs == {"A2": ["--methods", "A", "--a-sizes", "2"], "A1": ["--methods", "A", "--a-sizes", "1"]}
    sizes = [int(v) for _, extra in mod._jobs(every, 7, None) if "--a-sizes" in extra
             for v in extra[extra.index("--a-sizes") + 1].split(",")]
    assert sorted(sizes) == list(range(1, 8))  # every size of A exactly once
