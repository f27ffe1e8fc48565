"""edgecond.models: every registered model, ConvNet structure, seeding, errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecond.errors import ConfigError
from edgecond.models import MODELS, ConvNet, build_model, list_models, register_model



SHAPES = [(1, 8, 8), (3, 16, 16)]


def test_registry_names():
    assert {"convnet", "convnet-bn", "mlp", "resnet10-ap"} <= set(list_models())


@pytest.mark.parametrize("name", ["convnet", "convnet-bn", "mlp", "resnet10-ap"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_embed_classifier(name, shape):
    kwargs = {"width": 8} if name == "resnet10-ap" else {"width": 16} if name.startswith("convnet") else {}
    m = build_model(name, shape, 7, seed=0, **kwargs)
    x = torch.randn(5, *shape)
    e, out = m.embed(x), m(x)
    assert out.shape == (5, 7) and e.dim() == 2 and e.shape[0] == 5
    assert isinstance(m.classifier, nn.Linear) and m.classifier.in_features == e.shape[1]
    assert torch.allclose(out, m.classifier(e), atol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_seed_determinism_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model("convnet", (1, 8, 8), 10, seed=1, width=16)
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model("convnet", (1, 8, 8), 10, seed=1, width=16)
    c = build_model("convnet", (1, 8, 8), 10, seed=2, width=16)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_convnet3_defaults():
    m = build_model("convnet", (3, 32, 32), 10)
    assert isinstance(m, ConvNet) and m.depth == 3 and m.width == 128
    convs = [l for l in m.features if isinstance(l, nn.Conv2d)]
    norms = [l for l in m.features if isinstance(l, nn.GroupNorm)]
    assert [c.out_channels for c in convs] == [128] * 3 and all(c.kernel_size == (3, 3) for c in convs)
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms) and len(norms) == 3
    assert sum(isinstance(l, nn.AvgPool2d) for l in m.features) == 3
    assert sum(isinstance(l, nn.ReLU) for l in m.features) == 3
    assert m.feature_shape == (128, 4, 4) and m.classifier.in_features == 2048


@pytest.mark.parametrize("size,depth", [(8, 3), (4, 2), (2, 1), (1, 1), (28, 3)])
def test_depth_adapts_to_small_images(size, depth):
    m = build_model("convnet", (1, size, size), 10, width=8)
    assert m.depth == depth and min(m.feature_shape[1:]) >= 1
    assert m(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_convnet_bn_and_options():
    m = build_model("convnet-bn", (1, 8, 8), 10, width=8)
    assert any(isinstance(l, nn.BatchNorm2d) for l in m.modules())
    m = build_model("convnet", (1, 8, 8), 10, width=8, norm="none", pool="max", act="leakyrelu")
    assert not any(isinstance(l, (nn.GroupNorm, nn.BatchNorm2d)) for l in m.modules())
    assert any(isinstance(l, nn.MaxPool2d) for l in m.modules())
    assert build_model("mlp", (1, 8, 8), 10, hidden=(32,)).embed(torch.randn(2, 1, 8, 8)).shape == (2, 32)


def test_errors():
    with pytest.raises(ConfigError, match="expected one of.*convnet"):
        build_model("vit-huge", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="unknown norm 'group'"):
        build_model("convnet", (1, 8, 8), 10, norm="group")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build_model("convnet", (1, 8, 8), 10, widht=3)
    with pytest.raises(ConfigError, match="image_shape"):
        build_model("convnet", (8, 8), 10)


def test_register_model_plugin():
    @register_model("tiny-linear-test")
    def _tiny(image_shape, num_classes):
        class T(nn.Module):
            def __init__(self):
                super().__init__()
                self.classifier = nn.Linear(int(torch.tensor(image_shape).prod()), num_classes)

            def embed(self, x):
                return x.flatten(1)

            def forward(self, x):
                return self.classifier(self.embed(x))

        return T()

    try:
        assert build_model("Tiny_Linear_Test", (1, 2, 2), 3)(torch.zeros(1, 1, 2, 2)).shape == (1, 3)
    finally:
        MODELS._items.pop("tiny-linear-test", None)
