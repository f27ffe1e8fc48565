"""End-to-end Flower runs: a `flwr run` simulation (with an injected client crash) and a loopback
deployment (flower-superlink + flower-supernode processes on 127.0.0.1, --insecure).

Every process started here (and every descendant seen while it ran: SuperExec, flwr-simulation,
Ray workers, ClientApp processes) is tracked by pid and killed in a ``finally``; the tests assert
none is left running. ``FLWR_HOME`` is a temp dir and the ports are free ones picked per test, so
a developer's own SuperLink on the default ports is never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("flwr")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLWR = BIN / "flwr"
SUPERLINK = BIN / "flower-superlink"
SUPERNODE = BIN / "flower-supernode"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FLWR.exists() or not sys.platform.startswith("linux"),
                       reason="needs the flwr CLI next to the interpreter (Linux)"),
]


# --------------------------------------------------------------------------------------------
# helpers: staging, ports, process tracking
# --------------------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _stage_app(dest: Path) -> Path:
    """Copy the Flower app (pyproject + the three packages' .py files) to ``dest``.

    `flwr run` builds the FAB by walking the app directory; staging keeps .venv/ and runs/ out
    of that walk (seconds instead of tens of seconds) and keeps the checkout untouched.
    """
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    if (REPO / "README.md").exists():
        shutil.copy2(REPO / "README.md", dest / "README.md")
    for pkg in ("edgecond", "servers", "clients"):
        for src in (REPO / pkg).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            out = dest / src.relative_to(REPO)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    return dest


def _make_buffer(path: Path, ipc: int = 6) -> "object":
    sys.path.insert(0, str(REPO))
    from edgecond.buffer import MultisizeBuffer
    from edgecond.data import load_dataset

    ds = load_dataset("digits")
    x, y = ds.x_train.numpy(), ds.y_train.numpy()
    images = np.stack([x[y == k][:ipc] for k in range(ds.num_classes)])
    buf = MultisizeBuffer.from_class_major(images, class_names=ds.class_names, dataset="digits",
                                           mean=ds.mean, std=ds.std, method="random", dtype="uint8")
    buf.save(path)
    return MultisizeBuffer.load(path)


class ProcessTracker:
    """Remembers every process started here and every descendant seen; kills them all."""

    def __init__(self, match: list[str]):
        self.match = match  # cmdline fragments that identify our detached processes
        self.seen: dict[int, float] = {}  # pid -> create_time
        self.roots: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def popen(self, args, **kw) -> subprocess.Popen:
        p = subprocess.Popen([str(a) for a in args], start_new_session=True, **kw)
        self.roots.append(p)
        self._add(p.pid)
        return p

    def _add(self, pid: int) -> None:
        try:
            proc = psutil.Process(pid)
            self.seen.setdefault(pid, proc.create_time())
            for child in proc.children(recursive=True):
                self.seen.setdefault(child.pid, child.create_time())
        except psutil.Error:
            pass

    def scan(self) -> None:
        for p in self.roots:
            self._add(p.pid)
        for pid in list(self.seen):
            self._add(pid)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if any(m in cmd for m in self.match):
                self._add(proc.info["pid"])

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - a vanished process mid-scan
                pass

    def _alive(self) -> list:
        out = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                pass
        return out

    def kill_all(self, grace: float = 5.0) -> list:
        self._stop.set()
        self._thread.join(timeout=5)
        self.scan()
        for proc in self._alive():
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        deadline = time.monotonic() + grace
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in self._alive():
            try:
                proc.kill()
            except psutil.Error:
                pass
        for p in self.roots:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        return [(p.pid, " ".join(p.cmdline())[:120]) for p in self._alive()]


def _wait_http_ok(url: str, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _env(home: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "RAY_DEDUP_LOGS": "0",
    })
    env.update(extra or {})
    return env


def _run_config(**kw) -> str:
    parts = []
    for k, v in kw.items():
        key = k.replace("_", "-")
        parts.append(f'{key}="{v}"' if isinstance(v, str) else f"{key}={v}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# simulation (flwr run) with an injected crash
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flwr-sim")
    app = _stage_app(tmp / "app")
    buf = _make_buffer(tmp / "buffer.safetensors")
    out = tmp / "out"
    http_port, control_port = _free_ports(2)
    env = _env(tmp / "flwr-home", {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
                                    "FLWR_LOCAL_CONTROL_API_PORT": str(control_port)})
    run_config = _run_config(
        num_server_rounds=2, buffer_path=str(tmp / "buffer.safetensors"), output_dir=str(out),
        budget_trace="lognormal:median=2500B,sigma=0.6,seed=1", model_width=8, batch_size=64,
        fault_crash="1:2", query_timeout=60.0, round_timeout=90.0)
    tracker = ProcessTracker([f"127.0.0.1:{control_port}", f"127.0.0.1:{http_port}", str(tmp)])
    t0 = time.monotonic()
    try:
        proc = tracker.popen(
            [FLWR, "run", app, "--federation-config", "num-supernodes=3 client-resources-num-cpus=1",
             "--run-config", run_config, "--stream"],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            log, _ = proc.communicate(timeout=170)
        except subprocess.TimeoutExpired:
            log = "flwr run timed out"
        seconds = time.monotonic() - t0
    finally:
        leftovers = tracker.kill_all()
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
    return {"log": log, "seconds": seconds, "leftovers": leftovers, "metrics": metrics, "buffer": buf}


def test_simulation_runs_two_rounds_and_cleans_up(simulation):
    m = simulation["metrics"]
    assert m is not None, simulation["log"][-4000:]
    rounds = {r["round"]: r for r in m["rounds"]}
    assert {1, 2} <= set(rounds), simulation["log"][-4000:]
    assert "test-acc" in rounds[2]["metrics"]
    buf = simulation["buffer"].lean()  # clients receive lean slices (no provenance)
    for r in (1, 2):
        assert len(rounds[r]["clients"]) == 3
        for c in rounds[r]["clients"].values():
            assert c["payload_bytes"] <= c["budget"]
            if c["kind"] == "full":
                assert c["payload_bytes"] == buf.bytes_for(c["target"]) == buf.bytes_for(buf.largest_fitting(c["budget"]))
            elif c["kind"] == "delta":
                assert c["payload_bytes"] == buf.delta_bytes(c["have"], c["target"])
            else:
                assert c["payload_bytes"] == 0
    assert m["total_bytes"] == sum(r["bytes"] for r in m["rounds"])
    assert simulation["leftovers"] == [], simulation["leftovers"]
    print(f"simulation wall time {simulation['seconds']:.1f} s")
    assert simulation["seconds"] < 120, f"simulation took {simulation['seconds']:.0f} s (budget: 2 min)"


def test_client_crash_does_not_stop_the_run(simulation):
    m = simulation["metrics"]
    assert m is not None, simulation["log"][-4000:]
    rounds = {r["round"]: r for r in m["rounds"]}
    failed = rounds[2]["failed"]
    assert len(failed) == 1, rounds[2]
    (who, info), = failed.items()
    assert info["stage"] == "train" and "fault-crash" in info["reason"]
    assert who == "1"  # named by partition id, the id fault-crash="1:2" used
    assert set(rounds[1]["clients"]) == {"0", "1", "2"}
    assert "test-acc" in rounds[2]["metrics"]  # the round still aggregated and was evaluated
    assert "Received 2 results and 1 failures" in simulation["log"]


# --------------------------------------------------------------------------------------------
# loopback deployment: flower-superlink + 2 flower-supernode with --node-config budgets
# --------------------------------------------------------------------------------------------


def test_loopback_deployment(tmp_path):
    app = _stage_app(tmp_path / "app")
    buf = _make_buffer(tmp_path / "buffer.safetensors")
    out = tmp_path / "out"
    home = tmp_path / "flwr-home"
    home.mkdir()
    link_port, n0, n1 = _free_ports(3)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    env = _env(home)
    budgets = {0: 2000, 1: 3500}
    tracker = ProcessTracker([f"127.0.0.1:{link_port}", str(tmp_path)])
    logs = {}
    try:
        tracker.popen([SUPERLINK, "--insecure", "--isolation", "subprocess", "--host", "127.0.0.1",
                       "--port", link_port, "--disable-runtime-dependency-installation"],
                      cwd=tmp_path, env=env, stdout=open(tmp_path / "superlink.log", "w"),
                      stderr=subprocess.STDOUT)
        _wait_http_ok(f"http://127.0.0.1:{link_port}/health", timeout=60)
        for pid, port in ((0, n0), (1, n1)):
            node_config = f'partition-id={pid} num-partitions=2 budget-trace="constant:{budgets[pid]}B"'
            tracker.popen([SUPERNODE, "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                           "--host", "127.0.0.1", "--port", port, "--node-config", node_config,
                           "--max-retries", "20", "--max-wait-time", "120"],
                          cwd=tmp_path, env=env, stdout=open(tmp_path / f"supernode{pid}.log", "w"),
                          stderr=subprocess.STDOUT)
        run_config = _run_config(
            num_server_rounds=1, buffer_path=str(tmp_path / "buffer.safetensors"), output_dir=str(out),
            model_width=8, fraction_evaluate=0.0, num_partitions=2, query_timeout=90.0,
            round_timeout=120.0)
        proc = tracker.popen([FLWR, "run", app, "loopback", "--run-config", run_config, "--stream"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not (out / "final_model.safetensors").exists():
            if proc.poll() is not None and not (out / "metrics.json").exists():
                break
            time.sleep(1)
        logs["flwr"] = proc.stdout.read() if proc.poll() is not None else "(still running)"
    finally:
        leftovers = tracker.kill_all()
    assert (out / "metrics.json").exists(), (logs, (tmp_path / "superlink.log").read_text()[-3000:])
    m = json.loads((out / "metrics.json").read_text())
    r1 = next(r for r in m["rounds"] if r["round"] == 1)
    assert sorted(c["budget"] for c in r1["clients"].values()) == sorted(budgets.values())
    buf = buf.lean()  # clients receive lean slices (no provenance)
    for c in r1["clients"].values():
        n = buf.largest_fitting(c["budget"])
        assert c["kind"] == "full" and c["target"] == n
        assert c["payload_bytes"] == buf.bytes_for(n) <= c["budget"]
    assert leftovers == [], leftovers
