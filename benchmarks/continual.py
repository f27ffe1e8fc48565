"""Class-incremental continual learning with a condensed replay memory (Avalanche).

    python benchmarks/continual.py --dataset digits --preset quick --out runs/continual

The dataset's classes arrive in ``experiences`` groups (class order drawn from the seed). The
replay memory holds at most ``memory_per_class × num_classes`` images (20 per class-equivalent:
200 on digits/CIFAR-10), either constant or following a schedule that shrinks and grows again
(``changing``). Arms (JSON keys):

``random``      Avalanche's own ``ParametricBuffer(groupby="class")`` with
                ``RandomExemplarsSelectionStrategy`` (random real exemplars, class-balanced)
``herding``     edgecond's herding selection per experience (real images in herding order, so
                every prefix is a herding set) through :class:`clients.avalanche_replay.CondensedBuffer`
``baseline-c``  plain condensation per experience (``hooks="none"``, MDC's Baseline C), prefixes
``mdc``         multisize condensation per experience (``hooks="mdc"``), prefixes
any method      any other method of ``edgecond.condense.METHODS`` (e.g. ``edc`` once it is
                registered) by its name: that method per experience, prefixes
                (``extra_arms()``; ``edc`` joins the default arms when it exists)

Training recipe, the same for every arm (issue 15): all arms — Avalanche's random exemplars
included — train every mini-batch by **one shared recipe**, the one the condensed buffers carry
(``shared_recipe``: DSA ops, strength, flip policy, CutMix probability; the buffers of all arms
must agree) through ``clients.avalanche_replay.RecipePlugin``, in both protocols; the condensed
memories are then not augmented again per item (``CondensedBuffer(augment=False)``). Soft labels,
where a buffer has them, reach the loss through ``SoftLabelPlugin`` (they are part of that
arm's payload, not of the training recipe). ``--no-recipe`` trains every arm with the
benchmark's batch augmentation (``augment``) instead.

Protocols: ``gdumb`` (GDumb-style: re-initialise the model and train only on the memory, the
protocol of DM/IDM's continual-learning experiment) and ``replay`` (Naive fine-tuning with
``ReplayPlugin``). Accuracy and forgetting come from Avalanche's ``accuracy_metrics`` /
``forgetting_metrics`` (``StreamForgetting``) with ``InteractiveLogger`` (``--quiet``: a
``TextLogger`` file instead), ``CSVLogger`` and ``TensorboardLogger`` under ``OUT/logs``.

Outputs in ``OUT``: ``continual.json`` (top-level keys exactly ``random``, ``herding``,
``baseline-c``, ``mdc``; each with ``final_accuracy`` and ``forgetting`` of the headline setting
— GDumb protocol, constant budget — as mean over seeds, plus every setting under ``settings``),
``continual_meta.json`` (resolved config, timings), ``continual.md`` (tables) and
``continual.png`` (accuracy after each experience).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import random
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from edgecond.augment import DiffAugment  # noqa: E402
from edgecond.continual import ExperienceCondenseConfig, ExperienceCondenser, ListSchedule  # noqa: E402
from edgecond.data import load_dataset  # noqa: E402
from edgecond.errors import ConfigError  # noqa: E402
from edgecond.models import build_model  # noqa: E402
from edgecond.utils import make_generator, seeded  # noqa: E402

ARMS = ("random", "herding", "baseline-c", "mdc")
#: methods that join the default arms when they are registered (helpers land them in parallel)
DEFAULT_EXTRA = ("edc",)
#: registered methods that already back one of ARMS (as base matcher or selector)
_BACKING = ("random", "herding", "idc", "idm", "dm")
PROTOCOLS = ("gdumb", "replay")
BUDGETS = ("constant", "changing")
HEADLINE = ("gdumb", "constant")

log = logging.getLogger("continual")


@dataclass
class ContinualBenchConfig:
    """Settings of one benchmark run (``PRESETS`` fill them per dataset)."""

    dataset: str = "digits"
    experiences: int = 5
    memory_per_class: int = 20  #: total memory = memory_per_class × num_classes stored images
    #: budget of each experience as a fraction of the total memory ("changing" variant)
    changing: tuple[float, ...] = (1.0, 0.6, 0.4, 0.6, 1.0)
    unit: str = "images"  #: budget unit of the condensed arms (stored images; = items at factor 1)
    ipc: int = 50  #: stored images per class of each experience's buffer (covers the largest share needed)
    method: str = "idm"  #: base matcher of baseline-c and mdc
    herding_overrides: dict = field(default_factory=dict)  #: condense_preset overrides of the herding arm
    condense_preset: str = "quick"
    condense_overrides: dict = field(default_factory=dict)
    #: extra condense_preset overrides for one base matcher only, e.g. {"idm": {"lr_img": 0.2}}
    matcher_overrides: dict = field(default_factory=dict)
    model: str = "convnet"
    model_kwargs: dict = field(default_factory=lambda: {"width": 64})
    gdumb_epochs: int = 50
    replay_epochs: int = 10
    lr: float = 0.05  #: SGD, constant; 0.01 underfits a from-scratch ConvNet in a few hundred steps
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32  #: stream and memory mini-batch size
    #: DiffAugment of every training mini-batch. Digits: "crop" (flip/rotate/cutout hurt 8x8 digits)
    augment: str = "crop"
    #: every arm trains by the condensed buffers' shared recipe (see the module doc); False:
    #: every arm gets the batch augmentation ``augment``
    recipe: bool = True
    seeds: tuple[int, ...] = (0, 1)
    protocols: tuple[str, ...] = PROTOCOLS
    budgets: tuple[str, ...] = BUDGETS
    arms: tuple[str, ...] = ARMS

    def total_memory(self, num_classes: int) -> int:
        return int(self.memory_per_class) * int(num_classes)

    def schedule(self, budget: str, num_classes: int) -> list[int]:
        total = self.total_memory(num_classes)
        if budget == "constant":
            return [total] * self.experiences
        if budget == "changing":
            fr = list(self.changing) + [self.changing[-1]] * max(0, self.experiences - len(self.changing))
            return [max(1, int(round(total * f))) for f in fr[: self.experiences]]
        raise ConfigError(f"unknown budget variant {budget!r}; expected one of {', '.join(BUDGETS)}.")


def preset(name: str, dataset: str) -> ContinualBenchConfig:
    """``quick`` (CPU minutes on digits-sized data) or ``paper`` (longer condensation and
    training), from the data's facts (edgecond.facts), not its name: the condensation settings
    come from the library's resolver; this function only adds the benchmark's own lengths."""
    from edgecond.condense.presets import dataset_facts
    from edgecond.facts import without_flip

    facts, _ = dataset_facts(dataset)
    cfg = ContinualBenchConfig(dataset=dataset)
    if facts.side <= 8:
        # 8x8 images: factor 1 (4x4 tiles are too coarse), small ConvNet
        cfg.condense_overrides = {"factor": 1, "iterations": 50, "dtype": "float16",
                                  "model_kwargs": {"width": 32, "depth": 2, "norm": "instance"}}
        cfg.herding_overrides = {"model_kwargs": {"width": 32, "depth": 2, "norm": "instance"},
                                 "method_config": {"train_steps": 100, "batch": 128}}
    elif facts.side >= 24:
        cfg.condense_overrides = {"factor": 2}
        cfg.model_kwargs = {"width": 128}
        cfg.augment = without_flip("color_crop_cutout_flip_scale_rotate", facts.flips)
    if name == "quick":
        return cfg
    if name == "paper":
        cfg.condense_preset = "paper"
        cfg.condense_overrides = {k: v for k, v in cfg.condense_overrides.items() if k in ("factor", "dtype")}
        cfg.herding_overrides = {}
        cfg.matcher_overrides = {}
        cfg.gdumb_epochs, cfg.replay_epochs = 300, 30
        cfg.seeds = (0, 1, 2, 3, 4)
        return cfg
    raise ConfigError(f"unknown preset {name!r}; expected 'quick' or 'paper'.")


# --------------------------------------------------------------------------------------------
# Avalanche pieces
# --------------------------------------------------------------------------------------------


def make_stream(ds, class_order: list[int], experiences: int):
    """``nc_benchmark`` over normalised tensors; items are ``(x, int, int)``."""
    from torch.utils.data import TensorDataset

    from avalanche.benchmarks import nc_benchmark

    train = TensorDataset(ds.normalize(ds.x_train), ds.y_train)
    test = TensorDataset(ds.normalize(ds.x_test), ds.y_test)
    return nc_benchmark(train, test, n_experiences=experiences, task_labels=False,
                        fixed_class_order=class_order)


def _augment_plugin(strategy_name: str, seed: int):
    from avalanche.training.plugins import SupervisedPlugin

    class AugmentPlugin(SupervisedPlugin):
        """DSA augmentation of each training mini-batch (normalised space), seeded."""

        def __init__(self):
            super().__init__()
            self.aug = DiffAugment(strategy_name)
            self.gen = make_generator(seed)

        def before_forward(self, strategy, **kwargs):
            if self.aug.enabled and strategy.is_training:
                x = strategy.mbatch[0]
                draw = self.aug.sample_draw(len(x), generator=self.gen, device=x.device)
                strategy.mbatch[0] = self.aug(x, draw=draw)

    return AugmentPlugin()


def extra_arms() -> tuple[str, ...]:
    """Registered condensation methods that are not behind one of :data:`ARMS` (each can run
    as an arm of its own name)."""
    from edgecond.condense.engine import METHODS, _ensure_methods

    _ensure_methods()
    return tuple(n for n in METHODS.names() if n not in _BACKING)


def default_arms() -> tuple[str, ...]:
    """:data:`ARMS` plus every method of :data:`DEFAULT_EXTRA` that is registered."""
    return ARMS + tuple(a for a in DEFAULT_EXTRA if a in extra_arms())


def shared_recipe(sources: dict[str, list], flips: bool):
    """The one recipe every arm trains by: the recipe the buffers of all buffer-backed arms carry
    (:func:`edgecond.recipe.recipe_of`); with no buffer at all, the evaluation protocol's
    defaults. Buffers that disagree are an error: the comparison would not be fair."""
    from edgecond.recipe import recipe_of

    recipes = {}
    for arm, bufs in sources.items():
        for b in bufs:
            recipes.setdefault(json.dumps(recipe_of(b, flips=flips).to_json(), sort_keys=True), []).append(arm)
    if len(recipes) > 1:
        raise ConfigError(f"the arms' buffers carry different training recipes {sorted(recipes)} (arms "
                          f"{[sorted(set(v)) for v in recipes.values()]}); a fair comparison trains every arm "
                          "by one recipe. Condense them with one preset, or run with --no-recipe.")
    return recipe_of(next(iter(sources.values()))[0] if recipes else None, flips=flips)


def _policy(arm: str, max_size: int, sources: dict[str, list], cfg: ContinualBenchConfig,
            protocol: str = "gdumb"):
    from avalanche.training.storage_policy import ParametricBuffer, RandomExemplarsSelectionStrategy

    from clients.avalanche_replay import CondensedBuffer

    if arm == "random":
        return ParametricBuffer(max_size, groupby="class",
                                selection_strategy=RandomExemplarsSelectionStrategy())
    # augmentation comes from the one batch-level plugin every arm gets (RecipePlugin or DSA)
    return CondensedBuffer(max_size, buffers=sources[arm], unit=cfg.unit, normalize=True, augment=False)


def run_one(ds, bm, arm: str, protocol: str, schedule: list[int], sources: dict, cfg: ContinualBenchConfig,
            *, seed: int, log_dir: Path, quiet: bool, device: str, recipe=None) -> dict:
    """Train one arm under one protocol and budget; returns per-experience metrics.
    ``recipe``: the shared training recipe (:func:`shared_recipe`; needed when ``cfg.recipe``)."""
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger, TextLogger
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin

    from clients.avalanche_replay import GDumbStylePlugin, MemoryBudgetPlugin

    log_dir.mkdir(parents=True, exist_ok=True)
    text_file = None
    if quiet:
        text_file = open(log_dir / "log.txt", "w")
        first_logger = TextLogger(text_file)
    else:
        first_logger = InteractiveLogger()
    csv_logger = CSVLogger(log_folder=str(log_dir))
    tb_logger = TensorboardLogger(tb_log_dir=str(log_dir / "tb"))
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[first_logger, csv_logger, tb_logger],
    )
    model = build_model(cfg.model, ds.image_shape, ds.num_classes, seed=seed, **cfg.model_kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    from clients.avalanche_replay import SoftLabelPlugin

    policy = _policy(arm, schedule[0], sources, cfg, protocol)
    plugins: list[Any] = [MemoryBudgetPlugin(policy, ListSchedule(schedule))]
    if cfg.recipe:  # one recipe, the same for every arm (fairness)
        from clients.avalanche_replay import RecipePlugin

        plugins.append(RecipePlugin(recipe, seed=seed))
    else:
        plugins.append(_augment_plugin(cfg.augment, seed))
    if arm != "random" and cfg.recipe and any(b.has_soft_labels for b in sources.get(arm, [])):
        plugins.append(SoftLabelPlugin(policy, seed=seed))  # soft labels reach the loss
    if protocol == "gdumb":
        plugins.append(GDumbStylePlugin(policy))
        epochs = cfg.gdumb_epochs
    elif protocol == "replay":
        plugins.append(ReplayPlugin(mem_size=schedule[0], storage_policy=policy))
        epochs = cfg.replay_epochs
    else:
        raise ConfigError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}.")
    strategy = Naive(model=model, optimizer=opt, train_mb_size=cfg.batch_size, train_epochs=epochs,
                     eval_mb_size=512, device=device, plugins=plugins, evaluator=evaluator)
    acc_curve, forgetting_curve, memory = [], [], []
    t0 = time.perf_counter()
    for exp in bm.train_stream:
        strategy.train(exp, num_workers=0)
        res = strategy.eval(bm.test_stream, num_workers=0)
        acc_curve.append(float(_metric(res, "Top1_Acc_Stream/eval_phase/test_stream")))
        forgetting_curve.append(float(_metric(res, "StreamForgetting/eval_phase/test_stream", default=0.0)))
        memory.append(len(policy.buffer))
    csv_logger.close()
    if text_file is not None:
        text_file.close()
    with contextlib.suppress(Exception):
        tb_logger.writer.close()
    return {
        "final_accuracy": acc_curve[-1],
        "forgetting": forgetting_curve[-1],
        "accuracy_curve": acc_curve,
        "forgetting_curve": forgetting_curve,
        "memory_items": memory,
        "budget": schedule,
        "seconds": time.perf_counter() - t0,
    }


def _metric(results: dict, prefix: str, default: float | None = None) -> float:
    for k, v in results.items():
        if k.startswith(prefix):
            return float(v)
    if default is not None:
        return default
    raise KeyError(f"metric {prefix!r} not in {sorted(results)}")


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def class_order_for(seed: int, num_classes: int) -> list[int]:
    return torch.randperm(num_classes, generator=make_generator(1000 + seed)).tolist()


def build_sources(ds, exp_classes: list[list[int]], cfg: ContinualBenchConfig, *, seed: int,
                  cache_dir: Path, device: str, progress: bool) -> tuple[dict[str, list], dict[str, float]]:
    """One multisize buffer per experience for each buffer-backed arm (cached on disk)."""
    specs = {
        "herding": ExperienceCondenseConfig(method="herding", hooks="none", ipc=cfg.ipc, seed=seed,
                                            preset=cfg.condense_preset, factor=1,
                                            overrides=dict(cfg.herding_overrides)),
        "baseline-c": ExperienceCondenseConfig(method=cfg.method, hooks="none", ipc=cfg.ipc, seed=seed,
                                               preset=cfg.condense_preset,
                                               factor=int(cfg.condense_overrides.get("factor", 1)),
                                               overrides={**{k: v for k, v in cfg.condense_overrides.items() if k != "factor"},
                                                          **cfg.matcher_overrides.get(cfg.method, {})}),
    }
    specs["mdc"] = dataclasses.replace(specs["baseline-c"], hooks="mdc")
    for arm in cfg.arms:  # any other registered method: its own name, baseline-c's settings
        if arm not in specs and arm != "random":
            specs[arm] = dataclasses.replace(specs["baseline-c"], method=arm,
                                             overrides={**{k: v for k, v in cfg.condense_overrides.items()
                                                           if k != "factor"},
                                                        **cfg.matcher_overrides.get(arm, {})})
    sources, seconds = {}, {}
    for arm, spec in specs.items():
        if arm not in cfg.arms:
            continue
        t0 = time.perf_counter()
        condenser = ExperienceCondenser(ds, spec, cache_dir=cache_dir, device=device, progress=progress)
        sources[arm] = condenser.prepare(exp_classes)
        seconds[arm] = time.perf_counter() - t0
        log.info("seed %d: %s buffers ready in %.1fs", seed, arm, seconds[arm])
    return sources, seconds


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(raw: dict, cfg: ContinualBenchConfig) -> dict:
    """``raw[protocol][budget][arm][seed]`` → the JSON layout documented at the top."""
    out: dict[str, Any] = {}
    for arm in cfg.arms:
        settings = {}
        for protocol in cfg.protocols:
            for budget in cfg.budgets:
                runs = raw.get(protocol, {}).get(budget, {}).get(arm, {})
                if not runs:
                    continue
                seeds = sorted(runs)
                acc = [runs[s]["final_accuracy"] for s in seeds]
                fgt = [runs[s]["forgetting"] for s in seeds]
                am, asd = _mean_std(acc)
                fm, fsd = _mean_std(fgt)
                curves = [runs[s]["accuracy_curve"] for s in seeds]
                settings[f"{protocol}/{budget}"] = {
                    "final_accuracy": am, "final_accuracy_std": asd,
                    "forgetting": fm, "forgetting_std": fsd,
                    "seeds": seeds, "final_accuracies": acc, "forgettings": fgt,
                    "accuracy_curve": [statistics.fmean(v) for v in zip(*curves)],
                    "budget": runs[seeds[0]]["budget"],
                    "memory_items": {str(s): runs[s]["memory_items"] for s in seeds},
                    "seconds": sum(runs[s]["seconds"] for s in seeds),
                }
        head = settings.get("/".join(HEADLINE)) or (next(iter(settings.values())) if settings else {})
        out[arm] = {
            "final_accuracy": head.get("final_accuracy"),
            "final_accuracy_std": head.get("final_accuracy_std"),
            "forgetting": head.get("forgetting"),
            "forgetting_std": head.get("forgetting_std"),
            "seeds": head.get("seeds"),
            "setting": "/".join(HEADLINE) if "/".join(HEADLINE) in settings else next(iter(settings), None),
            "settings": settings,
        }
    return out


def write_markdown(summary: dict, cfg: ContinualBenchConfig, meta: dict, path: Path) -> None:
    lines = [f"# Continual learning on {cfg.dataset} ({cfg.experiences} experiences, "
             f"{cfg.memory_per_class} images per class-equivalent)", ""]
    for protocol in cfg.protocols:
        for budget in cfg.budgets:
            key = f"{protocol}/{budget}"
            rows = [(arm, summary[arm]["settings"].get(key)) for arm in cfg.arms]
            rows = [(a, r) for a, r in rows if r]
            if not rows:
                continue
            lines += [f"## {protocol}, {budget} budget {rows[0][1]['budget']}", "",
                      "| arm | final accuracy (%) | forgetting (%) | seeds |", "|---|---|---|---|"]
            for arm, r in rows:
                lines.append(f"| {arm} | {100 * r['final_accuracy']:.1f} ± {100 * r['final_accuracy_std']:.1f} | "
                             f"{100 * r['forgetting']:.1f} ± {100 * r['forgetting_std']:.1f} | "
                             f"{len(r['seeds'])} |")
            lines.append("")
    lines += ["Mean ± std over seeds (class order and condensation seed change with the seed).",
              f"Total wall time {meta['seconds_total']:.0f} s on {meta['threads']} threads.", ""]
    path.write_text("\n".join(lines))


def write_plot(summary: dict, cfg: ContinualBenchConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [f"{p}/{b}" for p in cfg.protocols for b in cfg.budgets]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for arm in cfg.arms:
            r = summary[arm]["settings"].get(key)
            if r:
                xs = list(range(1, len(r["accuracy_curve"]) + 1))
                ax.plot(xs, [100 * v for v in r["accuracy_curve"]], marker="o", label=arm)
        ax.set_title(key)
        ax.set_xlabel("experience")
        ax.set_ylabel("stream accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@contextlib.contextmanager
def _python_random(seed: int):
    """Seed Python's ``random`` (Avalanche's random exemplar selection uses it) and restore it."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def run(cfg: ContinualBenchConfig, out: Path, *, cache_dir: Path, device: str = "cpu",
        quiet: bool = False, progress: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ds = load_dataset(cfg.dataset)
    k = ds.num_classes
    if k % cfg.experiences:
        raise ConfigError(f"{k} classes do not split into {cfg.experiences} experiences; pick a divisor.")
    raw: dict = {}
    condense_seconds: dict = {}
    recipes: dict = {}
    for seed in cfg.seeds:
        order = class_order_for(seed, k)
        per = k // cfg.experiences
        exp_classes = [order[i * per:(i + 1) * per] for i in range(cfg.experiences)]
        sources, secs = build_sources(ds, exp_classes, cfg, seed=seed, cache_dir=cache_dir, device=device,
                                      progress=progress)
        condense_seconds[str(seed)] = secs
        bm = make_stream(ds, order, cfg.experiences)
        recipe = shared_recipe(sources, bool(getattr(ds, "flips", False))) if cfg.recipe else None
        if recipe is not None:
            recipes[str(seed)] = recipe.to_json()
        for protocol in cfg.protocols:
            for budget in cfg.budgets:
                schedule = cfg.schedule(budget, k)
                for arm in cfg.arms:
                    name = f"{protocol}-{budget}-{arm}-s{seed}"
                    log.info("run %s (budget %s)", name, schedule)
                    with seeded(seed), _python_random(seed), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = run_one(ds, bm, arm, protocol, schedule, sources, cfg, seed=seed,
                                      log_dir=out / "logs" / name, quiet=quiet, device=device, recipe=recipe)
                    log.info("  %s: final accuracy %.3f forgetting %.3f (%.1fs)", name,
                             res["final_accuracy"], res["forgetting"], res["seconds"])
                    raw.setdefault(protocol, {}).setdefault(budget, {}).setdefault(arm, {})[seed] = res
    (out / "continual_raw.json").write_text(json.dumps(_raw_jsonable(raw), indent=1))
    return finish(raw, cfg, out, {
        "seconds_total": time.perf_counter() - t_start,
        "condense_seconds": condense_seconds,
        "training_recipe": recipes or "none: every arm trained with the batch augmentation " + repr(cfg.augment),
        "threads": torch.get_num_threads(),
        "device": device,
        "dataset": ds.summary(),
    })


def _raw_jsonable(raw: dict) -> dict:
    return {p: {b: {a: {str(s): r for s, r in seeds.items()} for a, seeds in arms.items()}
                for b, arms in budgets.items()} for p, budgets in raw.items()}


def finish(raw: dict, cfg: ContinualBenchConfig, out: Path, info: dict) -> dict:
    """Write JSON/Markdown/PNG for ``raw[protocol][budget][arm][seed]`` results."""
    summary = summarize(raw, cfg)
    meta = {**info,
            "config": asdict(cfg),
            "headline": "/".join(HEADLINE),
            "note": "timings on a shared, heavily loaded 2-core CPU unless stated otherwise"}
    (out / "continual.json").write_text(json.dumps(summary, indent=2))
    (out / "continual_meta.json").write_text(json.dumps(meta, indent=2, default=str))
    write_markdown(summary, cfg, meta, out / "continual.md")
    write_plot(summary, cfg, out / "continual.png")
    return summary


def merge(dirs: list[Path], out: Path) -> tuple[dict, ContinualBenchConfig]:
    """Combine runs of the same config made in several processes (e.g. one per seed)."""
    raw: dict = {}
    cfg = None
    infos = []
    for d in dirs:
        part = json.loads((d / "continual_raw.json").read_text())
        meta = json.loads((d / "continual_meta.json").read_text())
        c = dict(meta["config"])
        seeds = c.pop("seeds")
        if cfg is None:
            cfg, first, all_seeds = c, d, list(seeds)
        else:
            if c != cfg:
                raise ConfigError(f"{d} was run with another config than {first}; merge only runs of one config.")
            all_seeds += [s for s in seeds if s not in all_seeds]
        infos.append({"dir": str(d), "seconds_total": meta.get("seconds_total"),
                      "condense_seconds": meta.get("condense_seconds"), "threads": meta.get("threads")})
        for p, budgets in part.items():
            for b, arms in budgets.items():
                for a, runs in arms.items():
                    for s, r in runs.items():
                        raw.setdefault(p, {}).setdefault(b, {}).setdefault(a, {})[int(s)] = r
    if cfg is None:
        raise ConfigError("nothing to merge; pass the --out folders of earlier runs.")
    cfg_obj = ContinualBenchConfig(**{**cfg, "seeds": tuple(sorted(all_seeds))})
    for name in ("changing", "protocols", "budgets", "arms"):
        setattr(cfg_obj, name, tuple(getattr(cfg_obj, name)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "continual_raw.json").write_text(json.dumps(_raw_jsonable(raw), indent=1))
    wall = [i["seconds_total"] or 0.0 for i in infos]
    summary = finish(raw, cfg_obj, out, {"merged_from": infos, "seconds_total": max(wall) if wall else 0.0,
                                          "threads": infos[0]["threads"]})
    return summary, cfg_obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--preset", default="quick", choices=("quick", "paper"))
    p.add_argument("--out", required=True, help="output folder (JSON, Markdown, PNG, Avalanche logs)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    p.add_argument("--arms", nargs="+", choices=ARMS + extra_arms(),
                   help=f"default: {' '.join(ARMS)} (+ {', '.join(DEFAULT_EXTRA)} when registered)")
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS)
    p.add_argument("--budgets", nargs="+", choices=BUDGETS)
    p.add_argument("--ipc", type=int, help="stored images per class of each experience's buffer")
    p.add_argument("--memory-per-class", type=int, help="total memory = this × number of classes (default 20)")
    p.add_argument("--method", help="base matcher of baseline-c/mdc (idm, idc, dm)")
    p.add_argument("--iterations", type=int, help="condensation outer iterations")
    p.add_argument("--gdumb-epochs", type=int)
    p.add_argument("--replay-epochs", type=int)
    p.add_argument("--cache", default=None, help="condensed-buffer cache folder (default OUT/cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="TextLogger files instead of InteractiveLogger")
    p.add_argument("--no-recipe", action="store_true",
                   help="train every arm with the benchmark's batch augmentation, not the buffers' shared recipe")
    p.add_argument("--progress", action="store_true", help="condensation progress bars")
    p.add_argument("--jobs", type=int, default=None,
                   help="seeds run in this many parallel processes of 1 thread each, merged into --out "
                        "(default: min(#seeds, CPU cores))")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="combine the --out folders of earlier runs (e.g. one process per seed) into --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.merge:
        summary, cfg = merge([Path(d) for d in args.merge], Path(args.out))
        _print_summary(summary, cfg, Path(args.out))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.preset, args.dataset)
    cfg.arms = default_arms()
    for name in ("seeds", "arms", "protocols", "budgets"):
        if getattr(args, name):
            setattr(cfg, name, tuple(getattr(args, name)))
    for name in ("ipc", "method", "gdumb_epochs", "replay_epochs", "memory_per_class"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.iterations is not None:
        cfg.condense_overrides = {**cfg.condense_overrides, "iterations": args.iterations}
    if args.no_recipe:
        cfg.recipe = False
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    jobs = args.jobs if args.jobs is not None else min(len(cfg.seeds), os.cpu_count() or 1)
    if jobs > 1 and len(cfg.seeds) > 1:
        return _run_parallel(argv if argv is not None else sys.argv[1:], cfg, out, cache, jobs)
    from edgecond.utils import resolve_device

    device = str(resolve_device(args.device))
    summary = run(cfg, out, cache_dir=cache, device=device, quiet=args.quiet, progress=args.progress)
    _print_summary(summary, cfg, out)
    return 0


def _run_parallel(argv: list[str], cfg: ContinualBenchConfig, out: Path, cache: Path, jobs: int) -> int:
    """One subprocess per seed (``jobs`` at a time, 1 thread each), then :func:`merge`."""
    import subprocess

    base = _strip_args(argv, {"--seeds": True, "--out": True, "--jobs": True, "--threads": True, "--cache": True})
    pending = list(cfg.seeds)
    running: list[tuple[int, Any]] = []
    dirs = []
    failed = []
    out.mkdir(parents=True, exist_ok=True)
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            d = out / f"seed-{seed}"
            dirs.append(d)
            cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--seeds", str(seed), "--out", str(d),
                   "--cache", str(cache), "--jobs", "1", "--threads", "1"]
            log.info("start seed %d: %s", seed, " ".join(cmd))
            running.append((seed, subprocess.Popen(cmd)))
        time.sleep(2)
        for item in list(running):
            seed, proc = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    failed.append(seed)
                    log.error("seed %d failed with exit code %d", seed, proc.returncode)
    if failed:
        raise ConfigError(f"seeds {failed} failed; see the logs under {out}/seed-*/ and rerun them.")
    summary, merged_cfg = merge(dirs, out)
    _print_summary(summary, merged_cfg, out)
    return 0


def _strip_args(argv: list[str], drop: dict[str, bool]) -> list[str]:
    """``argv`` without the options in ``drop`` (and their values, up to the next ``--option``)."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            key = a.split("=", 1)[0]
            skip = key in drop and "=" not in a
            if key in drop:
                continue
        elif skip:
            continue
        out.append(a)
    return out


def _print_summary(summary: dict, cfg: ContinualBenchConfig, out: Path) -> None:
    for arm in cfg.arms:
        r = summary[arm]
        print(f"{arm:>11}: final accuracy {100 * r['final_accuracy']:.1f} ± {100 * r['final_accuracy_std']:.1f}  "
              f"forgetting {100 * r['forgetting']:.1f} ± {100 * r['forgetting_std']:.1f}  ({r['setting']})")
    print(f"wrote {out / 'continual.json'}")


if __name__ == "__main__":
    raise SystemExit(main())
