"""Writing: class-major arrays -> the metadata, tensor specs and per-rank parts of a new buffer.

:func:`_class_major_parts` is the checked body of :meth:`MultisizeBuffer.from_class_major`; the
helpers below it turn user input (labels, mean/std, accuracy tables, SDC coefficients, recipes)
into the header's canonical spellings or refuse it with a :class:`~edgecond.errors.ConfigError`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BufferFormatError, ConfigError
from ..formation import check_factor
from .header import _check_factor_cap, _check_image_caps
from .meta import TensorSpec, _data_order
from .spec import _NP_TO_ST, _SOFT_KINDS, FORMAT, MAX_LABEL, MAX_SDC_COEFFICIENTS, SDC_FORMATION
from .text import _canonical, _csv, _jsonable, _names_text, _short_float
from .values import _storage_name, encode_images


def _class_major_parts(
    images: Any,
    *,
    labels: Sequence[int] | None,
    class_names: Sequence[str],
    dataset: str,
    mean: Sequence[float],
    std: Sequence[float],
    factor: int,
    method: str,
    config: Mapping[str, Any] | None,
    dtype: str,
    soft_labels: Any,
    soft_label_kind: str,
    soft_label_dtype: str = "float32",
    extra: Mapping[str, Any] | None,
    accuracy: Any,
    recipe: Any,
    coefficients: Any,
    coefficient_dtype: str,
) -> tuple[dict[str, str], tuple[TensorSpec, ...], list[list[Any]], int]:
    """Check the arguments of ``from_class_major``; returns ``(metadata, data order, per-rank parts, N)``."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 5 or 0 in images.shape:
        raise ConfigError(f"images must have shape [K, N, C, H, W] with no empty axis, got {images.shape}.")
    k, n, c, h, w = (int(s) for s in images.shape)
    factor = check_factor(factor, h, w)
    _check_writable_sizes(k, c, h, w, factor)
    name = _storage_name(dtype)
    md = _essential_metadata(k, c, labels=labels, class_names=class_names, dataset=dataset, method=method,
                             mean=mean, std=std, factor=factor, recipe=recipe)
    stored = np.ascontiguousarray(encode_images(images, name).transpose(1, 0, 2, 3, 4))
    arrays = {"images": stored}
    specs = [TensorSpec("images", _NP_TO_ST[name], (k, c, h, w))]
    md["method"] = method  # provenance
    cfg = _jsonable(dict(config or {}), "config")
    if cfg:
        md["config"] = _canonical(cfg)
    if extra:
        md["extra"] = _canonical(_jsonable(dict(extra), "extra"))
    if soft_labels is not None:
        arrays["soft_labels"], spec = _soft_labels_array(soft_labels, k, n, factor, soft_label_kind,
                                                          soft_label_dtype)
        specs.append(spec)
        md["soft"] = _canonical({"kind": soft_label_kind})
    if accuracy is not None:
        md["accuracy"] = _canonical(_normalize_accuracy(accuracy))
    if coefficients is not None:
        if soft_labels is not None:
            raise ConfigError("a slimmable (SDC) buffer stores no soft labels; pass soft_labels=None.")
        arrays["coefficients"], spec = _sdc_coefficients_array(coefficients, k, n, coefficient_dtype)
        specs.append(spec)
        md["formation"] = SDC_FORMATION
    order = _data_order(specs)
    return md, order, [[arrays[t.name][r] for t in order] for r in range(n)], n


def _essential_metadata(k: int, c: int, *, labels: Sequence[int] | None, class_names: Sequence[str], dataset: str,
                        method: str, mean: Sequence[float], std: Sequence[float], factor: int,
                        recipe: Any) -> dict[str, str]:
    """Spec §3 essentials, checked; defaults (labels 0..K-1, factor 1, pixel space) are omitted."""
    labels_t = tuple(range(k)) if labels is None else tuple(_int_label(v) for v in labels)
    if len(labels_t) != k or len(set(labels_t)) != k:
        raise ConfigError(f"labels must give {k} distinct non-negative class ids (one per slot), got {labels!r}.")
    names = tuple(str(s) for s in class_names)
    if len(names) != k or len(set(names)) != k or not all(names):
        raise ConfigError(
            f"class_names must give {k} distinct non-empty names (one per class slot), got {len(names)}: {names!r:.120}."
        )
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"dataset must be a non-empty name, got {dataset!r}.")
    if not isinstance(method, str) or not method:
        raise ConfigError(f"method must be a non-empty name, got {method!r}.")
    mean_t = _stats(mean, c, "mean")
    std_t = _stats(std, c, "std")
    if not all(v > 0 for v in std_t):
        raise ConfigError(f"std must be positive per channel, got {std_t}.")
    md: dict[str, str] = {
        "format": FORMAT,
        "dataset": dataset,
        "classes": _names_text(names),
        "mean": _csv(_short_float(v) for v in mean_t),
        "std": _csv(_short_float(v) for v in std_t),
    }
    if labels_t != tuple(range(k)):
        md["labels"] = _csv(labels_t)
    if factor != 1:
        md["factor"] = str(factor)
    if recipe is not None:
        md["recipe"] = _recipe_text(recipe)
    return md


def _soft_labels_array(soft_labels: Any, k: int, n: int, factor: int, kind: str,
                       dtype: str = "float32") -> tuple[np.ndarray, TensorSpec]:
    """Class-major soft labels ``[K, N, factor², L]`` (or ``[K, N, L]``) -> rank-major ``dtype`` (float32 |
    float16) and its spec."""
    if hasattr(soft_labels, "detach"):
        soft_labels = soft_labels.detach().cpu().numpy()
    s = np.asarray(soft_labels, dtype=np.float32)
    if s.ndim == 3 and factor == 1:
        s = s[:, :, None, :]
    if s.ndim != 4 or s.shape[:3] != (k, n, factor * factor) or s.shape[3] < 1:
        raise ConfigError(
            f"soft_labels must have shape [K={k}, N={n}, factor²={factor * factor}, L], got {np.shape(soft_labels)}."
        )
    if not np.isfinite(s).all():
        raise ConfigError("soft_labels contain NaN or infinite values.")
    if kind not in _SOFT_KINDS:
        raise ConfigError(f"soft_label_kind must be one of {list(_SOFT_KINDS)}, got {kind!r}.")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"soft_label_dtype must be 'float16' or 'float32', got {dtype!r}.")
    half = dtype == "float16"
    if half and not np.isfinite(s.astype("<f2")).all():
        raise ConfigError("soft_labels overflow float16; pass soft_label_dtype='float32'.")
    arr = np.ascontiguousarray(s.transpose(1, 0, 2, 3)).astype("<f2" if half else "<f4")
    return arr, TensorSpec("soft_labels", "F16" if half else "F32", tuple(int(v) for v in s.shape[:1] + s.shape[2:]))


def _recipe_text(recipe: Any) -> str:
    """The canonical spelling of a recipe (spec §3 ``recipe``)."""
    from ..recipe import Recipe

    if not isinstance(recipe, Recipe):
        raise ConfigError(f"recipe is a {type(recipe).__name__}; expected an edgecond.recipe.Recipe "
                          "(e.g. edgecond.recipe.recipe_from_eval(eval_config, flips=...)).")
    return _canonical(recipe.to_json())



def _as_bytes_view(p: Any) -> memoryview:
    if isinstance(p, np.ndarray):
        return memoryview(np.ascontiguousarray(p)).cast("B")
    return memoryview(p).cast("B") if not isinstance(p, memoryview) or p.format != "B" else p


def _check_writable_sizes(k: int, c: int, h: int, w: int, factor: int) -> None:
    """The writer refuses what the reader's caps (spec §3) would refuse."""
    try:
        _check_image_caps("images", k, c, h, w)
        _check_factor_cap("factor", factor)
    except BufferFormatError as exc:
        raise ConfigError(f"cannot write this buffer: {exc}") from None


def _int_label(v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < MAX_LABEL:
        raise ConfigError(f"labels must be integers in [0, 2**31), got {v!r}.")
    return int(v)


def _stats(vals: Any, c: int, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in np.asarray(vals, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be {c} numbers (one per channel), got {vals!r}.") from None
    if len(out) != c or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{what} must be {c} finite numbers (one per channel), got {vals!r}.")
    return out


def _normalize_accuracy(table: Any) -> dict[str, dict]:
    """``{str(n): {"mean": m, ...}}`` from a mapping or an iterable of SizeResult-like objects."""
    items: list[tuple[Any, Any]]
    if isinstance(table, Mapping):
        items = list(table.items())
    else:
        try:
            items = [(getattr(r, "size"), r) for r in table]
        except (TypeError, AttributeError):
            raise ConfigError(
                "accuracy table must be {n: accuracy} or an iterable of results with .size/.mean/.std, "
                f"got {type(table).__name__}."
            ) from None
    out: dict[str, dict] = {}
    for n, v in items:
        if (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer, str))
                or not (str(n).isascii() and str(n).isdigit()) or int(n) < 1):
            raise ConfigError(f"accuracy sizes must be positive integers, got {n!r}.")
        if isinstance(v, Mapping):
            entry = _jsonable(dict(v), "accuracy")
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            entry = {"mean": float(v)}
        elif hasattr(v, "mean"):
            entry = {"mean": float(v.mean)}
            if getattr(v, "std", None) is not None:
                entry["std"] = float(v.std)
            if getattr(v, "accuracies", None) is not None:
                entry["accuracies"] = [float(a) for a in v.accuracies]
        else:
            raise ConfigError(f"accuracy for size {n} must be a number in [0, 1] or have .mean, got {v!r}.")
        m = entry.get("mean")
        if not isinstance(m, (int, float)) or isinstance(m, bool) or not (0.0 <= m <= 1.0):
            raise ConfigError(f"accuracy for size {n} must have mean in [0, 1], got {m!r}.")
        out[str(int(n))] = entry
    return out


def _sdc_coefficients_array(coefficients: Any, k: int, n: int, dtype: str) -> tuple[np.ndarray, TensorSpec]:
    """Class-major ``[K, N, M]`` SDC coefficients -> rank-major stored array and its spec."""
    if hasattr(coefficients, "detach"):
        coefficients = coefficients.detach().cpu().numpy()
    a = np.asarray(coefficients, dtype=np.float64)
    if a.ndim != 3 or a.shape[:2] != (k, n) or not n <= a.shape[2] <= MAX_SDC_COEFFICIENTS:
        raise ConfigError(f"coefficients must have shape [K={k}, N={n}, M] with {n} <= M <= "
                          f"{MAX_SDC_COEFFICIENTS}, got {np.shape(coefficients)}.")
    name = _storage_name(dtype)
    if name not in ("float16", "float32"):
        raise ConfigError(f"coefficient_dtype must be float16 or float32, got {dtype!r}.")
    if not np.isfinite(a).all() or (name == "float16" and np.abs(a).max() > 65504):
        raise ConfigError(f"coefficients must be finite (and within float16 range for {name}).")
    out = np.ascontiguousarray(a.transpose(1, 0, 2)).astype("<f2" if name == "float16" else "<f4")
    return out, TensorSpec("coefficients", _NP_TO_ST[name], (k, int(a.shape[2])))
