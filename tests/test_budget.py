"""Budgets (edgecond.budget) and byte units (edgecond.units)."""
from __future__ import annotations

import numpy as np
import pytest

from edgecond.budget import (
    BudgetDecision,
    ConstantTrace,
    CsvTrace,
    LogNormalTrace,
    MemoryModel,
    delta_bytes,
    ipc_for_bytes,
    ipc_for_memory,
    memory_for,
)
from edgecond.buffer import MultisizeBuffer, read_meta
from edgecond.errors import BudgetError, ConfigError
from edgecond.units import format_bytes, parse_bytes


@pytest.fixture(scope="module")
def buf():
    x = np.random.default_rng(0).random((10, 8, 3, 8, 8), dtype=np.float32)
    return MultisizeBuffer.from_class_major(x, class_names=[str(i) for i in range(10)], dataset="toy",
                                           mean=[0.5] * 3, std=[0.25] * 3, method="random", dtype="uint8",
                                           factor=2)


# ------------------------------------------------------------------ units


@pytest.mark.parametrize("text, value", [
    (0, 0), (40000, 40000), ("40000", 40000), ("40kB", 40_000), ("40 kB", 40_000), ("40KB", 40_000),
    ("40k", 40_000), ("1.5MB", 1_500_000), ("2MiB", 2 * 1024**2), ("1KiB", 1024), ("0.5GiB", 2**29),
    ("1.1MB", 1_100_000), ("3B", 3), ("1e3", 1000), ("2.5kb", 2500), (" 7 ", 7), ("1.0000001kB", 1000),
    ("1GB", 10**9), ("1TiB", 2**40), (np.int64(5), 5), (12.9, 12),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.5XB", "kB", "1..5MB", -3, True, None, [1], float("nan"), "1e30TB"])
def test_parse_bytes_rejects(bad):
    with pytest.raises(BudgetError):
        parse_bytes(bad)


def test_format_bytes():
    assert format_bytes(0) == "0 B"
    assert format_bytes(999) == "999 B"
    assert format_bytes(30720) == "30.7 kB"
    assert format_bytes(1_536_000) == "1.54 MB"
    assert format_bytes(2 * 1024**2, binary=True) == "2 MiB"
    assert parse_bytes(format_bytes(40_000).replace(" ", "")) == 40_000


# ------------------------------------------------------------------ byte budgets


def test_ipc_for_bytes_matches_bytes_for_everywhere(buf):
    for n in range(1, buf.ipc + 1):
        b = buf.bytes_for(n)
        d = ipc_for_bytes(buf, b)
        assert d == BudgetDecision(n, b, d.reason) and d.bytes <= b
        assert ipc_for_bytes(buf, b - 1).n == n - 1
        assert ipc_for_bytes(buf.meta, b).n == n  # pure function of the metadata
    top = ipc_for_bytes(buf, "1GB")
    assert top.n == buf.ipc and "all 8 ranks fit" in top.reason


def test_ipc_for_bytes_below_one_rank_is_zero_with_reason(buf):
    for budget in (0, 1, buf.bytes_for(1) - 1):
        d = ipc_for_bytes(buf, budget)
        assert d.n == 0 and d.bytes == 0 and "below one rank" in d.reason
    with pytest.raises(BudgetError):
        ipc_for_bytes(buf, -5)
    with pytest.raises(BudgetError):
        ipc_for_bytes(buf, "lots")


def test_ipc_for_bytes_with_held_prefix_uses_delta_sizes(buf):
    for held in range(1, buf.ipc):
        for target in range(held + 1, buf.ipc + 1):
            cost = delta_bytes(buf, held, target)
            assert cost == len(buf.ranks(held, target))
            assert ipc_for_bytes(buf, cost, held=held).n == target
            assert ipc_for_bytes(buf, cost - 1, held=held).n == target - 1
    d = ipc_for_bytes(buf, 10, held=3)
    assert d.n == 3 and d.bytes == 0 and "keeps n=3" in d.reason
    assert ipc_for_bytes(buf, 10**9, held=buf.ipc).reason.startswith("client already holds")
    assert delta_bytes(buf, 5, 3) == 0 and delta_bytes(buf, 0, 4) == buf.bytes_for(4)
    with pytest.raises(BudgetError):
        delta_bytes(buf, 0, 99)
    with pytest.raises(BudgetError):
        ipc_for_bytes(buf, 100, held=-1)


def test_budget_from_path_reads_metadata_only(buf, tmp_path):
    p = tmp_path / "b.safetensors"
    buf.save(p)
    assert ipc_for_bytes(p, buf.bytes_for(5)).n == 5
    assert read_meta(p).bytes_for(5) == buf.bytes_for(5)
    with pytest.raises(ConfigError):
        ipc_for_bytes(object(), 100)


# ------------------------------------------------------------------ memory budgets


def test_memory_for_is_documented_sum(buf):
    model = MemoryModel(num_params=1000, batch_size=16, activation_factor=10.0)
    n = 3
    samples = n * 10 * 4  # K * factor²
    data = samples * (4 * 3 * 8 * 8 + 8)
    expect = data + 4 * 1000 * 4 + 16 * 4 * 192 * 10
    assert memory_for(buf, n, model=model) == expect
    assert memory_for(buf, 0, model=model) == 0


def test_ipc_for_memory_monotone_and_zero_below_one_rank(buf):
    model = MemoryModel(num_params=1000, batch_size=16, activation_factor=10.0)
    prev = 0
    for n in range(1, buf.ipc + 1):
        need = memory_for(buf, n, model=model)
        assert need > prev
        prev = need
        assert ipc_for_memory(buf, need, model=model).n == n
        assert ipc_for_memory(buf, need - 1, model=model).n == n - 1
    d = ipc_for_memory(buf, "1kB", model=model)
    assert d.n == 0 and "below one rank" in d.reason
    assert ipc_for_memory(buf, "100GB").n == buf.ipc


# ------------------------------------------------------------------ traces


def test_constant_trace():
    t = ConstantTrace("40kB")
    assert t.budget(0, 0) == t.budget("phone-7", 99) == 40_000
    with pytest.raises(BudgetError):
        ConstantTrace(-1)
    with pytest.raises(BudgetError):
        t.budget(0, -1)


def test_lognormal_trace_is_deterministic_per_client_round():
    t = LogNormalTrace(median=100_000, sigma=0.5, seed=3)
    a = [t.budget(c, r) for c in range(20) for r in range(20)]
    b = [t.budget(c, r) for r in range(19, -1, -1) for c in range(20)][::-1]  # other order
    assert a == [LogNormalTrace(median=100_000, sigma=0.5, seed=3).budget(c, r) for c in range(20) for r in range(20)]
    assert sorted(a) == sorted(b)
    assert t.budget("phone", 1) == t.budget("phone", 1)
    assert len(set(a)) > 300 and all(v >= 0 for v in a)
    assert 60_000 < float(np.median(a)) < 160_000
    assert LogNormalTrace(median=100_000, sigma=0.5, seed=4).budget(0, 0) != t.budget(0, 0)
    assert LogNormalTrace(median="1MB", sigma=0.0, seed=0).budget(5, 5) == 1_000_000
    c = LogNormalTrace(median=1000, sigma=3.0, seed=0, floor=500, ceiling=2000)
    assert all(500 <= c.budget(i, 0) <= 2000 for i in range(50))
    for bad in (dict(sigma=-1), dict(sigma=float("nan")), dict(seed=1.5), dict(floor=10, ceiling=5)):
        with pytest.raises(BudgetError):
            LogNormalTrace(median=1000, **bad)


def test_csv_trace(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("client,round,bytes,note\n0,0,40kB,x\n0,1,50000,\nphone,0,1.5MB,y\n\n")
    t = CsvTrace(p)
    assert t.budget(0, 0) == 40_000 and t.budget("0", 1) == 50_000 and t.budget("phone", 0) == 1_500_000
    with pytest.raises(BudgetError, match="no row for client 0 round 5"):
        t.budget(0, 5)
    assert CsvTrace(p, default="1kB").budget(9, 9) == 1000
    assert CsvTrace(p, hold_last=True).budget(0, 7) == 50_000
    assert t.clients() == ["0", "phone"]


@pytest.mark.parametrize("content, msg", [
    ("", "empty"),
    ("client,bytes\n0,1\n", "lacks columns"),
    ("client,round,bytes\n", "no data rows"),
    ("client,round,bytes\n0,x,1\n", "line 2: round 'x'"),
    ("client,round,bytes\n0,-1,1\n", "round '-1'"),
    ("client,round,bytes\n0,1,lots\n", "line 2: cannot parse"),
    ("client,round,bytes\n0,1,-5\n", "line 2"),
    ("client,round,bytes\n0,1\n", "2 fields"),
    ("client,round,bytes\n0,1,5\n0,1,6\n", "duplicate row"),
    ("client,round,bytes\n,1,5\n", "empty client"),
])
def test_csv_trace_malformed(tmp_path, content, msg):
    p = tmp_path / "t.csv"
    p.write_text(content)
    with pytest.raises(BudgetError, match=msg):
        CsvTrace(p)


def test_csv_trace_missing_file(tmp_path):
    with pytest.raises(BudgetError, match="does not exist"):
        CsvTrace(tmp_path / "none.csv")
