"""Model registry: ConvNet (depth/width/norm configurable), ConvNet-BN, ResNet-AP10, ResNet-18, MLP.

Every model exposes ``embed(x) -> [B, D]`` (penultimate features, flattened) and ``classifier``
(the final :class:`torch.nn.Linear`), with ``forward(x) == classifier(embed(x))``. Inputs are
*normalised* images (see :meth:`edgecond.data.ImageDataset.normalize`).

``build_model(name, image_shape, num_classes, seed=None, **kwargs)``; pass ``seed`` to make the
initialisation reproducible without touching the caller's global RNG.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry
from .utils import seeded

__all__ = ["MODELS", "register_model", "build_model", "list_models", "ConvNet", "ResNetAP", "ResNet18", "MLP", "make_norm"]

MODELS: Registry[Callable[..., nn.Module]] = Registry(
    "model", hint="Register your own with @edgecond.models.register_model('name')."
)


def register_model(name: str):
    """Decorator: register ``factory(image_shape, num_classes, **kwargs) -> nn.Module``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def build_model(
    name: str,
    image_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model for images of ``image_shape`` (C, H, W) and ``num_classes``.

    ``seed`` (optional) seeds the initialisation in a forked RNG scope (caller's RNG untouched).
    Unknown keyword arguments raise :class:`~edgecond.errors.ConfigError`.
    """
    factory = MODELS.get(name)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"image_shape={tuple(image_shape)!r} is not valid; expected (C, H, W) with positive sizes.")
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes={num_classes!r}; expected an integer >= 1.")
    with seeded(seed):
        try:
            return factory(shape, int(num_classes), **kwargs)
        except TypeError as exc:
            if "unexpected keyword" in str(exc):
                raise ConfigError(f"model {name!r}: {exc}. Check the model kwargs (see docs/evaluation.md).") from None
            raise


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

NORMS = ("instance", "batch", "layer", "none")
ACTS = {"relu": lambda: nn.ReLU(inplace=True), "leakyrelu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
POOLS = ("avg", "max", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """``instance`` = GroupNorm(C, C, affine) (what IDC/DC/DM call instance norm), ``batch``,
    ``layer`` = GroupNorm(1, C), ``none``."""
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}.")


def _act(act: str) -> nn.Module:
    try:
        return ACTS[act]()
    except KeyError:
        raise ConfigError(f"unknown act {act!r}; expected one of {', '.join(ACTS)}.") from None


class _EmbedModel(nn.Module):
    classifier: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ConvNet(_EmbedModel):
    """ConvNet-D: D × [conv3x3(width) → norm → act → pool2] → flatten → linear.

    ``depth`` is reduced (with no warning needed: it is the documented rule) so the feature map
    never goes below 1×1 — e.g. 8×8 digits keep depth 3 (8→4→2→1), 4×4 images get depth 2.
    The effective depth is ``self.depth``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        act: str = "relu",
        pool: str = "avg",
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if int(width) < 1 or int(depth) < 1:
            raise ConfigError(f"convnet width={width}, depth={depth}; expected integers >= 1.")
        if pool not in POOLS:
            raise ConfigError(f"unknown pool {pool!r}; expected one of {', '.join(POOLS)}.")
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}.")
        self.requested_depth = depth = int(depth)
        if pool != "none":
            while depth > 1 and (min(h, w) >> depth) < 1:
                depth -= 1
        self.depth, self.width, self.norm = depth, int(width), norm
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, kernel_size=3, padding=1), make_norm(norm, width), _act(act)]
            if pool != "none" and min(h, w) >= 2:  # a 1-pixel map is not pooled
                layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, h, w)
        self.embed_dim = width * h * w
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


@register_model("convnet")
def _convnet(image_shape, num_classes, **kwargs) -> ConvNet:
    return ConvNet(image_shape, num_classes, **kwargs)


@register_model("convnet-bn")
def _convnet_bn(image_shape, num_classes, **kwargs) -> ConvNet:
    kwargs.setdefault("norm", "batch")
    return ConvNet(image_shape, num_classes, **kwargs)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}.")


def _set_head(net: nn.Module, blocks: list, width: int, num_classes: int) -> None:
    """A ResNet's residual stages, embedding width and linear classifier."""
    net.layers = nn.Sequential(*blocks)
    net.embed_dim = width
    net.classifier = nn.Linear(width, num_classes)


class _BasicBlockAP(nn.Module):
    """ResNet basic block whose down-sampling is AvgPool2 instead of a strided conv (ResNet-AP)."""

    def __init__(self, cin: int, cout: int, down: bool, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.n1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.n2 = make_norm(norm, cout)
        self.pool = nn.AvgPool2d(2) if down else nn.Identity()
        self.short: nn.Module = nn.Identity()
        if down or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.AvgPool2d(2) if down else nn.Identity(),
                make_norm(norm, cout),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.n1(self.conv1(x)))
        out = self.pool(out)
        out = self.n2(self.conv2(out))
        return self.relu(out + self.short(x))


class ResNetAP(_EmbedModel):
    """ResNet-10-AP: stem conv3x3 → 4 stages of one basic block (widths w, 2w, 4w, 8w, stages 2-4
    down-sample by AvgPool2 while the map is ≥ 2×2) → global average pool → linear."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, *, width: int = 64,
                 norm: str = "batch") -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        _check_norm(norm)
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), make_norm(norm, width),
                                  nn.ReLU(inplace=True))
        blocks = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            down = i > 0 and min(h, w) >= 2
            if down:
                h, w = h // 2, w // 2
            blocks.append(_BasicBlockAP(cin, width * mult, down, norm))
            cin = width * mult
        _set_head(self, blocks, cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return x.mean(dim=(2, 3))


@register_model("resnet10-ap")
def _resnet10_ap(image_shape, num_classes, **kwargs) -> ResNetAP:
    return ResNetAP(image_shape, num_classes, **kwargs)


class MLP(_EmbedModel):
    """Flatten → [Linear → ReLU] per hidden size → linear head."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, *,
                 hidden: Sequence[int] = (256, 128), act: str = "relu") -> None:
        super().__init__()
        d = 1
        for s in image_shape:
            d *= int(s)
        layers: list[nn.Module] = [nn.Flatten()]
        for hsize in hidden:
            layers += [nn.Linear(d, int(hsize)), _act(act)]
            d = int(hsize)
        self.body = nn.Sequential(*layers)
        self.embed_dim = d
        self.classifier = nn.Linear(d, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("mlp")
def _mlp(image_shape, num_classes, **kwargs) -> MLP:
    return MLP(image_shape, num_classes, **kwargs)


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs + BN, strided first conv when down-sampling)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.n1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.n2 = make_norm(norm, cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), make_norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(out)) + self.short(x))


class ResNet18(_EmbedModel):
    """ResNet-18 for small images (the CIFAR variant EDC's CIFAR observers use): 3×3 stem, no
    max-pool, 4 stages × 2 basic blocks (widths w, 2w, 4w, 8w; stages 2-4 stride 2 while the map
    is >= 2×2), global average pool, linear head. BatchNorm by default."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, *, width: int = 64,
                 norm: str = "batch") -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        _check_norm(norm)
        if int(width) < 1:
            raise ConfigError(f"resnet18 width={width}; expected an integer >= 1.")
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), make_norm(norm, width),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0 and min(h, w) >= 2) else 1
                if stride == 2:
                    h, w = (h + 1) // 2, (w + 1) // 2
                blocks.append(_BasicBlock(cin, width * mult, stride, norm))
                cin = width * mult
        _set_head(self, blocks, cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))


@register_model("resnet18")
def _resnet18(image_shape, num_classes, **kwargs) -> ResNet18:
    return ResNet18(image_shape, num_classes, **kwargs)
