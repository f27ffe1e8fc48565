"""Dataset facts: the numbers a preset is allowed to read, and the rules that follow from them.

Presets are functions of the data's *geometry and size*, never of its name (the one exception:
the papers' published settings, looked up by an exact registry name in :data:`PAPER_DATASETS`).
A :class:`DataFacts` is what a preset sees: image shape, classes, training images per class
and whether a horizontal flip keeps an image's label. Everything here is torch-free and cheap.

Rules derived from the facts (one place, so every entry point agrees):

* :func:`match_depth` — the depth of the matching ConvNet: the deepest (at most 3, the papers'
  ConvNet-3) whose last instance-normalised feature map is still at least 4×4. On 8×8 images
  that is depth 2: with depth 3 the last block normalises 2×2 maps and its image gradients are
  noise (docs/condensation.md, *IDC on digits*).
* :func:`flip_policy` / :func:`without_flip` — the one flip policy: an augmentation strategy
  keeps its ``flip`` op only when the data says flips preserve labels. The evaluator, the
  Flower client, the Avalanche policy and the edge trainer all read it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .errors import ConfigError

__all__ = [
    "DataFacts",
    "PAPER_DATASETS",
    "paper_key",
    "match_depth",
    "flip_policy",
    "without_flip",
]

#: Registry names whose paper settings are reproduced by the ``paper`` presets (exact names only).
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "mnist", "fashion-mnist")


def paper_key(name: str | None) -> str | None:
    """The paper-table key of a dataset *registry name*, or ``None``.

    Only exact registry names count (case and ``_``/``-`` folded): ``"cifar10"`` is CIFAR-10,
    ``"imagefolder:/data/cifar10"`` or ``"npz:kmnist"`` are somebody's own data and get the
    geometry rules, whatever their path says.
    """
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace("_", "-")
    return key if key in PAPER_DATASETS else None


@dataclass(frozen=True)
class DataFacts:
    """The facts about a dataset that settings may depend on.

    Attributes:
        image_shape: ``(C, H, W)`` of one image.
        num_classes: number of classes ``K``.
        train_per_class: training images of the smallest class.
        train_size: training images in all.
        flips: ``True`` when a horizontal flip keeps every image's label (CIFAR, photos);
            ``False`` for digits, letters, house numbers — and the default for data whose
            owner did not say (``npz:``/``imagefolder:`` take a flag).
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    train_per_class: int
    train_size: int
    flips: bool = False

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"image_shape={self.image_shape!r}; expected (C, H, W) with positive sides.")
        object.__setattr__(self, "image_shape", shape)
        if int(self.num_classes) < 1 or int(self.train_per_class) < 0 or int(self.train_size) < 0:
            raise ConfigError(
                f"num_classes={self.num_classes}, train_per_class={self.train_per_class}, "
                f"train_size={self.train_size}; expected num_classes >= 1 and non-negative counts."
            )

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def side(self) -> int:
        """The shorter image side (what pooling layers shrink)."""
        return min(self.image_shape[1], self.image_shape[2])

    @property
    def pixels(self) -> int:
        """``H * W`` (one channel)."""
        return self.image_shape[1] * self.image_shape[2]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_shape"] = list(self.image_shape)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DataFacts":
        try:
            return cls(
                image_shape=tuple(int(v) for v in data["image_shape"]),
                num_classes=int(data["num_classes"]),
                train_per_class=int(data["train_per_class"]),
                train_size=int(data["train_size"]),
                flips=bool(data.get("flips", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"dataset facts {dict(data)!r} are incomplete or malformed ({exc}); expected "
                "image_shape, num_classes, train_per_class, train_size (and flips)."
            ) from None


def match_depth(facts: DataFacts, *, max_depth: int = 3, min_map: int = 4) -> int:
    """Depth of the matching ConvNet: the deepest ``<= max_depth`` whose last normalised map
    (side ``side / 2**(depth-1)``) is at least ``min_map`` pixels. 8×8 → 2, 16×16 and up → 3."""
    side = facts.side
    if side < min_map:
        return 1
    return max(1, min(int(max_depth), 1 + int(math.floor(math.log2(side / min_map)))))


def flip_policy(facts: DataFacts | None) -> bool:
    """Whether horizontal flips may be used on this data (``False`` when unknown)."""
    return bool(facts.flips) if facts is not None else False


def without_flip(strategy: str, flips: bool) -> str:
    """``strategy`` (an ``_``-joined op list such as ``color_crop_cutout_flip_scale_rotate``) with
    its ``flip`` op removed when ``flips`` is ``False``; ``"none"`` when nothing is left."""
    ops = [op for op in str(strategy).split("_") if op and op != "none"]
    if not flips:
        ops = [op for op in ops if op != "flip"]
    return "_".join(ops) if ops else "none"
