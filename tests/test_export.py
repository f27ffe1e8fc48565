"""ONNX export + ONNX Runtime training artifacts (edgecond.export). Exports are cached per module."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgecond.errors import ConfigError, ExportError  # noqa: E402
from edgecond.export import (  # noqa: E402
    ARTIFACT_FILES,
    EXPORT_INFO_FILE,
    INFERENCE_FILE,
    ExportConfig,
    PrimitiveGroupNorm,
    export_model,
    make_exportable,
    read_export_info,
)
from edgecond.models import build_model  # noqa: E402

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One SGD MLP and one AdamW ConvNet (instance norm), both with the full self-check."""
    root = tmp_path_factory.mktemp("export")
    mlp = export_model("mlp", SHAPE, 10, root / "mlp", model_kwargs={"hidden": [32]}, seed=0,
                       config=ExportConfig(batch_size=8, optimizer="sgd"))
    conv = export_model("convnet", SHAPE, 10, root / "convnet", model_kwargs={"width": 8}, seed=0,
                        config=ExportConfig(batch_size=8, optimizer="adamw"))
    return {"mlp": mlp, "convnet": conv}


@pytest.mark.parametrize("groups", ["instance", "layer", 2])
def test_primitive_group_norm_equals_group_norm(groups):
    c = 8
    g = {"instance": c, "layer": 1}.get(groups, groups)
    norm = nn.GroupNorm(g, c, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    prim = PrimitiveGroupNorm(norm)
    x = torch.randn(4, c, 5, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1
    torch.testing.assert_close(prim(x), norm(x), atol=1e-5, rtol=1e-5)
    assert [n for n, _ in prim.named_parameters()] == [n for n, _ in norm.named_parameters()]


def test_make_exportable_copies_and_keeps_names():
    model = build_model("convnet", SHAPE, 10, seed=0, width=8)
    clone = make_exportable(model)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())  # original untouched
    assert not any(isinstance(m, nn.GroupNorm) for m in clone.modules())
    assert list(clone.state_dict()) == list(model.state_dict())
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(clone(x), model.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["convnet-bn", "resnet10-ap"])
def test_batch_norm_models_raise_export_error(name, tmp_path):
    model = build_model(name, SHAPE, 10, seed=0, width=8)
    with pytest.raises(ExportError, match="batch norm.*fix"):
        make_exportable(model, name=name)
    with pytest.raises(ExportError):
        export_model(name, SHAPE, 10, tmp_path, model_kwargs={"width": 8})


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(optimizer="adam"), dict(weight_decay=-1.0)])
def test_bad_config_raises_config_error(bad, tmp_path):
    with pytest.raises(ConfigError):
        export_model("mlp", SHAPE, 10, tmp_path, config=ExportConfig(**bad))


def test_files_info_and_checks(exported):
    for key, result in exported.items():
        d = result.directory
        for name in (*ARTIFACT_FILES.values(), INFERENCE_FILE, EXPORT_INFO_FILE):
            assert (d / name).exists(), name
        info = read_export_info(d)
        assert info["batch_size"] == 8 and info["parameter_names"] == result.parameter_names
        assert info["model"]["seed"] == 0
        c = result.check
        assert c.checker and c.inference_max_abs < 1e-4
        assert abs(c.train_loss_ort - c.train_loss_torch) < 1e-4 and c.grad_max_rel < 1e-3
        assert (c.param_max_abs is not None) == (key == "mlp")  # the SGD step is compared exactly
        if key == "mlp":
            assert c.param_max_abs < 1e-4
        assert result.artifact_bytes == sum(result.bytes[r] for r in ARTIFACT_FILES)
        assert not list(d.glob(".export-*"))  # scratch removed


def test_traps_handled(exported):
    d = exported["convnet"].directory
    opt = onnx.load(str(d / ARTIFACT_FILES["optimizer_model"]))
    assert opt.ir_version <= 10  # ORT 1.19 reads IR <= 10
    train = onnx.load(str(d / ARTIFACT_FILES["training_model"]))
    ops = {n.op_type for n in train.graph.node}
    assert not ops & {"InstanceNormalization", "GroupNormalization"}
    x = next(i for i in train.graph.input if i.name == "input")
    assert x.type.tensor_type.shape.dim[0].dim_value == 8  # fixed batch
    assert not any(n.metadata_props for n in train.graph.node)  # exporter debug metadata stripped


def test_inference_model_dynamic_batch_matches_torch(exported):
    import onnxruntime

    result = exported["convnet"]
    sess = onnxruntime.InferenceSession(str(result.directory / INFERENCE_FILE), providers=["CPUExecutionProvider"])
    model = build_model("convnet", SHAPE, 10, seed=0, width=8).eval()
    for b in (1, 5):
        x = torch.randn(b, *SHAPE, generator=torch.Generator().manual_seed(b))
        got = sess.run(["logits"], {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_checkpoint_holds_the_seeded_init(exported):
    from onnxruntime.capi import _pybind_state as C

    result = exported["mlp"]
    state = C.load_checkpoint(str(result.directory / ARTIFACT_FILES["checkpoint"]))
    model = build_model("mlp", SHAPE, 10, seed=0, hidden=[32])
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(state.get_parameter(name).data.numpy(), p.detach().numpy())


def test_export_json_is_json(exported):
    info = json.loads((exported["mlp"].directory / EXPORT_INFO_FILE).read_text())
    assert info["format"] == "edgecond-export" and info["optimizer"] == "sgd"


def test_cli_errors_are_clear(tmp_path, capsys):
    from edgecond.cli import main

    assert main(["export", "--model", "convnet-bn", "--model-kwargs", '{"width": 8}', "-o", str(tmp_path / "e")]) == 2
    assert "batch norm" in capsys.readouterr().err
    assert main(["export", "--model", "mlp", "--model-kwargs", "[1]", "-o", str(tmp_path / "e")]) == 2
    assert "JSON object" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path / "missing.safetensors"), "--max-bytes", "1MB", "-o", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err
