"""SDC: slimmable dataset condensation (Liu et al., CVPR 2023; supplement in ``shared/papers``).

Each class's synthetic set is parameterised by significance, ``X_k = U_k Σ_k V_k`` (pixel space;
``U_k`` ``[N, N]`` rows × components, ``Σ_k = diag(s_k)``, ``V_k`` ``[N, d]`` component images),
and optimised through any base matcher (``idm``, ``dm``, ``idc``): the matcher sees the *decoded*
images ``clip(U Σ V, 0, 1)`` exactly as it sees plain synthetic images. Two regularisers shape
the decomposition:

* ``L_skew`` (significance): ``1 − Σ_{j<k} σ_j² / Σ_j σ_j²`` over the ``k = skew_terms`` most
  significant components, ``σ_j = |s_j|·‖U_{:,j}‖·‖V_j‖/√d`` (the supplement regularises ``s_1``
  by default, Table 12 adds ``s_2``);
* ``L_ortho``: ``‖UᵀU − I‖²/N² + ‖VVᵀ/d − I‖²/N²`` keeps ``U`` and ``V`` near-orthogonal so that
  ``s`` measures significance (the supplement's ``λ_ortho``).

Optionally (``slim_weight > 0``) every image update also matches a random slimmed set: the
first ``n`` rows of the rank-``n`` truncation (``n`` uniform in ``1..N−1``), the same decode a
client uses; this is condensation-time training for slimmability, not learning-based slimming
(LBS) — slimming itself stays learning-free (the first ``n`` components).

Slimming (learning-free, LFS): components are stored in order of significance (one component =
one rank of the buffer, formation ``sdc/1``, ``docs/buffer-format.md`` §5.1); the ``n``-rank prefix
decodes to ``n`` images per class, ``X_k(n) = clip(A_k[:n, :n] V_k[:n], 0, 1)`` with
``A = U Σ`` (see :func:`edgecond.formation.decode_sdc_numpy`). Design notes: docs/multisize.md
"SDC".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..formation import decode_torch
from .base import Matcher, MatchOutput, SyntheticSet
from .engine import METHODS, register_method
from .engine import method_config as _method_config

__all__ = ["SDCConfig", "SDC", "SlimmableSet", "sdc_factorize", "lbs_stage"]

SDC_BASES = ("idm", "dm", "idc")


@dataclass
class SDCConfig:
    """SDC's own settings; the engine settings (iterations, model, batch_real, ...) are the base's."""

    base: str = "idm"  #: base matcher that scores the decoded images: idm | dm | idc
    base_config: dict = field(default_factory=dict)  #: the base matcher's method_config (replaces the preset's)
    lr: float = 0.01  #: Adam learning rate of U, Σ, V (pixel space; V scaled to entries O(1))
    skew_weight: float = 0.1  #: λ_skew
    skew_terms: int = 1  #: L_skew over the first k significances (supplement Table 12)
    ortho_weight: float = 0.1  #: λ_ortho
    slim_weight: float = 0.0  #: weight of the matching loss of a random slimmed set (0 = off)
    lbs_steps: int = 0  #: nested learning-based slimming after condensation: Adam steps per size (0 = off)
    lbs_lr: float = 0.005  #: Adam learning rate of the LBS sweep
    coefficient_dtype: str = "float16"  #: buffer storage of the coefficients (float16 | float32)


def sdc_factorize(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of class-major pixel images ``[K, N, C, H, W]`` into ``(U [K,N,N], s [K,N], V [K,N,d])``
    with ``X = U diag(s) V`` exactly, components sorted by singular value, ``V`` rows of norm √d."""
    k, n = pixels.shape[:2]
    d = int(pixels[0, 0].numel())
    if n > d:
        raise ConfigError(f"SDC needs ipc <= pixels per image ({d}) to factorise a class's images; got ipc {n}.")
    x = pixels.reshape(k, n, d).double()
    u, s, vt = torch.linalg.svd(x, full_matrices=False)  # [K,N,N], [K,N], [K,N,d]
    # a deterministic sign: the largest-magnitude entry of each V row positive
    idx = vt.abs().argmax(-1, keepdim=True)
    sign = torch.sign(torch.gather(vt, -1, idx)).squeeze(-1)
    sign[sign == 0] = 1.0
    u = u * sign[:, None, :]
    vt = vt * sign[:, :, None]
    root = math.sqrt(d)
    return u.float(), (s / root).float(), (vt * root).float()


class SlimmableSet(SyntheticSet):
    """The SDC synthetic set: ``images`` holds the components ``V`` ``[K, N, C, H, W]``; ``u`` and
    ``s`` the coefficients. ``decoded(c, n)`` returns the first ``n`` rows of the rank-``n``
    truncation (components ranked by current significance), normalised, formation-decoded."""

    def __init__(self, pixels: torch.Tensor, *, factor: int, mean: Sequence[float], std: Sequence[float]):
        u, s, v = sdc_factorize(pixels)
        super().__init__(v.reshape(pixels.shape).to(pixels.device), factor=factor, mean=mean, std=std)
        self.u = torch.nn.Parameter(u.to(pixels.device))
        self.s = torch.nn.Parameter(s.to(pixels.device))
        self.fixed_order = False  # True after freeze_order_(): components are used in index order

    @property
    def dim(self) -> int:
        return int(self.images[0, 0].numel())

    def significance(self, c: int | None = None) -> torch.Tensor:
        """``σ`` ``[K, N]`` (or ``[N]`` for class ``c``): ``|s_j|·‖U_{:,j}‖·‖V_j‖/√d``."""
        u, s, v = (self.u, self.s, self.images) if c is None else (self.u[c:c + 1], self.s[c:c + 1], self.images[c:c + 1])
        vn = v.reshape(v.shape[0], v.shape[1], -1).norm(dim=-1) / math.sqrt(self.dim)
        sig = s.abs() * u.norm(dim=1) * vn
        return sig if c is None else sig[0]

    def order(self, c: int) -> torch.Tensor:
        """Component indices of class ``c`` by decreasing significance (stable); index order once
        :meth:`freeze_order_` was called."""
        if self.fixed_order:
            return torch.arange(self.ipc, device=self.s.device)
        return torch.sort(self.significance(c).detach(), descending=True, stable=True).indices

    @torch.no_grad()
    def freeze_order_(self) -> None:
        """Permute the components of every class into significance order and keep that order."""
        for c in range(self.num_classes):
            keep = self.order(c)
            self.u[c] = self.u[c][:, keep].clone()
            self.s[c] = self.s[c, keep].clone()
            self.images[c] = self.images[c, keep].clone()
        self.fixed_order = True

    def stage_masks(self, n: int) -> list[torch.Tensor]:
        """0/1 masks of ``(u, s, images)``: the entries the ``n``-component decode introduces
        (``V_{n-1}``, ``s_{n-1}``, ``U[:n, n-1]``, ``U[n-1, :n-1]``); no smaller decode uses them."""
        mu = torch.zeros_like(self.u)
        mu[:, :n, n - 1] = 1.0
        mu[:, n - 1, : n - 1] = 1.0
        ms = torch.zeros_like(self.s)
        ms[:, n - 1] = 1.0
        mv = torch.zeros_like(self.images)
        mv[:, n - 1] = 1.0
        return [mu, ms, mv]

    def pixels(self, c: int, n: int | None = None) -> torch.Tensor:
        """Pixel images ``[n, C, H, W]`` of class ``c`` decoded from its ``n`` most significant components."""
        n = self.ipc if n is None else int(n)
        keep = self.order(c)[:n]
        a = self.u[c, :n][:, keep] * self.s[c, keep]                         # [n rows, n comps]
        v = self.images[c, keep].reshape(n, -1)                              # [n comps, d]
        return (a @ v).clamp(0.0, 1.0).reshape(n, *self.images.shape[2:])

    def decoded(self, c: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.ipc if n is None else int(n)
        m = self.mean[0]
        x = (self.pixels(c, n) - m) / self.std[0]
        x = decode_torch(x, self.factor)
        owner = torch.arange(n, device=x.device).repeat_interleave(self.factor**2)
        return x, owner

    @torch.no_grad()
    def clamp_(self) -> None:  # the decode clips; the factors are unconstrained
        pass

    @torch.no_grad()
    def pixel_images(self) -> torch.Tensor:
        return torch.stack([self.pixels(c) for c in range(self.num_classes)])

    def regularizer(self, c: int, mc: "SDCConfig") -> torch.Tensor:
        """``λ_skew·L_skew + λ_ortho·L_ortho`` of class ``c``."""
        n = self.ipc
        total = self.s.new_zeros(())
        if mc.skew_weight > 0 and n > 1:
            sig2 = self.significance(c) ** 2
            top = torch.sort(sig2, descending=True).values[: max(1, int(mc.skew_terms))].sum()
            total = total + mc.skew_weight * (1.0 - top / sig2.sum().clamp_min(1e-12))
        if mc.ortho_weight > 0:
            eye = torch.eye(n, device=self.u.device, dtype=self.u.dtype)
            u = self.u[c]
            v = self.images[c].reshape(n, -1)
            lo = ((u.T @ u - eye) ** 2).sum() + ((v @ v.T / self.dim - eye) ** 2).sum()
            total = total + mc.ortho_weight * lo / (n * n)
        return total

    def truncated(self, n: int) -> "_Truncated":
        return _Truncated(self, n)

    @torch.no_grad()
    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes [K, N, C, H, W] in [0, 1], coefficients [K, N, N])`` in significance order:
        ``coefficients[k, j, i]`` is the weight of component ``j`` in decoded row ``i`` (spec §5.1)."""
        codes, coefs = [], []
        for c in range(self.num_classes):
            keep = self.order(c)
            v = self.images[c, keep].reshape(self.ipc, -1).double()
            scale = v.abs().amax(dim=1).clamp_min(1e-12)                   # fold max|V_j| into A
            a = self.u[c][:, keep].double() * self.s[c, keep].double() * scale  # [rows i, comps j]
            codes.append(((v / scale[:, None] + 1.0) / 2.0).reshape(self.images.shape[1:]))
            coefs.append(a.T.contiguous())
        return torch.stack(codes).float().clamp(0.0, 1.0), torch.stack(coefs)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"u": self.u.detach(), "s": self.s.detach()}

    @torch.no_grad()
    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.u.copy_(state["u"].to(self.u.device))
        self.s.copy_(state["s"].to(self.s.device))


class _Truncated:
    """A read-only view of a :class:`SlimmableSet` slimmed to ``n`` components (what matchers see)."""

    def __init__(self, syn: SlimmableSet, n: int) -> None:
        self._syn = syn
        self.ipc = int(n)
        self.factor = syn.factor
        self.images = syn.images

    @property
    def num_classes(self) -> int:
        return self._syn.num_classes

    def decoded(self, c: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._syn.decoded(c, self.ipc if n is None else min(int(n), self.ipc))


def _preset(name: str):
    def fn(ctx) -> dict:
        from .engine import _ensure_methods
        from .presets import PresetContext

        _ensure_methods()
        base_name = (ctx.base or "idm").lower()
        if base_name not in SDC_BASES:
            raise ConfigError(f"SDC base {ctx.base!r}; expected one of {', '.join(SDC_BASES)}.")
        bcls = METHODS.get(base_name)
        values = dict(bcls.presets[name](PresetContext(facts=ctx.facts, ipc=ctx.ipc, paper=ctx.paper)))
        bmc = dict(values.pop("method_config", {}))
        values.pop("lr_img", None)
        extra = _QUICK_SMALL if (name == "quick" and ctx.facts.side <= 8) else {}
        values["method_config"] = {"base": base_name, "base_config": bmc, **extra}
        return values

    return fn


#: SDC settings of the quick preset on images of side <= 8 on top of SDCConfig's defaults, chosen
#: on a validation split of digits' TRAIN (40 images per class held out; docs/multisize.md, *SDC
#: on a validation split*): over IDM, the slim loss lifts size 2 from 83.75 to 89.50 % at 0.7
#: points at sizes 5 and 10.
_QUICK_SMALL: dict[str, Any] = {"slim_weight": 1.0}


@register_method("sdc")
class SDC(Matcher):
    """SDC: slimmable condensation, X = UΣV per class over a base matcher (idm | dm | idc)."""

    Config = SDCConfig
    presets = {"quick": _preset("quick"), "paper": _preset("paper")}
    supports_independent_ranks = False
    shard_classes = True  #: U, Σ, V are per class; LBS (finish) runs on every worker after the sync

    def __init__(self, real, config, method_config: SDCConfig, *, device: torch.device,
                 generator: torch.Generator) -> None:
        mc = method_config
        if mc.base not in SDC_BASES:
            raise ConfigError(f"SDC base {mc.base!r}; expected one of {', '.join(SDC_BASES)}.")
        if config.hooks not in ("none", "", None):
            raise ConfigError(f"SDC is its own multisize mechanism; hooks={config.hooks!r} is not supported "
                              "(use --method sdc without --hooks, or --method mdc).")
        if not (mc.lr > 0 and mc.skew_weight >= 0 and mc.ortho_weight >= 0 and mc.slim_weight >= 0
                and mc.skew_terms >= 1 and mc.lbs_steps >= 0 and mc.lbs_lr > 0):
            raise ConfigError(f"SDC lr={mc.lr}, skew_weight={mc.skew_weight}, ortho_weight={mc.ortho_weight}, "
                              f"slim_weight={mc.slim_weight}, skew_terms={mc.skew_terms}; expected lr > 0, "
                              "non-negative weights, skew_terms >= 1, lbs_steps >= 0 and lbs_lr > 0.")
        self.mc = mc
        self.config = config
        self.gen = generator
        bcls = METHODS.get(mc.base)
        self.base = bcls(real, config, _method_config(bcls, mc.base_config), device=device, generator=generator)
        self.inner_steps = int(self.base.inner_steps)

    # -- the engine's extension points (edgecond/condense/engine.py)

    @classmethod
    def synthetic_set(cls, pixels: torch.Tensor, config, mc: SDCConfig, dataset) -> SlimmableSet:
        return SlimmableSet(pixels, factor=config.factor, mean=dataset.mean, std=dataset.std)

    # -- Matcher

    def class_groups(self, num_classes: int) -> list[list[int]]:
        return self.base.class_groups(num_classes)

    def begin_outer(self, t: int) -> None:
        self.base.begin_outer(t)

    def between_inner(self, step: int) -> None:
        self.base.between_inner(step)

    def match(self, syn: SyntheticSet, classes: Sequence[int], *,
              prefixes: Sequence[int | None] = (None,)) -> list[MatchOutput]:
        if not isinstance(syn, SlimmableSet):
            raise ConfigError("SDC matches a SlimmableSet; run it through edgecond.condense.condense.")
        outs = self.base.match(syn, classes, prefixes=(None,))
        extra: dict[int, torch.Tensor] = {}
        if self.mc.slim_weight > 0 and syn.ipc > 1:
            n = int(torch.randint(1, syn.ipc, (1,), generator=self.gen))
            for o in self.base.match(syn.truncated(n), classes, prefixes=(None,)):
                extra[o.cls] = self.mc.slim_weight * o.losses[None]
        for o in outs:
            total = o.losses[None] + syn.regularizer(o.cls, self.mc)
            if o.cls in extra:
                total = total + extra[o.cls]
            o.losses = {p: total for p in prefixes}
        return outs

    def finish(self, syn: SlimmableSet) -> None:
        """Nested learning-based slimming (``lbs_steps > 0``), called by the engine after the last
        outer iteration: fix the significance order, then for ``n = 1..N`` fine-tune only the
        entries the ``n``-component decode introduces (:meth:`SlimmableSet.stage_masks`) on the
        base loss of that decode. Smaller sizes stay bit-identical, so the result is one buffer."""
        if self.mc.lbs_steps <= 0:
            return
        syn.freeze_order_()
        t = int(self.config.iterations)
        for n in range(1, syn.ipc + 1):
            t = lbs_stage(syn, self.base, n, steps=int(self.mc.lbs_steps), lr=float(self.mc.lbs_lr), t0=t)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state.get("base", {}))


def lbs_stage(syn: SlimmableSet, base: Matcher, n: int, *, steps: int, lr: float, t0: int = 0) -> int:
    """One LBS stage: ``steps`` Adam steps on the base matcher's loss of the ``n``-component decode,
    updating only the entries of :meth:`SlimmableSet.stage_masks` (Adam with a gradient that is
    always 0 never moves an entry). Returns the next outer-iteration number for the base."""
    params = [syn.u, syn.s, syn.images]
    masks = syn.stage_masks(n)
    opt = torch.optim.Adam(params, lr=lr)
    view = syn.truncated(n)
    t = t0
    for _ in range(steps):
        base.begin_outer(t)
        for group in base.class_groups(syn.num_classes):
            outs = base.match(view, group, prefixes=(None,))
            loss = torch.stack([o.losses[None] for o in outs]).sum()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            for p, m in zip(params, masks):
                p.grad.mul_(m)
            opt.step()
        base.between_inner(0)
        t += 1
    return t


def sdc_buffer(syn: SlimmableSet, dataset, config, extra: dict):
    """The ``sdc/1`` buffer of a finished SDC run (components in significance order)."""
    from ..buffer import MultisizeBuffer
    from .engine import _jsonable

    codes, coefs = syn.export()
    mc = config.method_config or {}
    sig = [[round(float(v), 5) for v in syn.significance(c).detach()[syn.order(c)]] for c in range(syn.num_classes)]
    extra = dict(extra)
    extra["sdc"] = {"significance": sig}
    return MultisizeBuffer.from_class_major(
        codes.cpu().numpy(), class_names=list(dataset.class_names), dataset=dataset.name,
        mean=list(dataset.mean), std=list(dataset.std), factor=config.factor, method=config.method,
        config=_jsonable(config), dtype=config.dtype, extra=extra, coefficients=coefs.cpu().numpy(),
        coefficient_dtype=mc.get("coefficient_dtype", "float16"),
    )


def sdc_config_dict(mc: SDCConfig) -> dict:
    return asdict(mc)
