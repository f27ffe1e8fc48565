"""The export-time copy of a model: what ONNX Runtime training can differentiate.

:func:`make_exportable` deep-copies a registry model, refuses what a graph exported in eval mode
cannot reproduce (batch norm, dropout), and swaps every :class:`torch.nn.GroupNorm` for
:class:`PrimitiveGroupNorm` (the same computation in primitive ops: ORT training has no gradient
builder for ``InstanceNormalization``/``GroupNormalization``). :mod:`edgecond.export` re-exports both.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import ExportError

__all__ = ["PrimitiveGroupNorm", "make_exportable"]


class PrimitiveGroupNorm(nn.Module):
    """:class:`torch.nn.GroupNorm` written with primitive ops (mean, subtract, multiply, sqrt,
    divide) so that ONNX Runtime training can differentiate the exported graph.

    Same parameters (``weight``, ``bias`` of shape [C]) and the same biased variance and ``eps``
    as ``GroupNorm``; instance norm (``num_groups == C``) reduces over H, W directly.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups = int(norm.num_groups)
        self.num_channels = int(norm.num_channels)
        self.eps = float(norm.eps)
        self.affine = bool(norm.affine)
        if self.affine:
            self.weight = nn.Parameter(norm.weight.detach().clone())
            self.bias = nn.Parameter(norm.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.num_groups == self.num_channels:
            dims = tuple(range(2, x.dim()))
            mean = x.mean(dim=dims, keepdim=True)
            centred = x - mean
            var = (centred * centred).mean(dim=dims, keepdim=True)
            y = centred / torch.sqrt(var + self.eps)
        else:
            g = x.reshape(shape[0], self.num_groups, -1)
            mean = g.mean(dim=2, keepdim=True)
            centred = g - mean
            var = (centred * centred).mean(dim=2, keepdim=True)
            y = (centred / torch.sqrt(var + self.eps)).reshape(shape)
        if self.affine:
            view = (1, self.num_channels) + (1,) * (x.dim() - 2)
            y = y * self.weight.reshape(view) + self.bias.reshape(view)
        return y


_UNSUPPORTED = (
    (nn.modules.batchnorm._BatchNorm, "batch norm", "use norm='instance' (GroupNorm(C, C)) or 'none', e.g. --model convnet"),
    (nn.modules.dropout._DropoutNd, "dropout", "remove dropout from the exported model"),
    (nn.Dropout, "dropout", "remove dropout from the exported model"),
)


def make_exportable(model: nn.Module, *, name: str = "model") -> nn.Module:
    """A deep copy of ``model`` in eval mode with every GroupNorm swapped for
    :class:`PrimitiveGroupNorm` (parameter names unchanged). ``model`` itself is not touched.

    Raises :class:`ExportError` for layers whose training-mode behaviour an ORT training graph
    exported this way would not reproduce (batch norm, dropout).
    """
    for mod_name, mod in model.named_modules():
        for kind, what, fix in _UNSUPPORTED:
            if isinstance(mod, kind) and not (what == "dropout" and getattr(mod, "p", 0) == 0):
                raise ExportError(
                    f"{name}: layer {mod_name or '(root)'} is {type(mod).__name__} ({what}); "
                    f"ONNX Runtime training artifacts exported from an eval-mode graph would not "
                    f"reproduce its training behaviour. Expected a model without {what}; fix: {fix}."
                )
    clone = copy.deepcopy(model).cpu().float().eval()

    def swap(parent: nn.Module) -> None:
        for child_name, child in parent.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(parent, child_name, PrimitiveGroupNorm(child))
            else:
                swap(child)

    if isinstance(clone, nn.GroupNorm):
        return PrimitiveGroupNorm(clone)
    swap(clone)
    return clone
