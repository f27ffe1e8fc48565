"""The one resolver: (method, preset, dataset facts, hooks, overrides) → :class:`CondenseConfig`.

Every entry point — ``edgecond condense`` (both MDC spellings), the demo, the Flower server's
start-up job, the Avalanche condenser and every benchmark — calls :func:`resolve` (exported as
``edgecond.condense.condense_preset``), so one request always gives one config:

* ``method="mdc", base=X`` and ``method=X, hooks="mdc"`` resolve to the same config: the matcher
  ``X`` with the multisize hooks. MDC's own settings are resolved *after* the iteration count is
  known (overrides included), so Δt always gives about six Most-Learnable-Subset selections per
  run (at most the paper's 100) — a short run can never silently skip MDC.
* Method presets are functions of a :class:`PresetContext`: the data's facts (shape, classes,
  images per class, flips; :mod:`edgecond.facts`), the stored images per class, and — only for
  the published settings of the ``paper`` presets — the exact registry name of a paper dataset
  (``cifar10``, ``cifar100``, ``svhn``, ``mnist``, ``fashion-mnist``). ``quick`` never looks at a
  name: an 8×8 ``npz:`` set gets what 8×8 digits gets.

The dataset may be given as an :class:`~edgecond.data.ImageDataset` (its facts are read), a
:class:`~edgecond.facts.DataFacts`, or a registry name (known datasets' facts are read from the
registry without loading them; ``npz:``/``imagefolder:`` data is loaded to read its facts).
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from ..facts import DataFacts, paper_key

__all__ = ["PresetContext", "resolve", "dataset_facts", "mdc_settings", "default_mdc_base", "MULTISIZE_ALIASES"]

#: method names that mean "the multisize wrapper over a base matcher"
MULTISIZE_ALIASES = ("mdc",)


def default_mdc_base(facts: DataFacts, preset: str) -> str:
    """The base matcher of ``method="mdc"`` when none is given: IDC (the paper's base) for
    ``paper`` runs and for images of side <= 8, where the quick IDC settings were validated
    (digits); DM above, the base whose ``quick`` settings were validated on 16×16, 28×28 and
    32×32 data within the CPU-minutes budget (docs/condensation.md, *Quick presets on other
    data*: a quick IDC run there gets 12 outer iterations, too few to move its images)."""
    if str(preset).strip().lower() == "paper" or facts.side <= 8:
        return "idc"
    return "dm"


@dataclass(frozen=True)
class PresetContext:
    """What a method's preset function may read.

    ``paper`` is the exact paper-dataset key (see :data:`edgecond.facts.PAPER_DATASETS`) or
    ``None``; only ``paper`` presets may use it, to reproduce a published table.
    """

    facts: DataFacts
    ipc: int
    paper: str | None = None
    #: the base matcher of a wrapper method whose Config has a ``base`` field (e.g. ``sdc``)
    base: str | None = None


def dataset_facts(dataset: Any) -> tuple[DataFacts, str]:
    """``(facts, name)`` of an ImageDataset, a DataFacts or a dataset name."""
    if isinstance(dataset, DataFacts):
        return dataset, ""
    facts = getattr(dataset, "facts", None)
    if isinstance(facts, DataFacts):
        return facts, str(getattr(dataset, "name", ""))
    if isinstance(dataset, str):
        from ..data import registered_facts

        known = registered_facts(dataset)
        if known is not None:
            return known, dataset
        from ..data import load_dataset

        return load_dataset(dataset).facts, dataset
    raise ConfigError(
        f"dataset={dataset!r}; expected an ImageDataset, a DataFacts or a dataset name such as 'digits'."
    )


def mdc_settings(preset: str, *, iterations: int, base: str) -> dict[str, Any]:
    """MDC's settings for a resolved run: Δt gives about six MLS selections
    (``round(iterations / 6)``, at least 1, at most the paper's 100 — so the ``paper`` preset's
    2000-iteration runs get the paper's Δt = 100); λ (``subset_weight``) follows the base.

    λ: the paper's 1 for gradient matching (``idc``). A distribution-matching base (``idm``,
    ``dm``) matches class *means*, so the size-n prefix's loss gives each of its images N/n
    times the per-image gradient of the full set's loss; ``quick`` runs use λ = 0.1 there
    (chosen on a digits validation split, docs/multisize.md); ``paper`` keeps the paper's 1.
    """
    name = str(preset).strip().lower()
    if name not in ("quick", "paper"):
        raise ConfigError(f"unknown MDC preset {preset!r}; expected 'quick' or 'paper'.")
    out: dict[str, Any] = {"delta_t": max(1, min(100, int(round(int(iterations) / 6))))}
    if name == "quick" and str(base).strip().lower() in ("idm", "dm"):
        out["subset_weight"] = 0.1
    return out


def _call(fn, ctx: PresetContext) -> dict:
    out = fn(ctx)
    if not isinstance(out, dict):
        raise ConfigError(f"preset function {getattr(fn, '__name__', fn)!r} returned {type(out).__name__}; expected a dict.")
    return dict(out)


def resolve(method: str, preset: str = "quick", dataset: Any = "digits", *, base: str | None = None,
            **overrides: Any):
    """Resolve ``method``'s ``preset`` for ``dataset`` into a :class:`CondenseConfig`.

    ``overrides`` may name any ``CondenseConfig`` field (``ipc``, ``iterations``, ``seed``,
    ``hooks``, ``hooks_config`` ...) or any field of the method's ``Config``; ``method_config=``
    updates several method fields at once. ``method="mdc"`` (with ``base``, default
    :func:`default_mdc_base`) is the same request as ``method=base, hooks="mdc"``. ``ipc``
    defaults to 10.
    """
    from .engine import METHODS, CondenseConfig, _ensure_methods, method_config

    _ensure_methods()
    overrides = dict(overrides)
    overrides.pop("method", None)
    facts, dataset_name = dataset_facts(dataset)
    name = str(method).strip().lower()
    if name in MULTISIZE_ALIASES:
        if str(overrides.get("hooks", "mdc") or "mdc").strip().lower() != "mdc":
            raise ConfigError(f"method 'mdc' with hooks={overrides['hooks']!r}; 'mdc' is the multisize hooks. "
                              "Drop hooks, or name the base matcher as the method.")
        method = base or default_mdc_base(facts, preset)
        overrides["hooks"] = "mdc"
        if str(method).strip().lower() in MULTISIZE_ALIASES:
            raise ConfigError("base='mdc': expected a matcher (idc, idm, dm) as the base of MDC.")
    cls = METHODS.get(method)
    takes_base = dataclasses.is_dataclass(cls.Config) and "base" in {f.name for f in dataclasses.fields(cls.Config)}
    if base is None and takes_base:
        base = (overrides.get("method_config") or {}).get("base") or overrides.get("base")
    overrides.pop("base", None)
    if base is not None and name not in MULTISIZE_ALIASES and not takes_base:
        raise ConfigError(f"base={base!r} is only used with method 'mdc' or a wrapper with a base matcher "
                          f"(sdc); drop it or use method='mdc'.")
    if preset not in cls.presets:
        raise ConfigError(
            f"unknown preset {preset!r} for method {cls.name!r}; expected one of {sorted(cls.presets)}."
        )
    ipc = overrides.get("ipc", 10)
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError(f"ipc={ipc!r}; expected an integer >= 1 (stored images per class).")
    ctx = PresetContext(facts=facts, ipc=ipc, paper=paper_key(dataset_name),
                        base=str(base).strip().lower() if takes_base and base is not None else None)
    values = _call(cls.presets[preset], ctx)
    mc = dict(values.pop("method_config", {}))
    engine_fields = {f.name for f in dataclasses.fields(CondenseConfig)}
    method_fields = {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(cls.Config) else set()
    kwargs: dict[str, Any] = {"method": cls.name, "ipc": ipc, "preset": preset, "dataset": dataset_name}
    for k, v in values.items():
        (kwargs.__setitem__ if k in engine_fields else mc.__setitem__)(k, v)
    user_hooks_config = None
    for k, v in overrides.items():
        if k == "method_config":
            mc.update(v or {})
        elif k == "hooks_config":
            user_hooks_config = dict(v or {})
        elif k in engine_fields:
            kwargs[k] = v
        elif k in method_fields:
            mc[k] = v
        else:
            raise ConfigError(
                f"unknown setting {k!r} for method {cls.name!r}; expected a CondenseConfig field "
                f"({', '.join(sorted(engine_fields))}) or a method field ({', '.join(sorted(method_fields))})."
            )
    hooks = str(kwargs.get("hooks", "none") or "none").strip().lower()
    kwargs["hooks"] = hooks
    if hooks == "mdc":
        if cls.kind != "matcher":
            raise ConfigError(f"hooks 'mdc' need a matcher (idc, idm, dm); {cls.name!r} is a {cls.kind}.")
        hooks_config = mdc_settings(preset, iterations=int(kwargs.get("iterations", 100)), base=cls.name)
        hooks_config.update(user_hooks_config or {})
        kwargs["hooks_config"] = hooks_config
    elif user_hooks_config is not None:
        kwargs["hooks_config"] = user_hooks_config
    cfg_mc = method_config(cls, mc)
    kwargs["method_config"] = asdict(cfg_mc) if cfg_mc is not None else {}
    return CondenseConfig(**kwargs)
