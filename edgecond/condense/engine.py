"""The condensation engine: config, presets, the outer/inner loop, checkpoints, output buffer.

:func:`condense` runs any method registered in :data:`METHODS`:

* a :class:`~edgecond.condense.base.Selector` (``random``, ``herding``) picks real images;
* a :class:`~edgecond.condense.base.Matcher` (``idc``, ``idm``, ``dm``) optimises a
  :class:`~edgecond.condense.base.SyntheticSet` with the loop documented in
  :mod:`edgecond.condense.base` (the hooks see every step, so the MDC wrapper plugs in here).

Everything random comes from local generators seeded from ``config.seed`` (the initial real
images from ``config.init_seed`` when set); checkpoints hold the synthetic images, the image
optimiser, the matcher's and the hooks' state, every generator state and the history, so a
resumed run ends bit-for-bit where an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CondenseError, ConfigError
from ..registry import Registry
from ..utils import make_generator, resolve_device
from .base import EngineHooks, Matcher, Method, SyntheticSet
from .checkpoint import check_resume_state, load_checkpoint, load_resume_state, save_checkpoint
from .realdata import RealData, initial_images, mosaic  # noqa: F401  (public via engine)
from .runlog import _Logger

__all__ = [
    "METHODS",
    "register_method",
    "list_methods",
    "CondenseConfig",
    "CondenseResult",
    "condense",
    "condense_preset",
    "RealData",
    "initial_images",
    "build_hooks",
    "method_config",
    "DTYPES",
    "LR_IMG_SPACES",
    "image_grad_scale",
]

log = logging.getLogger(__name__)

METHODS: Registry[type[Method]] = Registry(
    "condensation method",
    hint="Register your own with @edgecond.condense.register_method('name') on a Matcher or Selector subclass.",
)
DTYPES = ("uint8", "float16", "float32")
LR_IMG_SPACES = ("normalized", "pixel")
#: modules of this package that are infrastructure, not methods (every other module is imported
#: by :func:`_ensure_methods`, and registers its methods with :func:`register_method` on import)
_NOT_METHOD_MODULES = frozenset({"base", "engine", "checkpoint", "presets", "multisize", "independent", "distributed", "realdata", "runlog"})


def register_method(name: str):
    """Class decorator: register a :class:`Matcher`/:class:`Selector` subclass under ``name``."""

    def deco(cls):
        cls.name = name
        METHODS.register(name, cls)
        return cls

    return deco


def _ensure_methods() -> None:
    """Import every method module of ``edgecond.condense`` (a new method is one new module)."""
    import importlib
    import pkgutil

    from .. import condense as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and info.name not in _NOT_METHOD_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def list_methods() -> list[dict[str, str]]:
    """``[{name, kind, description, presets}]`` of every registered method."""
    _ensure_methods()
    out = []
    for name, cls in METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({
            "name": name,
            "kind": cls.kind,
            "description": doc[0] if doc else "",
            "presets": ", ".join(sorted(cls.presets)),
        })
    return out


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------


@dataclass
class CondenseConfig:
    """Everything that determines a condensation run (logged in the buffer's metadata).

    Engine-level settings live here; the method's own hyper-parameters are in
    ``method_config`` (the fields of ``METHODS.get(method).Config``, resolved by
    :func:`condense_preset`).
    """

    method: str
    ipc: int
    factor: int = 1  #: multi-formation factor f: each stored image decodes to f² training images
    iterations: int = 100  #: outer iterations
    seed: int = 0
    lr_img: float = 0.01  #: SGD learning rate of the synthetic images (in ``lr_img_space``)
    momentum_img: float = 0.5
    #: the value space the image SGD step is taken in: "normalized" ((x - mean)/std, the DC/DSA/
    #: DM/IDM reference codes) or "pixel" (x in [0, 1], the IDC/MDC reference codes, whose
    #: real data is not normalised until the matching augmentation). At the same ``lr_img`` a
    #: pixel-space step moves a pixel 1/std² (≈ 16× on CIFAR-10) further.
    lr_img_space: str = "normalized"
    batch_real: int = 128  #: real images per class per matching step
    model: str = "convnet"
    model_kwargs: dict = field(default_factory=dict)
    augment: str = "color_crop_cutout"  #: siamese augmentation strategy for matching ("none" = off)
    augment_single_op: bool = False  #: apply one random op of ``augment`` per step (DSA/DM style)
    method_config: dict = field(default_factory=dict)
    hooks: str = "none"  #: "none" (plain) or "mdc" (multisize wrapper)
    hooks_config: dict = field(default_factory=dict)
    preset: str = ""
    dataset: str = ""  #: informational: the dataset name the preset was resolved for
    dtype: str = "uint8"  #: buffer storage dtype: uint8 | float16 | float32
    init: str = "real"  #: "real" (random real images; IDC mosaic for f > 1) or "noise"
    init_seed: int | None = None  #: seed of the initial images (default: ``seed``)
    init_offset: int = 0  #: use the init permutation from position ``init_offset * ipc * f²``
    #: every stored rank is its own size-1 condensation: the loss is the sum of per-rank losses,
    #: each computed from that rank's images alone, under the networks and real batches all ranks
    #: share (Baseline B's N size-1 condensations run as one). Matchers: idc, idm, dm; no hooks.
    independent_ranks: bool = False


@dataclass
class CondenseResult:
    """What :func:`condense` returns."""

    buffer: Any  # edgecond.buffer.MultisizeBuffer
    history: dict[str, list]
    seconds: float
    seconds_per_iteration: float
    images: torch.Tensor  #: ``[K, N, C, H, W]`` float32 pixel space (before buffer quantisation)
    config: CondenseConfig


def method_config(cls: type[Method], values: dict | None) -> Any:
    """Build ``cls.Config`` from ``values``; unknown keys raise :class:`ConfigError`."""
    values = dict(values or {})
    if not dataclasses.is_dataclass(cls.Config):
        if values:
            raise ConfigError(f"method {cls.name!r} takes no method_config; got keys {sorted(values)}.")
        return None
    names = {f.name for f in dataclasses.fields(cls.Config)}
    bad = sorted(set(values) - names)
    if bad:
        raise ConfigError(
            f"unknown method_config key(s) {bad} for method {cls.name!r}; expected some of {sorted(names)}."
        )
    return cls.Config(**values)


def condense_preset(method: str, preset: str = "quick", dataset: Any = "digits", **overrides) -> CondenseConfig:
    """Resolve a method's preset for a dataset into a :class:`CondenseConfig` — the one resolver,
    :func:`edgecond.condense.presets.resolve` (see there: ``method="mdc"``/``base=``, facts, MDC's
    Δt from the resolved iteration count)."""
    from .presets import resolve

    return resolve(method, preset, dataset, **overrides)


def _validate(config: CondenseConfig, dataset, cls: type[Method]) -> None:
    c, h, w = dataset.image_shape
    if not isinstance(config.ipc, int) or isinstance(config.ipc, bool) or config.ipc < 1:
        raise ConfigError(f"ipc={config.ipc!r}; expected an integer >= 1 (stored images per class).")
    if not isinstance(config.factor, int) or config.factor < 1 or h % config.factor or w % config.factor:
        raise ConfigError(
            f"factor={config.factor!r} does not divide the {h}x{w} images of {dataset.name!r}; "
            "expected a positive integer dividing both sides (1 or 2 usually)."
        )
    if config.iterations < 0:
        raise ConfigError(f"iterations={config.iterations}; expected an integer >= 0.")
    if config.dtype not in DTYPES:
        raise ConfigError(f"dtype={config.dtype!r}; expected one of {', '.join(DTYPES)}.")
    if config.lr_img_space not in LR_IMG_SPACES:
        raise ConfigError(
            f"lr_img_space={config.lr_img_space!r}; expected one of {', '.join(LR_IMG_SPACES)} "
            "(the value space the image learning rate applies in)."
        )
    if config.init not in ("real", "noise"):
        raise ConfigError(f"init={config.init!r}; expected 'real' or 'noise'.")
    if config.batch_real < 1:
        raise ConfigError(f"batch_real={config.batch_real}; expected an integer >= 1.")
    if config.independent_ranks and (cls.kind != "matcher" or not cls.supports_independent_ranks):
        raise ConfigError(
            f"independent_ranks=True is not supported by method {cls.name!r}; expected a matcher that "
            "computes per-rank losses (idc, idm, dm), or independent_ranks=False."
        )
    if config.independent_ranks and config.hooks != "none":
        raise ConfigError(
            f"independent_ranks=True with hooks={config.hooks!r}: independent ranks have no prefixes to "
            "weight; use hooks='none' (Baseline B), or independent_ranks=False for MDC."
        )
    if cls.kind == "selector" and config.factor != 1:
        raise ConfigError(
            f"method {cls.name!r} selects real images and stores them at factor 1, but factor="
            f"{config.factor} was given; pass factor 1 (--factor 1)."
        )




def image_grad_scale(config: CondenseConfig, syn: SyntheticSet) -> torch.Tensor | None:
    """The per-channel factor the engine multiplies the normalised images' gradient by, so that
    SGD on the normalised parameter takes exactly the step of SGD on pixel values.

    With ``x = std·z + mean``, ``dL/dx = (dL/dz)/std`` and a pixel step ``Δx`` is ``Δz = Δx/std``:
    a pixel-space SGD (with momentum, which is linear) is SGD on ``z`` with the gradient scaled
    by ``1/std²``. ``None`` for ``lr_img_space="normalized"``."""
    if config.lr_img_space != "pixel":
        return None
    return 1.0 / (syn.std * syn.std)


# ------------------------------------------------------------------------------------------
# hooks
# ------------------------------------------------------------------------------------------


def build_hooks(config: CondenseConfig, num_classes: int) -> EngineHooks:
    """The hooks named by ``config.hooks``: ``none`` (plain) or ``mdc`` (from
    :mod:`edgecond.condense.multisize`, configured by ``config.hooks_config``)."""
    name = (config.hooks or "none").strip().lower()
    if config.independent_ranks:  # an engine request: each stored rank matched alone (Baseline B)
        from .independent import IndependentRanks

        return IndependentRanks()
    try:
        from .multisize import build_hooks as _build
    except ImportError:  # pragma: no cover - the multisize module ships with edgecond
        if name != "none":
            raise ConfigError(f"hooks {config.hooks!r} need edgecond.condense.multisize, which failed to import.")
        return EngineHooks()
    return _build(name, dict(config.hooks_config), ipc=config.ipc, num_classes=num_classes)


# ------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------

_RESUME_FREE_KEYS = ("iterations",)


def _config_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    # a key a checkpoint predates (e.g. lr_img_space) counts as its default
    dflt = {f.name: f.default for f in dataclasses.fields(CondenseConfig)
            if f.default is not dataclasses.MISSING}
    return [k for k in keys if k not in _RESUME_FREE_KEYS and a.get(k, dflt.get(k)) != b.get(k, dflt.get(k))]


def _jsonable(cfg: CondenseConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))


def _make_buffer(images: torch.Tensor, dataset, config: CondenseConfig, extra: dict):
    from ..buffer import MultisizeBuffer
    from ..data import provenance

    extra = dict(extra)
    if hasattr(dataset, "digest"):  # where the data came from: reopenable name, digest, facts
        extra["data"] = provenance(dataset)
    from ..evaluate import eval_preset
    from ..recipe import recipe_from_eval

    # the training recipe (essential metadata): the protocol the buffer is evaluated with
    recipe = recipe_from_eval(eval_preset("quick", dataset), flips=bool(getattr(dataset, "flips", False)))

    return MultisizeBuffer.from_class_major(
        images.detach().cpu().float().numpy(),
        class_names=list(dataset.class_names),
        dataset=dataset.name,
        mean=list(dataset.mean),
        std=list(dataset.std),
        factor=config.factor,
        method=config.method,
        config=_jsonable(config),
        dtype=config.dtype,
        extra=extra,
        recipe=recipe,
    )




@dataclass
class _Run:
    """The state of one matcher condensation, built by :func:`_init_run` (one named place per part)."""

    dataset: Any
    config: CondenseConfig
    mcfg: Any
    dev: torch.device
    real: RealData
    gen: torch.Generator  #: the main stream (CPU): model seeds, network training, between groups
    streams: Any  #: distributed.ClassStreams: per-(t, i) class and group streams
    syn: SyntheticSet
    matcher: Matcher
    hooks: EngineHooks
    opt: torch.optim.Optimizer
    shard: Any  #: distributed.Shard
    make_syn: Any
    ckpt_path: Path | None
    history: dict[str, list] = field(default_factory=lambda: {"iteration": [], "loss": [], "seconds": []})

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def sync_tensors(self) -> list[torch.Tensor]:
        """Every per-class tensor a worker updates: the synthetic parameters and their optimiser state."""
        out = []
        for p in self.syn.parameters():
            out.append(p)
            out += [v for v in self.opt.state.get(p, {}).values()
                    if isinstance(v, torch.Tensor) and v.shape == p.shape and v.dim() > 0]
        return out


def _select(cls, mcfg, dataset, config: CondenseConfig, dev, progress: bool, t_start: float) -> CondenseResult:
    """A selector (random, herding): pick real images, no optimisation."""
    selector = cls(dataset, config, mcfg, device=dev)
    images = selector.select(dataset, config.ipc, seed=config.seed, device=dev, progress=progress)
    images = images.detach().cpu().float()
    seconds = time.perf_counter() - t_start
    buf = _make_buffer(images, dataset, config, {"history": {"iterations": 0, "seconds": seconds}})
    return CondenseResult(buf, {}, seconds, float("nan"), images, config)


def _initial_pixels(dataset, config: CondenseConfig, init_images, cls=None, mcfg=None, dev=None) -> torch.Tensor:
    """``[K, N, C, H, W]`` pixel-space stored images to start from (given, the method's own real
    selection (``select_initial``, EDC), or drawn)."""
    k = dataset.num_classes
    c, h, w = dataset.image_shape
    if init_images is None:
        seed0 = config.seed if config.init_seed is None else config.init_seed
        select = getattr(cls, "select_initial", None) if config.init == "real" else None  # a method's own (EDC)
        if select is not None:
            return select(dataset, config, mcfg, seed=seed0, device=dev).cpu()
        return initial_images(dataset, config.ipc, config.factor, seed=seed0,
                              offset=config.init_offset, init=config.init)
    init_images = torch.as_tensor(init_images).float()
    if tuple(init_images.shape) != (k, config.ipc, c, h, w):
        raise ConfigError(
            f"init_images has shape {tuple(init_images.shape)}; expected [K, N, C, H, W] = "
            f"{(k, config.ipc, c, h, w)} (pixel space, stored images)."
        )
    return init_images.clamp(0, 1)


def _init_run(cls, mcfg, dataset, config: CondenseConfig, dev, *, hooks, init_images, workers,
              checkpoint) -> _Run:
    """Initial images, real data, the matcher, the hooks, the image optimiser and the worker's shard."""
    from .distributed import ClassStreams, Shard

    k = dataset.num_classes
    pixels = _initial_pixels(dataset, config, init_images, cls, mcfg, dev)
    real = RealData(dataset, dev)
    gen = make_generator(int(config.seed) + 1_000_003)  # CPU: indices, aug draws, model seeds
    make_syn = cls.synthetic_set  # a method's own parameterisation (sdc), declared in base.Method
    syn = (make_syn(pixels.to(dev), config, mcfg, dataset) if make_syn is not None else
           SyntheticSet(dataset.normalize(pixels).to(dev), factor=config.factor, mean=dataset.mean, std=dataset.std))
    shard = Shard(workers, k, split=bool(cls.shard_classes))
    real.shard = shard
    matcher: Matcher = cls(real, config, mcfg, device=dev, generator=gen)
    if hooks is None:
        hooks = build_hooks(config, k)
    if make_syn is not None:  # sdc: Adam over all factors (U, Σ, V have different scales)
        opt = torch.optim.Adam(list(syn.parameters()), lr=float(getattr(mcfg, "lr", config.lr_img)))
    elif hasattr(cls, "image_optimizer"):  # a method's own image optimiser (EDC: Adam)
        opt = cls.image_optimizer([syn.images], config, mcfg)
    else:
        opt = torch.optim.SGD([syn.images], lr=config.lr_img, momentum=config.momentum_img)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    return _Run(dataset, config, mcfg, dev, real, gen, ClassStreams(int(config.seed) + 2_000_003), syn, matcher,
                hooks, opt, shard, make_syn, ckpt_path)


def _resume(run: _Run, resume: bool) -> int:
    """Load the checkpoint when resuming (the config must match, except ``iterations``); returns
    the first outer iteration to run. Every worker reads the whole state (any number of workers)."""
    ckpt_path, config, syn = run.ckpt_path, run.config, run.syn
    if resume and ckpt_path is None:
        raise ConfigError("resume=True needs a checkpoint path (--checkpoint PATH).")
    if not resume or not ckpt_path.exists():
        return 0
    state = load_checkpoint(ckpt_path)
    ck_config = state.get("config") if isinstance(state, dict) else None
    diff = _config_diff(ck_config, _jsonable(config)) if isinstance(ck_config, dict) else []
    if diff:
        detail = "; ".join(f"{key}: checkpoint={state['config'].get(key)!r}, given={_jsonable(config).get(key)!r}"
                           for key in diff)
        raise CondenseError(
            f"checkpoint {str(ckpt_path)!r} was written with a different config ({detail}). "
            "Resume with the same settings, or start from scratch without --resume (or another --checkpoint)."
        )
    start = check_resume_state(state, ckpt_path, iterations=config.iterations,
                               images_shape=tuple(syn.images.shape), images_dtype=syn.images.dtype,
                               param_shapes=[tuple(p.shape) for p in syn.parameters()])
    load_resume_state(state, ckpt_path, syn, run.opt, run.matcher, run.hooks, run.gen, run.dev)
    run.history = {key: list(v) for key, v in state["history"].items()}
    log.info("resumed from %s at iteration %d", ckpt_path, start)
    return start


def _save(run: _Run, next_iteration: int) -> None:
    """Checkpoint (rank 0, after the workers synchronised): images, optimiser, matcher, hooks, RNG, history."""
    if run.ckpt_path is None or not run.shard.workers.is_writer:
        return
    syn = run.syn
    extra_state = {"syn_extra": syn.extra_state()} if hasattr(syn, "extra_state") else {}
    save_checkpoint(run.ckpt_path, {
        **extra_state,
        "config": _jsonable(run.config),
        "iteration": next_iteration,
        "images": syn.images.detach(),
        "optimizer": run.opt.state_dict(),
        "matcher": run.matcher.state_dict(),
        "hooks": run.hooks.state_dict(),
        "rng": {"main": run.gen.get_state()},
        "history": run.history,
    })


def _zero_step_grads(run: _Run) -> None:
    """A group this worker owns no class of: its step still moves (by momentum) the classes it
    owns, as in one process, so the update is taken with a zero gradient."""
    for p in run.syn.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


def _update_group(run: _Run, group: Sequence[int], gi: int, grad_scale, stats: dict) -> float:
    """One image update for class group ``group`` (the worker's own classes of it); returns its loss."""
    syn, hooks, opt = run.syn, run.hooks, run.opt
    run.gen.manual_seed(run.streams.group_seed(gi))  # the group's draws: the same on every worker
    mine = run.shard.owned(group)
    opt.zero_grad(set_to_none=True)
    loss_value = 0.0
    if mine:
        outs = hooks.match(run.matcher, syn, mine)
        loss = hooks.combine(outs)
        loss.backward()
        loss_value = float(loss.detach())
        for o in outs:
            for key, v in o.stats.items():
                s = stats.setdefault(key, [0.0, 0.0])
                s[0] += float(v)
                s[1] += 1.0
    else:
        _zero_step_grads(run)
    hooks.mask_grad(syn.images.grad)
    if grad_scale is not None:
        syn.images.grad.mul_(grad_scale)
    opt.step()
    syn.clamp_()
    after_step = getattr(hooks, "after_step", None)  # optional extension (MDC): restore frozen ranks
    if after_step is not None:
        after_step(syn)
    return loss_value


def _outer_iteration(run: _Run, t: int, grad_scale) -> tuple[float, dict[str, float]]:
    """Outer iteration ``t``: the matcher's inner steps over every class group; returns the mean
    loss per image update and the mean of every statistic the matcher reports (over all workers)."""
    matcher, hooks, k = run.matcher, run.hooks, run.num_classes
    matcher.begin_outer(t)
    hooks.begin_outer(t)
    loss_sum, n_loss = 0.0, 0
    stats: dict[str, list[float]] = {}
    run.real.class_stream = run.streams
    try:
        for i in range(matcher.inner_steps):
            run.streams.start(t, i)
            main = run.gen.get_state()
            for gi, group in enumerate(matcher.class_groups(k)):
                loss_sum += _update_group(run, group, gi, grad_scale, stats)
                n_loss += 1
            run.gen.set_state(main)
            matcher.between_inner(i)
    finally:
        run.real.class_stream = None
    keys = sorted(stats)
    packed = torch.tensor([loss_sum, *(v for key in keys for v in stats[key])], dtype=torch.float64)
    run.shard.sum_(packed, "the loss reduction")
    reduce_hooks = getattr(hooks, "all_reduce", None)  # optional extension (MDC): per-class distances
    if reduce_hooks is not None and run.shard.split:
        reduce_hooks(lambda x: run.shard.sum_(x, "the MDC feature distances"))
    hooks.end_outer(t)
    means = {key: float(packed[1 + 2 * j] / max(float(packed[2 + 2 * j]), 1.0)) for j, key in enumerate(keys)}
    return float(packed[0]) / max(n_loss, 1), means


def _outer_loop(run: _Run, start: int, *, checkpoint_every: int, log_path, tensorboard_dir, progress: bool,
                on_iteration) -> list[float]:
    """Outer iterations ``start..iterations-1``: update, log (rank 0), synchronise and checkpoint."""
    from ..progress import progress_bar

    config, history, writer = run.config, run.history, run.shard.workers.is_writer
    logger = _Logger(log_path if writer else None, tensorboard_dir if writer else None, start, images=run.syn,
                     total=config.iterations)
    bar = progress_bar(total=config.iterations, initial=min(start, config.iterations),
                       disable=not progress or not writer, desc=f"condense {config.method}", unit="it")
    grad_scale = image_grad_scale(config, run.syn)
    run_seconds: list[float] = []
    try:
        for t in range(start, config.iterations):
            t0 = time.perf_counter()
            run.shard.iteration = t
            mean_loss, stats = _outer_iteration(run, t, grad_scale)
            save_due = (t + 1) % checkpoint_every == 0 or t + 1 == config.iterations
            if save_due or (tensorboard_dir is not None and logger.image_due(t)):
                run.shard.sync(run.sync_tensors())
            dt = time.perf_counter() - t0
            run_seconds.append(dt)
            record = {"iteration": t, "loss": mean_loss, "seconds": dt, **stats}
            for key, v in record.items():
                history.setdefault(key, []).append(v)
            if run.shard.workers.distributed:  # the log only: a resumed run may have another world size
                record["comm_seconds"] = run.shard.comm_seconds
            logger.write(record)
            if on_iteration is not None:  # e.g. the server's start-up job logs progress
                on_iteration(dict(record, total=config.iterations))
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4g}")
            if not math.isfinite(mean_loss):
                raise CondenseError(
                    f"the matching loss became {mean_loss} at iteration {t} of {config.method}; "
                    f"lower lr_img (now {config.lr_img}) or check the data."
                )
            if save_due:
                _save(run, t + 1)
        if run.ckpt_path is not None and start >= config.iterations and not run.ckpt_path.exists():
            _save(run, start)
    finally:
        bar.close()
        logger.close()
    return run_seconds


def _finish(run: _Run, run_seconds: list[float], t_start: float) -> CondenseResult:
    """After the last iteration: the matcher's own finish (SDC's LBS), the summary and the buffer."""
    config, syn = run.config, run.syn
    run.shard.sync(run.sync_tensors())  # a run resumed at its end still hands every rank whole images
    run.real.shard = None  # from here every worker holds every class (SDC's LBS runs replicated)
    finish = getattr(run.matcher, "finish", None)  # optional: work after the last iteration (SDC's LBS)
    if finish is not None:
        finish(syn)
    images = syn.pixel_images().detach().cpu().float()
    seconds = time.perf_counter() - t_start
    spi = sum(run_seconds) / len(run_seconds) if run_seconds else float("nan")
    losses = run.history.get("loss", [])
    summary = {
        "iterations": config.iterations,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "seconds": round(seconds, 3),
        "seconds_per_iteration": None if math.isnan(spi) else round(spi, 5),
        "device": str(run.dev),
    }
    if run.shard.workers.distributed:
        summary["workers"] = run.shard.workers.world_size
    extra = dict(run.hooks.metadata() or {})
    extra["history"] = summary
    if run.make_syn is not None:
        from .sdc import sdc_buffer

        buf = sdc_buffer(syn, run.dataset, config, extra)
    else:
        buf = _make_buffer(images, run.dataset, config, extra)
    finalize = getattr(run.matcher, "finalize_buffer", None)  # optional: e.g. EDC's soft labels
    if finalize is not None:
        buf = finalize(buf, run.dataset)
    return CondenseResult(buf, run.history, seconds, spi, images, config)


def condense(
    dataset,
    config: CondenseConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    log_path: str | Path | None = None,
    progress: bool = True,
    hooks: EngineHooks | None = None,
    init_images: torch.Tensor | None = None,
    tensorboard_dir: str | Path | None = None,
    on_iteration: Any = None,
    workers: Any = None,
) -> CondenseResult:
    """Condense ``dataset`` with ``config`` into a :class:`CondenseResult` (buffer + history).

    ``checkpoint``: path of the checkpoint file, written atomically every ``checkpoint_every``
    outer iterations and at the end. ``resume=True`` continues from it when it exists (the
    config must match, except ``iterations`` which may grow). ``hooks``: an
    :class:`~edgecond.condense.base.EngineHooks` instance (default: built from
    ``config.hooks``). ``init_images``: ``[K, N, C, H, W]`` pixel-space stored images to start
    from instead of real images drawn from ``config.init_seed``/``init_offset``.
    ``on_iteration``: called after every outer iteration with its log record (``iteration``,
    ``loss``, ``seconds``, ``total``, ...), e.g. to report progress in a server log.
    ``workers``: a :class:`~edgecond.condense.distributed.Workers` (default: the initialised
    ``torch.distributed`` process group, else one process): classes are sharded across the
    workers, rank 0 writes the log and the checkpoints, and every rank returns the same result
    (:mod:`edgecond.condense.distributed`).

    The steps: select (selectors) | init → resume → outer loop → finish.
    """
    from .distributed import current_workers

    _ensure_methods()
    cls = METHODS.get(config.method)
    _validate(config, dataset, cls)
    mcfg = method_config(cls, config.method_config)
    dev = resolve_device(device)
    t_start = time.perf_counter()
    if cls.kind == "selector":
        return _select(cls, mcfg, dataset, config, dev, progress, t_start)
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every={checkpoint_every}; expected an integer >= 1.")
    run = _init_run(cls, mcfg, dataset, config, dev, hooks=hooks, init_images=init_images,
                    workers=workers if workers is not None else current_workers(), checkpoint=checkpoint)
    start = _resume(run, resume)
    if hasattr(run.hooks, "bind"):  # optional extension (MDC): the hooks see the synthetic set
        run.hooks.bind(run.syn)
    run_seconds = _outer_loop(run, start, checkpoint_every=checkpoint_every, log_path=log_path,
                              tensorboard_dir=tensorboard_dir, progress=progress, on_iteration=on_iteration)
    return _finish(run, run_seconds, t_start)
