"""`edgecond datasets` and `edgecond evaluate-real`."""
from __future__ import annotations

import json

import pytest
import torch

from edgecond.cli import main
from edgecond.commands.data import parse_ipc
from edgecond.errors import ConfigError




def test_datasets_lists_and_writes_json(tmp_path, capsys):
    out = tmp_path / "ds.json"
    assert main(["datasets", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "digits" in text and "available: yes" in text and "imagefolder:PATH" in text
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert rows["digits"]["available"] is True and "cifar10" in rows


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "datasets" in text and "evaluate-real" in text


def test_evaluate_real_json(tmp_path, capsys):
    out = tmp_path / "r" / "out.json"
    rc = main(["evaluate-real", "--dataset", "digits", "--ipc", "1", "--seeds", "2", "--epochs", "2",
               "--model", "mlp", "--device", "cpu", "--threads", "1", "--no-progress", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["ipc"] == 1 and res["seeds"] == [0, 1] and len(res["accuracies"]) == 2
    assert 0 <= res["mean"] <= 1 and res["std"] >= 0 and res["config"]["epochs"] == 2
    assert res["config"]["model"] == "mlp" and res["dataset"]["name"] == "digits"
    assert "digits ipc 1" in capsys.readouterr().out


def test_evaluate_real_full_set(tmp_path):
    out = tmp_path / "full.json"
    rc = main(["evaluate-real", "--ipc", "all", "--seeds", "1", "--epochs", "1", "--model", "mlp",
               "--device", "cpu", "--threads", "1", "--no-progress", "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["ipc"] == 0 and res["full_training_set"] is True


def test_evaluate_real_errors(capsys):
    assert main(["evaluate-real", "--ipc", "ten"]) == 2
    assert "--ipc 'ten' is not an integer" in capsys.readouterr().err
    assert main(["evaluate-real", "--dataset", "nope", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "digits" in err
    assert main(["evaluate-real", "--ipc", "1", "--seeds", "0"]) == 2


def test_parse_ipc():
    assert parse_ipc("all") == 0 and parse_ipc("12") == 12
    with pytest.raises(ConfigError):
        parse_ipc("-1")
    with pytest.raises(ConfigError, match="'all' for the full training set"):
        parse_ipc("0")  # refused, as in `edgecond condense --ipc 0` (issue 20)
