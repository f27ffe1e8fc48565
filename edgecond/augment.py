"""Differentiable (siamese) augmentation and CutMix.

:class:`DiffAugment` implements the DSA family of operations — colour (brightness, saturation,
contrast), crop (translation with zero padding), cutout, flip, scale and rotate — as functions
that are differentiable with respect to the images, so gradients reach synthetic pixels.

A random *draw* (:class:`AugmentDraw`) holds the parameters of one call. By default every sample
gets its own parameters. "Siamese" augmentation shares a draw: :meth:`DiffAugment.siamese`
applies **one set of parameters to the whole call** (every image of ``a`` and of ``b``), as DSA
does for the real and synthetic halves of a matching step; ``per_sample=True`` instead pairs
sample ``i`` of ``a`` with sample ``i`` of ``b``.

Draws are stored as uniform numbers in [0, 1) and turned into pixel amounts at apply time, so
one draw fits images of any size. Randomness comes from the ``generator`` you pass (or torch's
global RNG when you pass none; nothing is ever reseeded).

The DSA parameters were tuned for *normalised* inputs; edgecond's evaluation and matchers
augment normalised images (cutout/crop padding then fill with the dataset mean).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["AugmentParams", "AugmentDraw", "DiffAugment", "cutmix", "OPS", "DEFAULT_STRATEGY"]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
#: operation names a strategy string may contain (joined with ``_``); ``color`` = all three colour ops
OPS = ("color", "brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate")
_COLOR = ("brightness", "saturation", "contrast")


@dataclass
class AugmentParams:
    """DSA standard magnitudes."""

    brightness: float = 1.0  # add U(-0.5, 0.5) * brightness
    saturation: float = 2.0  # scale the deviation from the channel mean by U(0, 1) * saturation
    contrast: float = 0.5  # scale the deviation from the image mean by U(0, 1) + contrast
    crop_pad: float = 0.125  # translate by up to round(size * crop_pad) pixels (zero padding)
    cutout: float = 0.5  # zero a square of round(size * cutout) pixels
    flip: float = 0.5  # horizontal flip probability
    scale: float = 1.2  # scale each axis by U(1/scale, scale)
    rotate: float = 15.0  # rotate by U(-rotate, rotate) degrees


@dataclass
class AugmentDraw:
    """Parameters of one augmentation call: the ops applied (in order) and, per op, uniform
    draws of shape ``[batch]`` or ``[batch, 2]``. ``batch == 1`` broadcasts to any batch."""

    ops: tuple[str, ...]
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: int = 1

    def to(self, device: torch.device | str) -> "AugmentDraw":
        return AugmentDraw(self.ops, {k: v.to(device) for k, v in self.values.items()}, self.batch)

    def value(self, op: str, batch: int, device: torch.device) -> torch.Tensor:
        v = self.values[op].to(device)
        if self.batch == batch:
            return v
        if self.batch == 1:
            return v.expand(batch, *v.shape[1:])
        raise ConfigError(
            f"augmentation draw was made for a batch of {self.batch} but applied to a batch of {batch}; "
            "expected the same batch size, or a draw of batch 1 (shared by all samples)."
        )


def _parse_strategy(strategy: str) -> tuple[str, ...]:
    s = (strategy or "").strip().lower()
    if s in ("", "none"):
        return ()
    ops = tuple(p for p in s.split("_") if p)
    bad = [p for p in ops if p not in OPS]
    if bad:
        raise ConfigError(
            f"unknown augmentation op(s) {bad} in strategy {strategy!r}; expected ops from {', '.join(OPS)} "
            "joined with '_' (e.g. 'color_crop_cutout'), or 'none'."
        )
    return ops


class DiffAugment:
    """Differentiable augmentation with per-sample or shared (siamese) random draws.

    ``strategy``: ops joined with ``_`` and applied in that order (``"none"`` = identity).
    ``single_op=True`` picks *one* op of the strategy per call (DSA/IDC style for matching);
    otherwise all ops are chained.
    """

    def __init__(self, strategy: str = DEFAULT_STRATEGY, params: AugmentParams | None = None, *,
                 single_op: bool = False) -> None:
        self.strategy = strategy
        self.ops = _parse_strategy(strategy)
        self.params = params if params is not None else AugmentParams()
        self.single_op = bool(single_op)

    def __repr__(self) -> str:
        return f"DiffAugment({self.strategy!r}, single_op={self.single_op})"

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    # ---------------------------------------------------------------- draws
    def sample_draw(self, batch: int, *, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> AugmentDraw:
        """Draw the parameters for ``batch`` samples (``batch=1``: one set shared by all)."""
        gdev = generator.device if generator is not None else torch.device("cpu")

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=gdev)

        ops = self.ops
        if self.single_op and ops:
            k = int(torch.randint(len(ops), (1,), generator=generator, device=gdev).item())
            ops = (ops[k],)
        flat: list[str] = []
        for op in ops:
            flat.extend(_COLOR if op == "color" else (op,))
        values: dict[str, torch.Tensor] = {}
        for op in flat:
            two = op in ("crop", "cutout", "scale")
            values[op] = u(batch, 2) if two else u(batch)
        return AugmentDraw(tuple(flat), values, int(batch)).to(device)

    # ---------------------------------------------------------------- apply
    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None,
                 draw: AugmentDraw | None = None) -> torch.Tensor:
        """Augment ``x`` [B, C, H, W]; a fresh per-sample draw unless ``draw`` is given."""
        if not self.ops and draw is None:
            return x
        if x.dim() != 4:
            raise ConfigError(f"DiffAugment expects images [B, C, H, W]; got shape {tuple(x.shape)}.")
        if draw is None:
            draw = self.sample_draw(x.shape[0], generator=generator, device=x.device)
        for op in draw.ops:
            x = getattr(self, f"_{op}")(x, draw.value(op, x.shape[0], x.device))
        return x

    def siamese(self, a: torch.Tensor, b: torch.Tensor, *, generator: torch.Generator | None = None,
                per_sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``a`` and ``b`` with the same draw.

        Default: one parameter set for the whole call (every image of both batches; sizes may
        differ). ``per_sample=True``: ``a[i]`` and ``b[i]`` share parameters (needs equal batches).
        """
        if per_sample:
            if a.shape[0] != b.shape[0]:
                raise ConfigError(
                    f"siamese(per_sample=True) needs batches of equal size; got {a.shape[0]} and {b.shape[0]}."
                )
            draw = self.sample_draw(a.shape[0], generator=generator, device=a.device)
        else:
            draw = self.sample_draw(1, generator=generator, device=a.device)
        return self(a, draw=draw), self(b, draw=draw.to(b.device))

    # ---------------------------------------------------------------- ops (differentiable in x)
    @staticmethod
    def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v.to(x.dtype).view(-1, 1, 1, 1)

    def _brightness(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + (self._col(v, x) - 0.5) * self.params.brightness

    def _saturation(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=1, keepdim=True)
        return (x - m) * (self._col(v, x) * self.params.saturation) + m

    def _contrast(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * (self._col(v, x) + self.params.contrast) + m

    def _crop(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        sh, sw = int(h * self.params.crop_pad + 0.5), int(w * self.params.crop_pad + 0.5)
        if sh == 0 and sw == 0:
            return x
        dy = (v[:, 0] * (2 * sh + 1)).floor().long().clamp(max=2 * sh) - sh
        dx = (v[:, 1] * (2 * sw + 1)).floor().long().clamp(max=2 * sw) - sw
        xp = F.pad(x, [sw, sw, sh, sh])
        rows = torch.arange(h, device=x.device)[None, :] + sh - dy[:, None]  # [B, H]
        cols = torch.arange(w, device=x.device)[None, :] + sw - dx[:, None]  # [B, W]
        bidx = torch.arange(b, device=x.device)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
        return out.permute(0, 3, 1, 2)

    def _cutout(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ch, cw = int(h * self.params.cutout + 0.5), int(w * self.params.cutout + 0.5)
        if ch == 0 or cw == 0:
            return x
        cy = (v[:, 0] * (h + 1 - ch % 2)).floor().long()
        cx = (v[:, 1] * (w + 1 - cw % 2)).floor().long()
        top, left = cy - ch // 2, cx - cw // 2
        r = torch.arange(h, device=x.device)[None, :]
        c = torch.arange(w, device=x.device)[None, :]
        in_r = (r >= top[:, None]) & (r < top[:, None] + ch)  # [B, H]
        in_c = (c >= left[:, None]) & (c < left[:, None] + cw)  # [B, W]
        keep = ~(in_r[:, :, None] & in_c[:, None, :])
        return x * keep[:, None].to(x.dtype)

    def _flip(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        mask = (v < self.params.flip).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(3), x)

    def _affine(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _scale(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r = self.params.scale
        s = v * (r - 1.0 / r) + 1.0 / r  # [B, 2] in [1/r, r)
        theta = torch.zeros(v.shape[0], 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ang = (v.float() - 0.5) * 2.0 * self.params.rotate * math.pi / 180.0
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(v.shape[0], 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, sin, -sin, cos
        return self._affine(x, theta)


def cutmix(x: torch.Tensor, y: torch.Tensor, *, beta: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """CutMix: paste a random box of a shuffled batch into ``x``.

    Returns ``(x_mixed, y_a, y_b, lam)`` where ``y_a = y``, ``y_b = y[perm]`` and ``lam`` is the
    fraction of pixels that kept their own image. Train with
    ``lam * loss(out, y_a) + (1 - lam) * loss(out, y_b)``. ``y`` may be class ids or soft targets
    ``[B, K]``. Differentiable with respect to ``x``.
    """
    if beta <= 0:
        raise ConfigError(f"cutmix beta={beta}; expected a positive float (1.0 = uniform box area).")
    gdev = generator.device if generator is not None else torch.device("cpu")
    b, _, h, w = x.shape
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev).item())
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(beta, beta))
    perm = torch.randperm(b, generator=generator, device=gdev).to(x.device)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mask = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
    mask[..., y1:y2, x1:x2] = 1.0
    mixed = x * (1.0 - mask) + x[perm] * mask
    lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
    return mixed, y, y[perm.to(y.device)], lam
