"""Multisize baselines A, B, C, MDC and random real images as ONE protocol, and its report.

The subset-degradation protocol (multisize-dataset-condensation.md, Sec. 3.2 and Table 1) asks
for a training set of every size ``n = 1..N`` images per class from each method, then trains a
model from scratch on each with the same evaluation config and seeds:

* ``random``: ``N`` random real images per class (the ``random`` selector), cut to prefixes;
* ``A`` (``C_n^[n]``): a separate condensation to every size ``n``; N buffers holding
  ``1 + 2 + … + N`` images per class — each size is reported from its own condensation;
* ``B`` (``C_n^n``): ``N`` size-1 condensations started from different (disjoint) real images,
  concatenated in order into one buffer, cut to prefixes;
* ``C`` (``C_1^[N]``): one condensation to ``N``, cut to prefixes;
* ``MDC``: one condensation to ``N`` with the multisize hooks (:mod:`.multisize`), cut to prefixes.

Identical runs are not repeated: A's size-``N`` condensation *is* C, and A's size-1
condensation *is* B's first run (same seed and initial image), as in the paper's Table 1 (†).
Training sets that are bitwise identical are evaluated once.

:func:`run_subset_degradation` runs everything and returns a
:class:`edgecond.report.SubsetDegradationResult` that writes ``subset_degradation.json``, ``.md``
(Table-1 layout) and ``.png``. This is benchmark code (it moved out of the library, issue 22):
what it needs from the library is public API, e.g. Baseline B's per-rank independence is the
engine's ``CondenseConfig.independent_ranks`` request (:mod:`edgecond.condense.independent`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgecond.errors import ConfigError
from edgecond.imagedata import holdout_split
from edgecond.report import METHOD_KEYS, SubsetDegradationResult

__all__ = [
    "METHOD_KEYS",
    "SubsetDegradationConfig",
    "MethodSets",
    "SubsetDegradationResult",
    "concat_size_one",
    "baseline_a",
    "baseline_b",
    "baseline_c",
    "mdc_condense",
    "random_real",
    "holdout_split",
    "bench_overrides",
    "run_subset_degradation",
    "merge_results",
    "measure_cost_ratio",
]

log = logging.getLogger(__name__)

#: Adam steps per size of SDC-LBS's nested learning-based slimming when ``sdc`` does not set
#: ``lbs_steps`` (a priori: 10 sizes x 15 steps = the 150 outer iterations of the quick run; not tuned)
SDC_LBS_STEPS = 15
B_MODES: tuple[str, ...] = ("joint", "independent")


@dataclass
class SubsetDegradationConfig:
    """One benchmark run (defaults: digits, IDC, IPC10, quick presets, 3 evaluation seeds).

    Attributes:
        dataset: dataset name for :func:`edgecond.data.load_dataset`.
        base: base matcher of A, B, C and MDC (``idc`` or ``idm``; any registered matcher works).
        ipc: ``N``, the largest size.
        preset: condensation preset of the base matcher and of MDC (``quick`` | ``paper``).
        eval_preset: evaluation preset (default: same name as ``preset``).
        eval_overrides: :class:`~edgecond.evaluate.EvalConfig` fields to override (e.g. epochs).
        seeds: evaluation seeds (the same for every method and size).
        seed: condensation seed.
        b_mode: how Baseline B's ``N`` size-1 condensations run. ``"joint"`` (default): all with
            ``seed``, as ONE run with ``independent_ranks`` (rank ``k`` gets exactly the updates of
            a size-1 run from initial image ``k``; the networks and real batches are shared, so it
            costs about one condensation instead of ``N``). ``"independent"``: ``N`` separate
            runs, run ``k`` with seed ``seed + k``.
        methods: which of :data:`METHOD_KEYS` to run.
        condense_overrides: :class:`~edgecond.condense.CondenseConfig` / method fields applied to
            every condensation (e.g. ``{"iterations": 30}``).
        mdc: :class:`~edgecond.condense.multisize.MDCConfig` overrides on top of the MDC preset.
        sdc: :class:`~edgecond.condense.sdc.SDCConfig` overrides on top of the SDC preset over ``base``
            (``SDC-LFS``: one slimmable condensation, every size its first ``n`` components;
            ``SDC-LBS``: the same run followed by the nested learning-based slimming sweep).
        device: torch device for condensation and evaluation.
    """

    dataset: str = "digits"
    base: str = "idc"
    ipc: int = 10
    preset: str = "quick"
    eval_preset: str | None = None
    eval_overrides: dict = field(default_factory=dict)
    seeds: Sequence[int] = (0, 1, 2)
    seed: int = 0
    methods: Sequence[str] = METHOD_KEYS
    condense_overrides: dict = field(default_factory=dict)
    mdc: dict = field(default_factory=dict)
    device: str = "cpu"
    sdc: dict = field(default_factory=dict)
    a_sizes: Sequence[int] | None = None  #: run only these sizes of Baseline A (split A across processes)
    eval_sizes: Sequence[int] | None = None  #: evaluate only these sizes (default: every size 1..N)
    b_mode: str = "joint"

    def validate(self) -> "SubsetDegradationConfig":
        if int(self.ipc) < 1:
            raise ConfigError(f"ipc={self.ipc!r}; expected an integer >= 1 (the largest size N).")
        bad = [m for m in self.methods if m not in METHOD_KEYS]
        if bad or not self.methods:
            raise ConfigError(
                f"methods={list(self.methods)!r}; expected a non-empty subset of {list(METHOD_KEYS)}."
            )
        if not list(self.seeds):
            raise ConfigError("seeds is empty; expected at least one evaluation seed (e.g. 0 1 2).")
        if self.b_mode not in B_MODES:
            raise ConfigError(f"b_mode={self.b_mode!r}; expected one of {', '.join(B_MODES)}.")
        return self


@dataclass
class MethodSets:
    """The training sets of one method: ``sets[n] = (x, y, bytes)`` for every size ``n``.

    ``x`` is pixel space ``[M, C, H, W]``, ``y`` int64 ``[M]``; ``bytes`` is what a client
    downloads for that size. ``storage_bytes`` is what the server stores for all sizes;
    ``condense_seconds`` the condensation time it took (reused runs counted once per method that
    needs them); ``runs`` how many condensations the method needs.
    """

    name: str
    sets: dict[int, tuple[torch.Tensor, torch.Tensor, int]]
    storage_bytes: int
    condense_seconds: float
    runs: int
    buffers: list[Any] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# condensation helpers


def _prefix_sets(buffer: Any, sizes: Sequence[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor, int]]:
    out = {}
    for n in sizes:
        x, y = buffer.training_arrays(int(n))
        out[int(n)] = (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
            int(buffer.bytes_for(int(n))),
        )
    return out


def _full_bytes(buffer: Any) -> int:
    return int(buffer.bytes_for(int(buffer.ipc)))


def concat_size_one(images: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """Baseline B's assembly: ``N`` class-major ``[K, 1, C, H, W]`` results → ``[K, N, C, H, W]``.

    Run ``k`` becomes rank ``k`` of every class (the order the runs were made in).
    """
    arrays = [np.asarray(im.detach().cpu().numpy() if isinstance(im, torch.Tensor) else im) for im in images]
    if not arrays:
        raise ConfigError("no size-1 condensations to concatenate; expected N >= 1 results.")
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != 5 or a.shape[1] != 1 or a.shape != shape:
            raise ConfigError(
                f"size-1 result {i} has shape {a.shape}; expected [K, 1, C, H, W] like result 0 {shape}."
            )
    return np.concatenate(arrays, axis=1).astype(np.float32)


def bench_overrides(cfg: SubsetDegradationConfig) -> dict[str, Any]:
    """Condensation overrides of a benchmark run: ``cfg.condense_overrides`` on top of the
    library's own presets (the benchmark keeps no preset table of its own)."""
    return dict(cfg.condense_overrides)


def _config(cfg: SubsetDegradationConfig, dataset, method: str, ipc: int, **extra: Any):
    """The one resolver (:func:`edgecond.condense.condense_preset`) for this benchmark's run."""
    from edgecond.condense import condense_preset

    overrides = bench_overrides(cfg)
    overrides.update(extra)
    overrides.setdefault("seed", int(cfg.seed))
    return condense_preset(method, cfg.preset, dataset, ipc=int(ipc), **overrides)


def _run(dataset, config, *, device: str, progress: bool, hooks=None):
    from edgecond.condense import condense

    return condense(dataset, config, device=device, progress=progress, hooks=hooks)


def baseline_c(dataset, cfg: SubsetDegradationConfig, *, progress: bool = True, _result=None) -> tuple[MethodSets, Any]:
    """Baseline C: one condensation to ``N``, cut to prefixes. Also returns the raw result."""
    r = _result or _run(dataset, _config(cfg, dataset, cfg.base, cfg.ipc), device=cfg.device, progress=progress)
    sizes = range(1, int(cfg.ipc) + 1)
    ms = MethodSets("C", _prefix_sets(r.buffer, sizes), _full_bytes(r.buffer), r.seconds, 1, [r.buffer],
                    {"seconds_per_iteration": r.seconds_per_iteration})
    return ms, r


def mdc_condense(dataset, cfg: SubsetDegradationConfig, *, progress: bool = True) -> tuple[MethodSets, Any]:
    """MDC: one condensation to ``N`` with the multisize hooks, cut to prefixes."""
    config = _config(cfg, dataset, cfg.base, cfg.ipc, hooks="mdc", hooks_config=dict(cfg.mdc))
    r = _run(dataset, config, device=cfg.device, progress=progress)
    sizes = range(1, int(cfg.ipc) + 1)
    mdc_meta = dict(r.buffer.meta.extra.get("mdc", {})) if hasattr(r.buffer.meta, "extra") else {}
    ms = MethodSets("MDC", _prefix_sets(r.buffer, sizes), _full_bytes(r.buffer), r.seconds, 1, [r.buffer],
                    {"seconds_per_iteration": r.seconds_per_iteration, "mdc": mdc_meta})
    return ms, r


def baseline_b(dataset, cfg: SubsetDegradationConfig, *, progress: bool = True,
               on_run: Callable[[int, Any], None] | None = None) -> tuple[MethodSets, list[Any]]:
    """Baseline B: ``N`` size-1 condensations from disjoint initial real images, concatenated.

    Run ``k`` starts from the image at position ``k`` of the same per-class permutation
    (``init_seed = seed``, ``init_offset = k``): the rank-``k`` image C and MDC start from.
    ``cfg.b_mode == "joint"``: every run uses ``seed``, all ``N`` in one condensation with
    ``independent_ranks`` (size 1's settings, lr included), returned as one result.
    ``"independent"``: run ``k`` uses seed ``seed + k``; one result per run.
    """
    from edgecond.buffer import MultisizeBuffer

    if cfg.b_mode == "joint":
        config = dataclasses.replace(_config(cfg, dataset, cfg.base, 1, init_seed=int(cfg.seed)), ipc=int(cfg.ipc),
                                     independent_ranks=True)
        r = _run(dataset, config, device=cfg.device, progress=progress)
        if on_run is not None:
            on_run(0, r)
        sizes = range(1, int(cfg.ipc) + 1)
        return (MethodSets("B", _prefix_sets(r.buffer, sizes), _full_bytes(r.buffer), r.seconds, int(cfg.ipc),
                           [r.buffer], {"b_mode": "joint"}), [r])
    results, seconds = [], 0.0
    for k in range(int(cfg.ipc)):
        config = _config(cfg, dataset, cfg.base, 1, seed=int(cfg.seed) + k, init_seed=int(cfg.seed), init_offset=k)
        r = _run(dataset, config, device=cfg.device, progress=progress)
        results.append(r)
        seconds += r.seconds
        if on_run is not None:
            on_run(k, r)
    images = concat_size_one([r.images for r in results])
    first = results[0]
    buf = MultisizeBuffer.from_class_major(
        images,
        class_names=list(dataset.class_names),
        dataset=dataset.name,
        mean=list(dataset.mean),
        std=list(dataset.std),
        factor=int(first.config.factor),
        method=f"baseline-b/{cfg.base}",
        config={"runs": int(cfg.ipc), "run_config": json.loads(json.dumps(dataclasses.asdict(first.config), default=str))},
        dtype=str(first.config.dtype),
    )
    sizes = range(1, int(cfg.ipc) + 1)
    return (MethodSets("B", _prefix_sets(buf, sizes), _full_bytes(buf), seconds, int(cfg.ipc), [buf],
                       {"b_mode": "independent"}), results)


def baseline_a(dataset, cfg: SubsetDegradationConfig, *, progress: bool = True,
               reuse: dict[int, Any] | None = None) -> MethodSets:
    """Baseline A: a separate condensation for every size ``n = 1..N``; size ``n`` is reported
    from its own buffer. ``reuse`` maps a size to an existing identical run (C for ``N``, B's
    first run for 1); their time still counts toward A's condensation time."""
    reuse = dict(reuse or {})
    sets, buffers, seconds, storage = {}, [], 0.0, 0
    sizes = [int(n) for n in (cfg.a_sizes or range(1, int(cfg.ipc) + 1))]
    bad = [n for n in sizes if not 1 <= n <= int(cfg.ipc)]
    if bad:
        raise ConfigError(f"a_sizes {bad} outside 1..{cfg.ipc}; expected sizes of the benchmark's range.")
    for n in sizes:
        r = reuse.get(n) or _run(dataset, _config(cfg, dataset, cfg.base, n), device=cfg.device, progress=progress)
        seconds += r.seconds
        buffers.append(r.buffer)
        storage += _full_bytes(r.buffer)
        sets[n] = _prefix_sets(r.buffer, [n])[n]
    return MethodSets("A", sets, storage, seconds, len(sizes), buffers,
                      {"reused_sizes": sorted(n for n in reuse if n in sizes)})


def random_real(dataset, cfg: SubsetDegradationConfig, *, progress: bool = True) -> MethodSets:
    """``N`` random real images per class (the ``random`` selector), cut to prefixes."""
    from edgecond.condense import condense_preset

    config = condense_preset("random", "quick", dataset, ipc=int(cfg.ipc), seed=int(cfg.seed))
    r = _run(dataset, config, device=cfg.device, progress=progress)
    sizes = range(1, int(cfg.ipc) + 1)
    return MethodSets("random", _prefix_sets(r.buffer, sizes), _full_bytes(r.buffer), r.seconds, 0, [r.buffer])


# --------------------------------------------------------------------------------------------
# the protocol


def sdc_config(cfg: SubsetDegradationConfig, dataset: Any, *, lbs: bool = False):
    """The ``sdc`` condensation of a benchmark run: the SDC preset over ``cfg.base`` with the
    benchmark's engine overrides (iterations etc.; base-matcher fields go to its ``base_config``)
    and ``cfg.sdc`` on top."""
    from edgecond.condense import condense_preset
    from edgecond.condense.engine import CondenseConfig

    engine_fields = {f.name for f in dataclasses.fields(CondenseConfig)}
    over = bench_overrides(cfg)
    engine = {k: v for k, v in over.items() if k in engine_fields}
    base_fields = {k: v for k, v in over.items() if k not in engine_fields}
    engine.setdefault("seed", int(cfg.seed))
    probe = condense_preset("sdc", cfg.preset, dataset, ipc=int(cfg.ipc), base=cfg.base, **engine)
    mc = dict(probe.method_config)
    mc["base_config"] = {**mc.get("base_config", {}), **base_fields}
    mc.update(cfg.sdc)
    mc["lbs_steps"] = int(cfg.sdc.get("lbs_steps") or SDC_LBS_STEPS) if lbs else 0
    return condense_preset("sdc", cfg.preset, dataset, ipc=int(cfg.ipc), method_config=mc, **engine)


def sdc_condense(dataset, cfg: SubsetDegradationConfig, *, progress: bool = True,
                 lbs: bool = False) -> tuple[MethodSets, Any]:
    """SDC-LFS: one slimmable condensation (X = UΣV over ``cfg.base``); size ``n`` = its first ``n``
    components (learning-free slimming, the buffer's own decode). ``lbs=True``: SDC-LBS, the same
    condensation followed by the nested LBS sweep (still one buffer)."""
    r = _run(dataset, sdc_config(cfg, dataset, lbs=lbs), device=cfg.device, progress=progress)
    sizes = range(1, int(cfg.ipc) + 1)
    ms = MethodSets("SDC-LBS" if lbs else "SDC-LFS", _prefix_sets(r.buffer, sizes), _full_bytes(r.buffer), r.seconds, 1, [r.buffer],
                    {"seconds_per_iteration": r.seconds_per_iteration})
    return ms, r


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def run_subset_degradation(
    dataset,
    cfg: SubsetDegradationConfig,
    *,
    progress: bool = True,
    out_dir: str | Path | None = None,
    save_buffers: bool = False,
) -> SubsetDegradationResult:
    """Run every method of ``cfg.methods`` and evaluate every size with the same seeds.

    With ``out_dir`` the report is rewritten after each method (a killed run keeps what it has)
    and, with ``save_buffers``, the C, B and MDC buffers are saved there too.
    """
    from edgecond.evaluate import evaluate_seeds, eval_preset

    cfg.validate()
    t_total = time.perf_counter()
    eval_cfg = eval_preset(cfg.eval_preset or cfg.preset, dataset, **dict(cfg.eval_overrides))
    seeds = [int(s) for s in cfg.seeds]
    config_dict = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    mdc_resolved = (_config(cfg, dataset, cfg.base, cfg.ipc, hooks="mdc", hooks_config=dict(cfg.mdc)).hooks_config
                    if "MDC" in cfg.methods else None)
    config_dict.update(condense_resolved=bench_overrides(cfg), mdc_resolved=mdc_resolved,
                       dataset_summary=dataset.summary() if hasattr(dataset, "summary") else dataset.name,
                       eval=eval_cfg.to_dict(), seeds=seeds)
    result = SubsetDegradationResult(config=config_dict, methods={}, runtimes={})
    cache: dict[str, Any] = {}

    def evaluate(ms: MethodSets) -> None:
        t0 = time.perf_counter()
        sizes, means, stds, accs, nbytes = [], [], [], [], []
        for n in sorted(ms.sets):
            if cfg.eval_sizes and n not in {int(v) for v in cfg.eval_sizes}:
                continue
            x, y, b = ms.sets[n]
            key = _digest(x, y)
            if key not in cache:
                cache[key] = evaluate_seeds(x, y, dataset, eval_cfg, seeds=seeds, device=cfg.device, progress=False)
            r = cache[key]
            sizes.append(n), means.append(r.mean), stds.append(r.std), accs.append(list(r.accuracies)), nbytes.append(b)
            log.info("%s size %d: %.2f ± %.2f %%", ms.name, n, 100 * r.mean, 100 * r.std)
        eval_s = time.perf_counter() - t0
        result.methods[ms.name] = {
            "sizes": sizes, "mean": means, "std": stds, "accuracies": accs, "bytes": nbytes,
            "storage_bytes": ms.storage_bytes, "runs": ms.runs,
            "condense_seconds": ms.condense_seconds, "eval_seconds": eval_s,
            **{k: v for k, v in ms.info.items() if k != "mdc"},
        }
        result.runtimes[ms.name] = ms.condense_seconds + eval_s
        result.runtimes[f"{ms.name}_condense"] = ms.condense_seconds
        result.runtimes[f"{ms.name}_eval"] = eval_s
        if "mdc" in ms.info:
            result.extra["mdc"] = ms.info["mdc"]
        result.runtimes["total"] = time.perf_counter() - t_total
        if out_dir is not None:
            result.write(out_dir)

    from edgecond.progress import progress_bar

    wanted = list(cfg.methods)
    bar = progress_bar(total=len(wanted), desc="subset degradation", unit="method", disable=not progress)
    c_result = b_first = None
    inner_progress = False
    if "random" in wanted:
        bar.set_postfix(method="random")
        evaluate(random_real(dataset, cfg, progress=inner_progress))
        bar.update(1)
    a_sizes = [int(n) for n in (cfg.a_sizes or range(1, int(cfg.ipc) + 1))] if "A" in wanted else []
    if "C" in wanted or int(cfg.ipc) in a_sizes:
        bar.set_postfix(method="C")
        ms_c, c_result = baseline_c(dataset, cfg, progress=inner_progress)
        if save_buffers and out_dir is not None:
            c_result.buffer.save(Path(out_dir) / "C.safetensors")
        if "C" in wanted:
            evaluate(ms_c)
            bar.update(1)
    if "MDC" in wanted:
        bar.set_postfix(method="MDC")
        ms_mdc, mdc_result = mdc_condense(dataset, cfg, progress=inner_progress)
        if save_buffers and out_dir is not None:
            mdc_result.buffer.save(Path(out_dir) / "MDC.safetensors")
        evaluate(ms_mdc)
        bar.update(1)
        if c_result is not None:
            base_spi, mdc_spi = float(c_result.seconds_per_iteration), float(mdc_result.seconds_per_iteration)
            result.extra.update(base_seconds_per_iteration=base_spi, mdc_seconds_per_iteration=mdc_spi,
                                mdc_cost_ratio=mdc_spi / base_spi if base_spi > 0 else None)
    for key, lbs, file in (("SDC-LFS", False, "SDC.safetensors"), ("SDC-LBS", True, "SDC-LBS.safetensors")):
        if key in wanted:
            bar.set_postfix(method=key)
            ms_sdc, sdc_result = sdc_condense(dataset, cfg, progress=inner_progress, lbs=lbs)
            if save_buffers and out_dir is not None:
                sdc_result.buffer.save(Path(out_dir) / file)
            evaluate(ms_sdc)
            bar.update(1)
    if "B" in wanted:
        bar.set_postfix(method="B")
        ms_b, b_runs = baseline_b(dataset, cfg, progress=inner_progress)
        b_first = b_runs[0] if cfg.b_mode == "independent" else None  # joint: one run for all N
        if save_buffers and out_dir is not None:
            ms_b.buffers[0].save(Path(out_dir) / "B.safetensors")
        if "B" in wanted:
            evaluate(ms_b)
            bar.update(1)
    if "A" in wanted:
        bar.set_postfix(method="A")
        reuse = {int(cfg.ipc): c_result} if c_result is not None else {}
        if b_first is not None:
            reuse[1] = b_first
        evaluate(baseline_a(dataset, cfg, progress=inner_progress, reuse=reuse))
        bar.update(1)
    bar.close()
    # present methods in the canonical order
    result.methods = {k: result.methods[k] for k in METHOD_KEYS if k in result.methods}
    result.runtimes["total"] = time.perf_counter() - t_total
    if out_dir is not None:
        result.write(out_dir)
    return result


def merge_results(results: Sequence[SubsetDegradationResult], *,
                  wall_seconds: float | None = None) -> SubsetDegradationResult:
    """Combine reports of the same protocol run as separate processes (e.g. ``--methods A`` and
    ``--methods B`` in parallel). Configs must agree except for ``methods``; runtimes are kept
    per method. ``total`` is ``wall_seconds`` when the caller measured it (the worker pool),
    else the longest single run (a lower bound: the processes ran side by side)."""
    if not results:
        raise ConfigError("no results to merge; expected at least one subset_degradation.json.")
    ignore = {"methods", "eval", "a_sizes", "mdc_resolved", "sdc"}
    ref = {k: v for k, v in results[0].config.items() if k not in ignore}
    merged = SubsetDegradationResult(config=dict(results[0].config), methods={}, runtimes={}, extra={})
    totals = []
    for r in results:
        mine = {k: v for k, v in r.config.items() if k not in ignore}
        diff = sorted(k for k in set(ref) | set(mine) if ref.get(k) != mine.get(k))
        if diff:
            raise ConfigError(f"cannot merge reports whose settings differ in {diff}; run them with the same flags.")
        for key, m in r.methods.items():
            if key not in merged.methods:
                merged.methods[key] = json.loads(json.dumps(m))
                continue
            into = merged.methods[key]  # the same method split across processes (A's sizes)
            rows = {s: i for i, s in enumerate(into["sizes"])}
            for i, size in enumerate(m["sizes"]):
                if size in rows:
                    raise ConfigError(f"method {key} size {size} is in two reports; merge disjoint runs.")
                for f in ("sizes", "mean", "std", "accuracies", "bytes"):
                    into[f].append(m[f][i])
            order = sorted(range(len(into["sizes"])), key=lambda i: into["sizes"][i])
            for f in ("sizes", "mean", "std", "accuracies", "bytes"):
                into[f] = [into[f][i] for i in order]
            for f in ("storage_bytes", "runs", "condense_seconds", "eval_seconds"):
                into[f] = into[f] + m[f]
            if "reused_sizes" in m or "reused_sizes" in into:
                into["reused_sizes"] = sorted(set(into.get("reused_sizes", [])) | set(m.get("reused_sizes", [])))
        for k, v in r.runtimes.items():
            if k != "total":
                merged.runtimes[k] = merged.runtimes.get(k, 0.0) + float(v)
        merged.extra.update(r.extra)
        totals.append(float(r.runtimes.get("total", 0.0)))
    merged.methods = {k: merged.methods[k] for k in METHOD_KEYS if k in merged.methods}
    merged.config["methods"] = list(merged.methods)
    c_spi = merged.methods.get("C", {}).get("seconds_per_iteration")
    m_spi = merged.methods.get("MDC", {}).get("seconds_per_iteration")
    if c_spi and m_spi and "mdc_cost_ratio" not in merged.extra:  # C and MDC ran in different processes
        merged.extra.update(base_seconds_per_iteration=c_spi, mdc_seconds_per_iteration=m_spi,
                            mdc_cost_ratio=m_spi / c_spi, mdc_cost_note="C and MDC ran in parallel processes")
    merged.runtimes["total"] = float(wall_seconds) if wall_seconds is not None else max(totals)
    merged.runtimes["longest_process"] = max(totals)
    merged.runtimes["sum_of_processes"] = sum(totals)
    return merged


def measure_cost_ratio(dataset, cfg: SubsetDegradationConfig, *, iterations: int = 10, repeats: int = 2,
                       progress: bool = False) -> dict[str, Any]:
    """Seconds per outer iteration of the base matcher vs MDC on it, runs interleaved
    (base, MDC, base, MDC, …) on the same machine; the ratio uses the median of each."""
    # MDC's settings of the full-length run (Δt from its iteration count), timed on a short run
    hooks_config = _config(cfg, dataset, cfg.base, cfg.ipc, hooks="mdc", hooks_config=dict(cfg.mdc)).hooks_config
    base_s, mdc_s = [], []
    for _ in range(int(repeats)):
        for hooks, store in (("none", base_s), ("mdc", mdc_s)):
            extra = {"iterations": int(iterations), "hooks": hooks}
            if hooks == "mdc":
                extra["hooks_config"] = hooks_config
            r = _run(dataset, _config(cfg, dataset, cfg.base, cfg.ipc, **extra), device=cfg.device, progress=progress)
            store.extend(r.history["seconds"])
    b, m = float(np.median(base_s)), float(np.median(mdc_s))
    return {"base": cfg.base, "ipc": int(cfg.ipc), "dataset": cfg.dataset, "iterations": int(iterations),
            "repeats": int(repeats), "base_seconds_per_iteration": b, "mdc_seconds_per_iteration": m,
            "ratio": m / b if b > 0 else None}

