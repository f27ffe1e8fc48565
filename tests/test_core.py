"""Errors, registry, devices and seeding: the pieces every module leans on."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from edgecond.errors import (
    BudgetError,
    BufferFormatError,
    ConfigError,
    DatasetError,
    EdgecondError,
    ExportError,
)
from edgecond.registry import Registry


def test_error_family_shares_one_base_and_builtin_parents():
    for cls in (ConfigError, DatasetError, BufferFormatError, BudgetError):
        assert issubclass(cls, EdgecondError)
        assert issubclass(cls, ValueError)
    assert issubclass(ExportError, RuntimeError)


def test_registry_lookup_is_case_and_dash_insensitive():
    reg: Registry[int] = Registry("widget")
    reg.register("conv_net", 1)
    assert reg.get("CONVNET".replace("CONVNET", "Conv-Net")) == 1
    assert "conv-net" in reg and "conv_net" in reg
    assert reg.names() == ["conv-net"]


def test_registry_unknown_name_lists_choices_and_suggests():
    reg: Registry[int] = Registry("model", hint="Register your own with register_model.")
    reg.register("convnet", 1)
    reg.register("mlp", 2)
    with pytest.raises(ConfigError) as err:
        reg.get("convnt")
    msg = str(err.value)
    assert "unknown model 'convnt'" in msg
    assert "convnet, mlp" in msg
    assert "Did you mean 'convnet'" in msg
    assert "register_model" in msg


def test_registry_overwrite_warns_unless_asked():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.warns(UserWarning, match="already registered"):
        reg.register("a", 2)
    assert reg.get("a") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register("a", 3, overwrite=True)
    assert reg.get("a") == 3


def test_registry_decorator_returns_the_object():
    reg: Registry[type] = Registry("class")

    @reg.register("k")
    class K:  # noqa: D401
        pass

    assert reg.get("k") is K


def test_resolve_device_and_errors():
    import torch

    from edgecond.utils import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("warp-drive")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_seeded_restores_the_callers_rng():
    import torch

    from edgecond.utils import seeded

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        inside_a = torch.rand(2)
    after = torch.rand(3)
    assert torch.equal(after, expected), "seeded() must not disturb the caller's RNG stream"
    with seeded(7):
        inside_b = torch.rand(2)
    assert torch.equal(inside_a, inside_b)


def test_importing_edgecond_does_not_import_torch():
    code = "import sys, edgecond, edgecond.errors, edgecond.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "edgecond", "--help"], capture_output=True, text=True, check=True
    )
    assert "commands" in out.stdout
    for name in ("datasets", "evaluate-real"):
        assert name in out.stdout
