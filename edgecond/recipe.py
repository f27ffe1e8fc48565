"""The training recipe a buffer carries, and the one function that trains by it (numpy, no torch).

A condensed image is only as good as the way it is trained on: the buffer's measured accuracy
(``edgecond.evaluate``) comes from a fixed protocol — normalised inputs, one DSA operation per
batch, CutMix, SGD with a step schedule. A :class:`Recipe` records that protocol in the buffer's
*essential* metadata (key ``recipe``, ``docs/buffer-format.md`` §3), so every slice — lean ones
included — tells its trainer how to get the number in the accuracy table.

Torch-free on purpose: the Flower ClientApp, the Avalanche policy and the ONNX edge trainer all
call :func:`augment_batch` / :func:`recipe_batches` (numpy in, numpy out), so one augmentation
serves every client and a phone needs nothing but numpy.

The spelling in the file is compact JSON with short keys (version ``v`` 1)::

    {"aug":"color_crop_cutout_scale_rotate","bs":64,"ep":300,"flip":0,"lr":0.01,"mix":0.5,"v":1}

======  ========================================================  ==========
key     meaning                                                   default
======  ========================================================  ==========
``v``   recipe version (this module reads 1)                      required
``aug`` DSA op list joined with ``_`` (``edgecond.augment.OPS``)  required
        or ``none``; ``flip`` only when ``flip`` is 1
``flip``1 when a horizontal flip keeps labels (the data facts)    required
``ep``  epochs of the protocol                                    required
``lr``  base learning rate (SGD)                                  required
``bs``  batch size                                                required
``one`` 1: one op of ``aug`` per batch (DSA evaluation); 0: all   1
``str`` strength: multiplies every DSA magnitude                  1
``mix`` CutMix probability per batch                              0
``mom`` SGD momentum                                              0.9
``wd``  weight decay                                              0.0005
``sch`` ``step`` (×0.1 at 2/3 and 5/6 of the epochs) | ``const`` ``step``
``T``   soft-label temperature (logits → probabilities)           1
======  ========================================================  ==========

Suggested settings for an ``n``-rank prefix (:meth:`Recipe.for_size`): the protocol's epochs and
learning rate, and a batch of ``min(bs, items)`` — the evaluation's own rule (it never steps a
batch larger than the set). Normalisation is the buffer's ``mean``/``std``; augmentation acts on
normalised images, as DSA's magnitudes assume.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import BufferFormatError, ConfigError

__all__ = [
    "RECIPE_VERSION",
    "Recipe",
    "SizeSettings",
    "parse_recipe",
    "recipe_of",
    "recipe_from_eval",
    "real_recipe",
    "augment_batch",
    "cutmix_batch",
    "cutmix_images",
    "targets_of",
    "recipe_batches",
    "with_flips",
]

RECIPE_VERSION = 1
#: DSA op names (kept in step with ``edgecond.augment.OPS``; this module must not import torch)
_OPS = ("color", "brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate")
_COLOR = ("brightness", "saturation", "contrast")
_SCHEDULES = {"step": "step", "const": "constant"}
_KEYS = {"v", "aug", "flip", "ep", "lr", "bs", "one", "str", "mix", "mom", "wd", "sch", "T"}
_REQUIRED = ("v", "aug", "flip", "ep", "lr", "bs")
#: DSA magnitudes at strength 1 (``edgecond.augment.AugmentParams``)
_DSA = dict(brightness=1.0, saturation=2.0, contrast=0.5, crop_pad=0.125, cutout=0.5, flip=0.5,
            scale=1.2, rotate=15.0)


@dataclass(frozen=True)
class SizeSettings:
    """Suggested training settings for one prefix size."""

    epochs: int
    lr: float
    batch_size: int


@dataclass(frozen=True)
class Recipe:
    """How to train on a buffer (see the module docstring for the file spelling)."""

    augment: str = "color_crop_cutout_scale_rotate"
    flips: bool = False
    epochs: int = 300
    lr: float = 0.01
    batch_size: int = 64
    single_op: bool = True
    strength: float = 1.0
    cutmix_prob: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        ops = _ops(self.augment)
        if "flip" in ops and not self.flips:
            ops = tuple(o for o in ops if o != "flip")
        object.__setattr__(self, "augment", "_".join(ops) if ops else "none")
        checks = [
            (int(self.epochs) >= 1, f"epochs={self.epochs}; expected an integer >= 1"),
            (float(self.lr) > 0 and math.isfinite(float(self.lr)), f"lr={self.lr}; expected > 0"),
            (int(self.batch_size) >= 1, f"batch_size={self.batch_size}; expected >= 1"),
            (0 < float(self.strength) < 100, f"strength={self.strength}; expected in (0, 100)"),
            (0.0 <= float(self.cutmix_prob) <= 1.0, f"cutmix_prob={self.cutmix_prob}; expected in [0, 1]"),
            (0.0 <= float(self.momentum) < 1.0, f"momentum={self.momentum}; expected in [0, 1)"),
            (0.0 <= float(self.weight_decay) < 1.0, f"weight_decay={self.weight_decay}; expected in [0, 1)"),
            (self.schedule in ("step", "constant"), f"schedule={self.schedule!r}; expected 'step' or 'constant'"),
            (0 < float(self.temperature) < 1e3, f"temperature={self.temperature}; expected in (0, 1000)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"training recipe: {msg}.")

    @property
    def ops(self) -> tuple[str, ...]:
        return _ops(self.augment)

    def for_size(self, items: int) -> SizeSettings:
        """Suggested epochs / lr / batch for a training set of ``items`` images (an ``n``-rank
        prefix has ``n × K × factor²``): the protocol's, with the batch capped by the set."""
        if int(items) < 1:
            raise ConfigError(f"items={items}; expected the number of training images (>= 1).")
        return SizeSettings(int(self.epochs), float(self.lr), min(int(self.batch_size), int(items)))

    def lr_at(self, epoch: int, epochs: int | None = None) -> float:
        """Learning rate of ``epoch`` (0-based) under the recipe's schedule (``edgecond.evaluate``'s
        step decay: ×0.1 at round(2/3 E), ×0.01 from round(5/6 E))."""
        e = int(self.epochs if epochs is None else epochs)
        if self.schedule == "constant":
            return float(self.lr)
        m1, m2 = int(round(e * 2 / 3)), int(round(e * 5 / 6))
        return float(self.lr) * (0.1 if epoch >= m1 else 1.0) * (0.1 if epoch >= m2 else 1.0)

    # ---- file spelling -------------------------------------------------------------------
    def to_json(self) -> dict:
        """The compact JSON object written under metadata ``recipe`` (defaults omitted)."""
        out: dict[str, Any] = {"v": RECIPE_VERSION, "aug": self.augment, "flip": int(bool(self.flips)),
                               "ep": int(self.epochs), "lr": _num(self.lr), "bs": int(self.batch_size)}
        if not self.single_op:
            out["one"] = 0
        if float(self.strength) != 1.0:
            out["str"] = _num(self.strength)
        if float(self.cutmix_prob) != 0.0:
            out["mix"] = _num(self.cutmix_prob)
        if float(self.momentum) != 0.9:
            out["mom"] = _num(self.momentum)
        if float(self.weight_decay) != 5e-4:
            out["wd"] = _num(self.weight_decay)
        if self.schedule != "step":
            out["sch"] = "const"
        if float(self.temperature) != 1.0:
            out["T"] = _num(self.temperature)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, src: str = "buffer") -> "Recipe":
        """Parse and validate the metadata object; every failure is a :class:`BufferFormatError`."""
        def bad(msg: str) -> BufferFormatError:
            return BufferFormatError(f"{src}: __metadata__['recipe'] {msg} (docs/buffer-format.md §3).")

        if not isinstance(obj, dict):
            raise bad(f"is a {type(obj).__name__}; expected a JSON object")
        unknown = sorted(set(obj) - _KEYS)
        if unknown:
            raise bad(f"has unknown keys {unknown}; expected some of {sorted(_KEYS)}")
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise bad(f"lacks {missing}; expected {list(_REQUIRED)}")
        if obj["v"] != RECIPE_VERSION or isinstance(obj["v"], bool):
            raise bad(f"has version {obj['v']!r:.20}; this edgecond reads version {RECIPE_VERSION}. Upgrade edgecond")

        def num(key, default, *, integer=False):
            v = obj.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{key}={v!r:.30}; expected a finite number")
            if integer and (not isinstance(v, int)):
                raise bad(f"{key}={v!r:.30}; expected an integer")
            return v

        def flag(key, default):
            v = obj.get(key, default)
            if v not in (0, 1) or isinstance(v, bool):
                raise bad(f"{key}={v!r:.30}; expected 0 or 1")
            return bool(v)

        aug = obj["aug"]
        if not isinstance(aug, str):
            raise bad(f"aug={aug!r:.40}; expected an op list such as 'color_crop_cutout'")
        sch = obj.get("sch", "step")
        if sch not in _SCHEDULES:
            raise bad(f"sch={sch!r:.20}; expected one of {sorted(_SCHEDULES)}")
        try:
            ops = _ops(aug)
            flips = flag("flip", 0)
            if "flip" in ops and not flips:
                raise bad("lists the op 'flip' but says flips do not keep labels (flip=0)")
            return cls(augment=aug, flips=flips, epochs=num("ep", 0, integer=True),
                       lr=num("lr", 0), batch_size=num("bs", 0, integer=True), single_op=flag("one", 1),
                       strength=num("str", 1.0), cutmix_prob=num("mix", 0.0), momentum=num("mom", 0.9),
                       weight_decay=num("wd", 5e-4), schedule=_SCHEDULES[sch], temperature=num("T", 1.0))
        except ConfigError as exc:
            raise bad(str(exc).replace("training recipe: ", "").rstrip(".")) from None


def _num(v: float) -> float | int:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 1e15 else float(str(np.float32(f))) if f != 0 else 0


def _ops(strategy: str) -> tuple[str, ...]:
    s = str(strategy or "").strip().lower()
    if s in ("", "none"):
        return ()
    ops = tuple(o for o in s.split("_") if o)
    bad = [o for o in ops if o not in _OPS]
    if bad:
        raise ConfigError(f"training recipe: unknown augmentation op(s) {bad} in {strategy!r}; "
                          f"expected some of {', '.join(_OPS)} joined by '_' (or 'none').")
    return ops


def parse_recipe(text: str, *, src: str = "buffer") -> Recipe:
    """Parse the metadata string (strict JSON) into a :class:`Recipe`."""
    try:
        obj = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError) as exc:
        raise BufferFormatError(f"{src}: __metadata__['recipe'] is not valid JSON ({exc}); expected a "
                                "JSON object (docs/buffer-format.md §3).") from None
    return Recipe.from_json(obj, src=src)


def recipe_from_eval(config: Any, *, flips: bool) -> Recipe:
    """The recipe of an ``edgecond.evaluate.EvalConfig`` (the protocol a buffer's accuracy is
    measured with), with the data's flip policy applied (duck-typed: no torch import here)."""
    return Recipe(augment=str(config.augment), flips=bool(flips), epochs=int(config.epochs),
                  lr=float(config.lr), batch_size=int(config.batch_size), single_op=bool(config.single_op),
                  cutmix_prob=float(config.cutmix_prob), momentum=float(config.momentum),
                  weight_decay=float(config.weight_decay))


def recipe_of(meta: Any, *, flips: bool | None = None) -> Recipe:
    """The recipe of a buffer (``BufferMeta`` or ``MultisizeBuffer``).

    Buffers written before the recipe existed (no ``recipe`` key) get the evaluation protocol's
    defaults: ``edgecond.evaluate``'s ``quick`` settings (DSA single op, CutMix 0.5, SGD 0.01,
    batch 64, 300 epochs), flips from ``flips`` (pass ``edgecond.data.flips_of_buffer(meta)``)
    or else the facts recorded in the buffer's provenance, else no flips."""
    meta = getattr(meta, "meta", meta)
    rec = getattr(meta, "recipe", None)
    if rec is not None:
        return rec
    if flips is None:
        facts = (((getattr(meta, "extra", None) or {}).get("data") or {}).get("facts") or {})
        flips = bool(facts.get("flips", False))
    return Recipe(augment="color_crop_cutout_flip_scale_rotate", flips=bool(flips), cutmix_prob=0.5)


def real_recipe(flips: bool) -> Recipe:
    """Augmentation for a client's own real images: random crop (+ flip where labels allow),
    all ops per batch, no CutMix — the usual light augmentation of real-data training."""
    return Recipe(augment="crop_flip", flips=bool(flips), single_op=False, cutmix_prob=0.0)


# --------------------------------------------------------------------------------------------
# numpy augmentation (DSA family; same magnitudes and semantics as edgecond.augment.DiffAugment)
# --------------------------------------------------------------------------------------------


def _affine(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Bilinear sampling of ``x`` [B, C, H, W] at ``theta`` [B, 2, 3] (torch's affine_grid +
    grid_sample, zero padding, align_corners=False)."""
    b, c, h, w = x.shape
    xs = (2.0 * np.arange(w) + 1.0) / w - 1.0
    ys = (2.0 * np.arange(h) + 1.0) / h - 1.0
    gx, gy = np.meshgrid(xs, ys)  # [H, W]
    src_x = theta[:, 0, 0, None, None] * gx + theta[:, 0, 1, None, None] * gy + theta[:, 0, 2, None, None]
    src_y = theta[:, 1, 0, None, None] * gx + theta[:, 1, 1, None, None] * gy + theta[:, 1, 2, None, None]
    px = ((src_x + 1.0) * w - 1.0) / 2.0  # [B, H, W]
    py = ((src_y + 1.0) * h - 1.0) / 2.0
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    out = np.zeros_like(x)
    bi = np.arange(b)[:, None, None]
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1.0 - np.abs(px - xi)) * (1.0 - np.abs(py - yi))
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = x[bi, :, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]  # [B, H, W, C]
            out += np.moveaxis(vals * (wgt * ok)[..., None], -1, 1).astype(x.dtype)
    return out


def _apply(op: str, x: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    b, _, h, w = x.shape
    col = lambda v: v.reshape(-1, 1, 1, 1).astype(x.dtype)  # noqa: E731
    if op == "brightness":
        return x + col(rng.random(b) - 0.5) * (_DSA["brightness"] * s)
    if op == "saturation":
        m = x.mean(axis=1, keepdims=True)
        return (x - m) * col(rng.random(b) * _DSA["saturation"] * s) + m
    if op == "contrast":
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        return (x - m) * col(rng.random(b) + _DSA["contrast"]) + m
    if op == "crop":
        sh, sw = int(h * _DSA["crop_pad"] * s + 0.5), int(w * _DSA["crop_pad"] * s + 0.5)
        if sh == 0 and sw == 0:
            return x
        dy = rng.integers(-sh, sh + 1, size=b)
        dx = rng.integers(-sw, sw + 1, size=b)
        xp = np.pad(x, ((0, 0), (0, 0), (sh, sh), (sw, sw)))
        rows = np.arange(h)[None, :] + sh - dy[:, None]
        cols = np.arange(w)[None, :] + sw - dx[:, None]
        out = xp.transpose(0, 2, 3, 1)[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    if op == "cutout":
        frac = min(_DSA["cutout"] * s, 1.0)
        ch, cw = int(h * frac + 0.5), int(w * frac + 0.5)
        if ch == 0 or cw == 0:
            return x
        cy = rng.integers(0, h + 1 - ch % 2, size=b)
        cx = rng.integers(0, w + 1 - cw % 2, size=b)
        top, left = cy - ch // 2, cx - cw // 2
        r, c = np.arange(h)[None, :], np.arange(w)[None, :]
        in_r = (r >= top[:, None]) & (r < top[:, None] + ch)
        in_c = (c >= left[:, None]) & (c < left[:, None] + cw)
        return x * (~(in_r[:, :, None] & in_c[:, None, :]))[:, None].astype(x.dtype)
    if op == "flip":
        mask = rng.random(b) < _DSA["flip"]
        out = x.copy()
        out[mask] = out[mask][..., ::-1]
        return out
    if op == "scale":
        r = 1.0 + (_DSA["scale"] - 1.0) * s
        v = rng.random((b, 2)) * (r - 1.0 / r) + 1.0 / r
        theta = np.zeros((b, 2, 3))
        theta[:, 0, 0], theta[:, 1, 1] = v[:, 0], v[:, 1]
        return _affine(x, theta)
    if op == "rotate":
        ang = (rng.random(b) - 0.5) * 2.0 * _DSA["rotate"] * s * math.pi / 180.0
        cos, sin = np.cos(ang), np.sin(ang)
        theta = np.zeros((b, 2, 3))
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, sin, -sin, cos
        return _affine(x, theta)
    raise ConfigError(f"unknown augmentation op {op!r}; expected one of {', '.join(_OPS)}.")


def augment_batch(x: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """Augment a batch of *normalised* images ``[B, C, H, W]`` by ``recipe`` (a new float32
    array). ``single_op``: one op of the list for the whole batch (DSA's evaluation), each image
    with its own parameters; otherwise every op in order. Flips only when ``recipe.flips``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ConfigError(f"augment_batch expects images [B, C, H, W]; got shape {x.shape}.")
    ops = recipe.ops
    if not ops or len(x) == 0:
        return x.copy()
    if recipe.single_op:
        ops = (ops[int(rng.integers(len(ops)))],)
    flat: list[str] = []
    for op in ops:
        flat.extend(_COLOR if op == "color" else (op,))
    for op in flat:
        if op == "flip" and not recipe.flips:  # defensive: the recipe already dropped it
            continue
        x = _apply(op, x, rng, float(recipe.strength))
    return np.ascontiguousarray(x, dtype=np.float32)


def cutmix_batch(x: np.ndarray, t: np.ndarray, rng: np.random.Generator, *, beta: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """CutMix on a batch with target distributions ``t`` [B, L]: a box of a shuffled batch is
    pasted in and the targets are mixed by the pasted area (``edgecond.augment.cutmix``'s rule)."""
    out, perm, lam = cutmix_images(x, rng, beta=beta)
    return out, (lam * t + (1.0 - lam) * t[perm]).astype(np.float32)


def cutmix_images(x: np.ndarray, rng: np.random.Generator, *, beta: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """The image half of :func:`cutmix_batch`: ``(images, perm, lam)`` — the targets of image
    ``i`` are ``lam · t[i] + (1 - lam) · t[perm[i]]`` (a trainer whose loss takes class ids mixes
    two losses by ``lam``)."""
    b, _, h, w = x.shape
    lam = float(rng.beta(beta, beta))
    perm = rng.permutation(b)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.copy()
    out[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
    return out, perm, float(lam)


def targets_of(y: np.ndarray, num_classes: int, soft: np.ndarray | None = None, *,
               soft_kind: str = "logits", temperature: float = 1.0) -> np.ndarray:
    """Target distributions [M, L]: one-hot of ``y``, or the buffer's soft labels (``logits``
    → softmax(logits / T); ``probs`` → renormalised)."""
    if soft is None:
        t = np.zeros((len(y), int(num_classes)), dtype=np.float32)
        t[np.arange(len(y)), np.asarray(y, dtype=np.int64)] = 1.0
        return t
    s = np.asarray(soft, dtype=np.float64)
    if soft_kind == "probs":
        p = np.clip(s, 0.0, None)
    else:
        z = s / float(temperature)
        p = np.exp(z - z.max(axis=1, keepdims=True))
    return (p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def recipe_batches(x: np.ndarray, targets: np.ndarray, recipe: Recipe, rng: np.random.Generator, *,
                   mean: Sequence[float], std: Sequence[float], batch_size: int | None = None,
                   steps: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The training stream of a buffer prefix: batches ``(x, t)`` of normalised, augmented images
    and target distributions (CutMix-mixed with the recipe's probability).

    ``x``: pixel-space images [M, C, H, W]; ``targets``: [M, L] (:func:`targets_of`). One epoch
    by default (near-equal shuffled batches of at most ``batch_size``, the evaluation's rule);
    ``steps``: exactly that many batches, cycling through fresh permutations (a condensed set
    mixed into a longer local epoch)."""
    x = np.asarray(x, dtype=np.float32)
    m = len(x)
    if m == 0:
        return
    bs = recipe.for_size(m).batch_size if batch_size is None else max(1, min(int(batch_size), m))
    mu = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    sd = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)

    def one_epoch():
        return np.array_split(rng.permutation(m), max(1, -(-m // bs)))

    def make(idx):
        xb = augment_batch((x[idx] - mu) / sd, recipe, rng)
        tb = targets[idx]
        if recipe.cutmix_prob > 0 and len(idx) > 1 and rng.random() < recipe.cutmix_prob:
            xb, tb = cutmix_batch(xb, tb, rng)
        return xb, np.asarray(tb, dtype=np.float32)

    if steps is None:
        for idx in one_epoch():
            yield make(idx)
        return
    done = 0
    while done < int(steps):
        for idx in one_epoch():
            if done >= int(steps):
                return
            yield make(idx)
            done += 1


def with_flips(recipe: Recipe, flips: bool) -> Recipe:
    """``recipe`` under another flip policy (flip op dropped when ``flips`` is False)."""
    return replace(recipe, flips=bool(flips))
