"""One spelling per flag and the other conventions of issue 20 (thread count, --ipc 0, --list,
budget replies that name their partition)."""
from __future__ import annotations

import pytest

from edgecond.cli import build_parser, main


def test_data_root_is_the_spelling_everywhere_and_root_is_accepted():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("datasets", "evaluate-real", "condense", "evaluate", "export", "deploy"):
        options = {s for a in sub[command]._actions for s in a.option_strings}
        assert "--data-root" in options and "--root" in options, command
    args = parser.parse_args(["datasets", "--root", "/x"])
    assert args.root == "/x" and parser.parse_args(["datasets", "--data-root", "/y"]).root == "/y"
    args = parser.parse_args(["condense", "--root", "/x", "--method", "idc", "-o", "o"])
    assert args.data_root == "/x"


def test_threads_default_follows_omp_num_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    from edgecond.utils import set_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_cpu_threads(None) == 1
        assert set_cpu_threads(2) == 2  # an explicit --threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "junk")
        assert set_cpu_threads(None) >= 1
    finally:
        torch.set_num_threads(before)


def test_evaluate_real_refuses_ipc_zero(capsys):
    assert main(["evaluate-real", "--ipc", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--ipc 0" in err and "'all'" in err


def test_condense_list_shows_every_method_and_the_mdc_wrapper(capsys):
    from edgecond.condense import list_methods

    assert main(["condense", "--list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert set(names) == {m["name"] for m in list_methods()} | {"mdc"}
    assert "--base idc|idm|dm" in out


def test_budget_reply_names_its_partition():
    pytest.importorskip("flwr")
    from edgecond.errors import FederatedError
    from edgecond.federated import make_budget_reply, reply_partition, validate_budget_reply

    reply = make_budget_reply(100, 0, "", partition=3)
    assert reply_partition(reply) == 3 and validate_budget_reply(reply, max_budget=1000, ipc=5).budget == 100
    assert reply_partition(make_budget_reply(100)) is None
    from flwr.app import ConfigRecord, RecordDict

    bad = RecordDict({"budget": ConfigRecord({"bytes": 10, "partition": -1})})
    assert reply_partition(bad) is None
    with pytest.raises(FederatedError, match="'partition'"):
        validate_budget_reply(bad, max_budget=1000, ipc=5)


def test_deploy_hint_names_only_existing_flags(tmp_path):
    """The 'does not fit' hint suggests flags `edgecond deploy` has."""
    import re

    from edgecond import deploy as deploy_module

    src = open(deploy_module.__file__).read()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["deploy"]
    options = {s for a in sub._actions for s in a.option_strings}
    hinted = set(re.findall(r"(--[a-z][a-z-]+)", src))
    assert hinted and hinted <= options, hinted - options
