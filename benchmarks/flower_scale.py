"""Benchmark: the Flower simulation at scale — N simulated clients on Flower's Ray backend.

Runs ``flwr run`` on a staged copy of this app (pyproject + edgecond/servers/clients) against a
local simulation SuperLink configured in ``$FLWR_HOME/config.toml`` the documented way
(docs/federated.md, *Many clients*)::

    [superlink.sim]
    address = ":local:"
    options.num-supernodes = 100
    options.backend.client-resources.num-cpus = 1
    options.backend.client-resources.num-gpus = 0.0

and measures the wall time of the whole run (SuperLink start to the last round) and the memory of
every process it starts (SuperLink, the simulation runtime, Ray's raylet/GCS/workers), sampled
every 0.25 s with psutil: peak of the summed RSS, peak of the largest single process, and the
number of processes. Summed RSS counts memory that Ray workers share (torch's code pages,
Ray's object store) once per process, so it is an upper bound of what the machine used.

Writes ``flower_scale.json`` and ``flower_scale.md`` to ``--out``::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/flower_scale.py --supernodes 100 \\
        --rounds 2 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def stage_app(dest: Path) -> Path:
    """pyproject + the three packages' .py files (`flwr run` walks the app directory for its FAB)."""
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    for pkg in ("edgecond", "servers", "clients"):
        for src in (REPO / pkg).rglob("*.py"):
            if "__pycache__" not in src.parts:
                out = dest / src.relative_to(REPO)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out)
    return dest


def make_buffer(path: Path, ipc: int) -> None:
    """A small real-image buffer of digits (the benchmark measures Flower, not condensation)."""
    sys.path.insert(0, str(REPO))
    from edgecond.buffer import MultisizeBuffer
    from edgecond.data import load_dataset

    ds = load_dataset("digits")
    x, y = ds.x_train.numpy(), ds.y_train.numpy()
    images = np.stack([x[y == k][:ipc] for k in range(ds.num_classes)])
    MultisizeBuffer.from_class_major(images, class_names=ds.class_names, dataset="digits", mean=ds.mean,
                                     std=ds.std, method="random", dtype="uint8").save(path)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_superlink(env: dict, home: Path, http_port: int, control_port: int, timeout: float = 600) -> subprocess.Popen:
    """The local simulation SuperLink `flwr run` would start, started here with a long wait:
    `flwr run` gives it 15 s, which a loaded machine does not meet. `flwr run` finds it running
    (its /health answers) and uses it."""
    import urllib.request

    runtime = home / "local-superlink"
    runtime.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
           "--control-api-address", f"127.0.0.1:{control_port}", "--host", "127.0.0.1", "--port", str(http_port),
           "--log-file", str(runtime / "superlink.log"), "--database", str(runtime / "state.db")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not answer on port {http_port} within {timeout:.0f} s")


def flower_config(supernodes: int, num_cpus: float, num_gpus: float) -> str:
    return (
        '[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = ":local:"\n'
        f"options.num-supernodes = {supernodes}\n"
        f"options.backend.client-resources.num-cpus = {num_cpus:g}\n"
        f"options.backend.client-resources.num-gpus = {num_gpus:g}\n"
    )


class Meter:
    """Every process of the run (descendants of the root, and processes whose command line names
    one of ``match``), sampled every ``period`` s: peak summed RSS, peak single RSS."""

    def __init__(self, match: list[str], period: float = 0.25) -> None:
        self.match, self.period = match, period
        self.pids: dict[int, float] = {}
        self.peak_sum = self.peak_one = 0
        self.peak_procs = 0
        self.roots: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, proc: subprocess.Popen) -> None:
        self.roots.append(proc)
        self._thread.start()

    def _procs(self) -> list[psutil.Process]:
        for root in self.roots:
            self._add(root.pid)
        for p in psutil.process_iter(["pid", "cmdline"]):
            if any(m in " ".join(p.info.get("cmdline") or []) for m in self.match):
                self._add(p.info["pid"])
        for pid in list(self.pids):
            self._add(pid)
        alive = []
        for pid, created in self.pids.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        return alive

    def _add(self, pid: int) -> None:
        try:
            p = psutil.Process(pid)
            self.pids.setdefault(pid, p.create_time())
            for c in p.children(recursive=True):
                self.pids.setdefault(c.pid, c.create_time())
        except psutil.Error:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            rss = []
            for p in self._procs():
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            if rss:
                self.peak_sum = max(self.peak_sum, sum(rss))
                self.peak_one = max(self.peak_one, max(rss))
                self.peak_procs = max(self.peak_procs, len(rss))

    def kill_all(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        procs = self._procs()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        return len(procs)


def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="flower-scale-"))
    try:
        app = stage_app(tmp / "app")
        make_buffer(tmp / "buffer.safetensors", args.ipc)
        home = tmp / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(flower_config(args.supernodes, args.num_cpus, args.num_gpus))
        http_port, control_port = free_ports(2)
        env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
                   FLWR_DISABLE_UPDATE_CHECK="1", OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0",
                   FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
                   FLWR_LOCAL_CONTROL_API_PORT=str(control_port), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        run_config = " ".join([
            f"num-server-rounds={args.rounds}", f'buffer-path="{tmp / "buffer.safetensors"}"',
            f'output-dir="{tmp / "out"}"', f"model-width={args.model_width}", f"batch-size={args.batch_size}",
            f"local-epochs={args.local_epochs}", f"fraction-train={args.fraction}", f"fraction-evaluate={args.fraction}",
            f"min-available-nodes={args.supernodes}", 'budget-trace="lognormal:median=2500B,sigma=0.6,seed=1"',
            "query-timeout=600.0", "round-timeout=1800.0", f'partitioner="{args.partitioner}"',
            f"dirichlet-alpha={args.dirichlet_alpha}"])
        cmd = [str(BIN / "flwr"), "run", str(app), "sim", "--run-config", run_config, "--stream"]
        meter = Meter([f"127.0.0.1:{control_port}", f"127.0.0.1:{http_port}", str(tmp)])
        t0 = time.monotonic()
        link = start_superlink(env, home, http_port, control_port)
        meter.roots.append(link)
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        meter.start(proc)
        try:
            log, _ = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            log = "timed out"
        seconds = time.monotonic() - t0
        killed = meter.kill_all()
        metrics_path = tmp / "out" / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
        rounds = [r for r in (metrics["rounds"] if metrics else []) if r.get("round", 0) >= 1]
        return {
            "supernodes": args.supernodes, "rounds": args.rounds, "rounds_done": len(rounds),
            "round_summaries": [{"round": r.get("round"), "clients": len(r.get("clients", {})),
                                 "failed": r.get("failed", {}), "rejected": len(r.get("rejected", {})),
                                 "bytes": r.get("bytes"), "metrics": r.get("metrics")}
                                for r in (metrics["rounds"] if metrics else [])],
            "clients_per_round": [len(r.get("clients", {})) for r in rounds],
            "failures_per_round": [len(r.get("failed", {})) for r in rounds],
            "test_acc_last": (rounds[-1].get("metrics", {}).get("test-acc") if rounds else None),
            "wall_seconds": round(seconds, 1), "peak_rss_sum_bytes": meter.peak_sum,
            "peak_rss_largest_process_bytes": meter.peak_one, "peak_processes": meter.peak_procs,
            "processes_cleaned_up": killed, "federation_config": flower_config(args.supernodes, args.num_cpus,
                                                                               args.num_gpus),
            "run_config": run_config.replace(str(tmp), "$TMP"), "log_tail": log[-3000:],
        }
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def markdown(res: dict) -> str:
    gib = 1 << 30
    return "\n".join([
        f"# Flower simulation on Ray: {res['supernodes']} simulated clients",
        "",
        f"machine: {res['machine']}, load average before the run {res['load_before']}, after {res['load_after']}",
        "",
        "| supernodes | rounds done | clients per round | failures | wall s | peak RSS, all processes | "
        "peak RSS, largest process | processes |",
        "|---|---|---|---|---|---|---|---|",
        f"| {res['supernodes']} | {res['rounds_done']}/{res['rounds']} | {res['clients_per_round']} | "
        f"{res['failures_per_round']} | {res['wall_seconds']} | {res['peak_rss_sum_bytes'] / gib:.2f} GiB | "
        f"{res['peak_rss_largest_process_bytes'] / gib:.2f} GiB | {res['peak_processes']} |",
        "",
        "Federation (`$FLWR_HOME/config.toml`):",
        "",
        "```toml",
        res["federation_config"].rstrip(),
        "```",
        "",
        f"Run config: `{res['run_config']}`",
        "",
        "Summed RSS counts pages Ray workers share (torch's code, the object store) once per process: "
        "an upper bound.",
    ]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernodes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--num-cpus", type=float, default=1, help="options.backend.client-resources.num-cpus")
    ap.add_argument("--num-gpus", type=float, default=0.0, help="options.backend.client-resources.num-gpus")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction-train and fraction-evaluate")
    ap.add_argument("--model-width", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--ipc", type=int, default=6, help="images per class of the shipped buffer")
    ap.add_argument("--partitioner", choices=["iid", "dirichlet"], default="iid",
                    help="how the clients split their data (digits leaves ~11 examples per client at 100 clients: "
                         "a Dirichlet split with a small alpha cannot give every client examples)")
    ap.add_argument("--dirichlet-alpha", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) for inspection")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    load_before = [round(v, 2) for v in os.getloadavg()]
    res = run(args)
    res.update(machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / (1 << 30):.0f} GiB",
               load_before=load_before, load_after=[round(v, 2) for v in os.getloadavg()])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flower_scale.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "flower_scale.md").write_text(markdown(res))
    print(markdown(res))
    ok = res["rounds_done"] == args.rounds and not any(res["failures_per_round"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
