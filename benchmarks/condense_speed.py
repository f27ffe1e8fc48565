"""Benchmark: seconds per condensation step (IDC/MDC inner step, IDM/DM iteration), side by side.

What one *step* is (the unit a full run repeats; all of it is timed, nothing extrapolated):

* ``dm``, ``idm``: one outer iteration = a fresh (DM) or sampled (IDM) network, the image update
  of all classes, and IDM's queue training (``between_inner``). Run: 1 warm-up + ``--steps``.
* ``idc``, ``mdc`` (= IDC + the multisize hooks): one inner step = the image update of every
  class and the network's training on real data that follows it. One outer iteration with
  ``--steps + 2`` inner steps is run: the first is a warm-up, the last trains no network (the
  network is re-initialised next), so it is reported apart (``last_update_only``); a paper
  outer iteration = init + (M-1) full steps + one update-only step, and ``hours_for_paper_run``
  is computed that way.

Every measurement runs in a fresh process (peak RSS is per process: ``ru_maxrss``), one torch
thread, ``OMP_NUM_THREADS=MKL_NUM_THREADS=--threads``. Per step: CPU seconds
(``time.process_time``: the honest number on a shared machine) and wall seconds; on CUDA the
stamps synchronise, so wall = GPU seconds, and the peak GPU memory is reported. Runners are
interleaved: round r runs every runner once, in an order rotated by r; medians over rounds of
the per-round medians, and the spread (min..max over rounds).

Runners:

* ``edgecond``: this checkout;
* ``baseline`` (``--baseline-src DIR``): another edgecond source tree (e.g. ``git archive`` of
  an older commit), for before/after ratios in one run;
* ``reference`` (``--reference-dm DIR``): VICO-UoE/DatasetCondensation's ``main_DM.py`` (public
  code, fetched by you, run from its own folder, never copied here) on a CPU for ``dm``:
  ``--model ConvNet --ipc 10 --dsa_strategy color_crop_cutout_flip_scale_rotate --init real
  --lr_img 1 --batch_real 256`` = edgecond's ``dm`` paper preset (10 × 256 real images, 10
  synthetic per class, ConvNet-3 width 128 instance norm, one DSA op per step). Its CIFAR-10
  loader wants torchvision's pickled batches: they are rebuilt once from the image folder into
  ``--work-dir`` (a cache for the reference only; edgecond never reads it). One step = the time
  between consecutive network creations (``utils.get_network``, called once per iteration).

Writes ``condense_speed.json`` and ``condense_speed.md`` to ``--out``::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/condense_speed.py \\
        --dataset imagefolder:/work/data/cifar10 --methods dm --rounds 3 --steps 3 \\
        --baseline-src /tmp/edgecond-before --reference-dm /path/to/DatasetCondensation \\
        --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
METHODS = ("dm", "idm", "idc", "mdc")


# ------------------------------------------------------------------------------------------
# child: one measurement in a fresh process
# ------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class _Clock:
    """CPU / wall stamps; synchronises CUDA first so wall seconds are GPU seconds there."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def now(self) -> tuple[float, float]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.process_time(), time.perf_counter()


def _child_edgecond(spec: dict) -> dict:
    import torch

    from edgecond.condense import condense, condense_preset
    from edgecond.condense.engine import METHODS as REGISTRY
    from edgecond.data import load_dataset
    from edgecond.utils import resolve_device

    torch.set_num_threads(int(spec["threads"]))
    method, preset, steps = spec["method"], spec["preset"], int(spec["steps"])
    ds = load_dataset(spec["dataset"])
    base = "idc" if method == "mdc" else method
    over: dict = {"ipc": int(spec["ipc"]), "seed": int(spec.get("seed", 0))}
    # the one resolver; MDC's settings (Δt) are those of the full-length run
    full = condense_preset(base, preset, ds, ipc=over["ipc"], hooks="mdc" if method == "mdc" else "none")
    per_inner = base == "idc"
    if per_inner:
        over.update(iterations=1, inner_steps=steps + 2)
    else:
        over.update(iterations=steps + 1)
    if method == "mdc":
        over.update(hooks="mdc", hooks_config=dict(full.hooks_config))
    cfg = condense_preset(base, preset, ds, **over)
    device = resolve_device(spec["device"])
    clock = _Clock(str(device))
    cls = REGISTRY.get(base)
    stamps: list[tuple[str, float, float]] = []
    orig_begin, orig_between = cls.begin_outer, cls.between_inner

    def begin_outer(self, t):  # noqa: ANN001 - timing wrapper (this process only)
        stamps.append(("begin", *clock.now()))
        out = orig_begin(self, t)
        stamps.append(("ready", *clock.now()))
        return out

    def between_inner(self, step):  # noqa: ANN001
        out = orig_between(self, step)
        stamps.append(("inner", *clock.now()))
        return out

    cls.begin_outer, cls.between_inner = begin_outer, between_inner
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mb()
    try:
        condense(ds, cfg, device=device, progress=False)
    finally:
        cls.begin_outer, cls.between_inner = orig_begin, orig_between
    cpu, wall, last = [], [], None
    if per_inner:  # ready, inner_0, inner_1, ...: inner step i = inner_i - inner_{i-1}
        marks = [s for s in stamps if s[0] in ("ready", "inner")]
        steps_cw = [(b[1] - a[1], b[2] - a[2]) for a, b in zip(marks, marks[1:])]
        init = next(s for s in stamps if s[0] == "ready")[1:]
        begin = next(s for s in stamps if s[0] == "begin")[1:]
        init_cw = (init[0] - begin[0], init[1] - begin[1])
        last = steps_cw[-1]
        steps_cw = steps_cw[1:-1]  # drop the warm-up and the update-only last step
    else:  # begin_t .. inner_t (the whole iteration, model creation included)
        begins = [s for s in stamps if s[0] == "begin"]
        ends = [s for s in stamps if s[0] == "inner"]
        steps_cw = [(e[1] - b[1], e[2] - b[2]) for b, e in zip(begins, ends)][1:]
        init_cw = None
    cpu = [c for c, _ in steps_cw]
    wall = [w for _, w in steps_cw]
    out = {
        "cpu_s": cpu, "wall_s": wall, "peak_rss_mb": _rss_mb(), "rss_before_mb": rss_before,
        "inner_steps_paper": int(full.method_config.get("inner_steps", 1)) if per_inner else 1,
        "paper_iterations": int(full.iterations), "factor": int(cfg.factor),
        "batch_real": int(cfg.batch_real), "model_kwargs": dict(cfg.model_kwargs),
    }
    if per_inner:
        out["last_update_only_cpu_s"], out["last_update_only_wall_s"] = last
        out["outer_init_cpu_s"], out["outer_init_wall_s"] = init_cw
    if clock.cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _cifar_pickles(folder: str, work_dir: Path) -> Path:
    """torchvision's ``cifar-10-batches-py`` rebuilt from an image folder (for the reference only)."""
    import pickle

    import numpy as np
    from PIL import Image

    root = work_dir / "vico-data"
    target = root / "cifar-10-batches-py"
    if (target / "test_batch").exists():
        return root
    tmp = root / "cifar-10-batches-py.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    src = Path(folder)
    names = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())

    def split(name: str) -> tuple[np.ndarray, list[int]]:
        xs, ys = [], []
        for c, cname in enumerate(names):
            for f in sorted((src / name / cname).iterdir()):
                xs.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).reshape(-1))
                ys.append(c)
        return np.stack(xs), ys

    x, y = split("train")
    perm = np.random.default_rng(0).permutation(len(y))  # batches of mixed classes, as in the original
    x, y = x[perm], [y[i] for i in perm]
    n = len(y) // 5
    for b in range(5):
        with open(tmp / f"data_batch_{b + 1}", "wb") as fh:
            pickle.dump({"data": x[b * n:(b + 1) * n], "labels": y[b * n:(b + 1) * n]}, fh)
    xt, yt = split("test")
    with open(tmp / "test_batch", "wb") as fh:
        pickle.dump({"data": xt, "labels": yt}, fh)
    with open(tmp / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh)
    os.replace(tmp, target)
    return root


def _child_reference_dm(spec: dict) -> dict:
    """VICO's main_DM.py on a CPU: patch CUDA calls away, time its iterations from outside."""
    import runpy

    import torch

    torch.set_num_threads(int(spec["threads"]))
    ref = Path(spec["reference_dm"]).resolve()
    folder = spec["dataset"].split(":", 1)[1] if spec["dataset"].startswith("imagefolder:") else None
    if folder is None:
        raise SystemExit("the DM reference runs on CIFAR-10 only: pass --dataset imagefolder:<cifar10 folder>")
    work = Path(spec["work_dir"])
    data_root = _cifar_pickles(folder, work)
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tvd_cifar

    tvd.CIFAR10._check_integrity = lambda self: True  # rebuilt files: their md5 differs
    tvd_cifar.check_integrity = lambda *a, **k: True
    sys.path.insert(0, str(ref))
    import utils as ref_utils  # the reference's own module

    clock = _Clock("cpu")
    stamps: list[tuple[float, float]] = []
    rss_at: list[float] = []
    orig = ref_utils.get_network

    def get_network(*a, **k):  # noqa: ANN002
        stamps.append(clock.now())
        rss_at.append(_rss_mb())
        return orig(*a, **k)

    ref_utils.get_network = get_network
    steps = int(spec["steps"])
    save = work / "vico-save"
    save.mkdir(parents=True, exist_ok=True)
    sys.argv = ["main_DM.py", "--dataset", "CIFAR10", "--model", "ConvNet", "--ipc", str(spec["ipc"]),
                "--dsa_strategy", "color_crop_cutout_flip_scale_rotate", "--init", "real", "--lr_img", "1",
                "--batch_real", "256", "--eval_mode", "X", "--num_exp", "1", "--num_eval", "0",
                "--Iteration", str(steps + 2), "--data_path", str(data_root), "--save_path", str(save)]
    cwd = os.getcwd()
    os.chdir(ref)
    try:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(ref / "main_DM.py"), run_name="__main__")
    finally:
        os.chdir(cwd)
    # stamps at iterations 0..steps+2; 0->1 is the warm-up, (steps+1)->(steps+2) holds the final save
    d = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])][1:steps + 1]
    return {"cpu_s": [c for c, _ in d], "wall_s": [w for _, w in d], "peak_rss_mb": _rss_mb(),
            "rss_before_mb": rss_at[0] if rss_at else None, "inner_steps_paper": 1, "paper_iterations": 20000,
            "factor": 1, "batch_real": 256, "model_kwargs": {"width": 128, "depth": 3, "norm": "instance"}}


def child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    src = spec.get("src")
    if spec["runner"] != "reference":
        sys.path.insert(0, src or str(HERE.parents[1]))
        out = _child_edgecond(spec)
    else:
        out = _child_reference_dm(spec)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------------------------------
# parent: interleaved rounds, summary
# ------------------------------------------------------------------------------------------


def _run_child(spec: dict, threads: int, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("PYTHONPATH", None)  # the child puts exactly one edgecond tree on its path
    proc = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{spec['runner']} {spec['method']} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarise(rounds: list[dict]) -> dict:
    cpu = [_median(r["cpu_s"]) for r in rounds]
    wall = [_median(r["wall_s"]) for r in rounds]
    rss = [r["peak_rss_mb"] for r in rounds]
    out = {
        "rounds": len(rounds), "steps_per_round": len(rounds[0]["cpu_s"]),
        "cpu_s": _median(cpu), "cpu_s_min": min(cpu), "cpu_s_max": max(cpu),
        "wall_s": _median(wall), "wall_s_min": min(wall), "wall_s_max": max(wall),
        "peak_rss_mb": _median(rss), "peak_rss_mb_min": min(rss), "peak_rss_mb_max": max(rss),
        "rss_before_mb": _median([r["rss_before_mb"] for r in rounds if r.get("rss_before_mb") is not None]),
    }
    for key in ("last_update_only_cpu_s", "last_update_only_wall_s", "outer_init_cpu_s", "outer_init_wall_s",
                "peak_gpu_mb"):
        vals = [r[key] for r in rounds if key in r]
        if vals:
            out[key] = _median(vals)
    r0 = rounds[0]
    for key in ("inner_steps_paper", "paper_iterations", "factor", "batch_real", "model_kwargs"):
        out[key] = r0[key]
    if "last_update_only_wall_s" in out:  # a paper outer iteration: init + (M-1) full + 1 update-only
        m = out["inner_steps_paper"]
        outer = out["outer_init_wall_s"] + (m - 1) * out["wall_s"] + out["last_update_only_wall_s"]
    else:
        outer = out["wall_s"]
    out["wall_s_per_outer_iteration"] = outer
    out["hours_for_paper_run"] = outer * out["paper_iterations"] / 3600
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="digits", help="one dataset name (e.g. imagefolder:/work/data/cifar10)")
    ap.add_argument("--methods", default="dm,idm,idc,mdc")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="measured steps per round (after 1 warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each runner once per round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline-src", default=None, help="another edgecond source tree to compare against")
    ap.add_argument("--reference-dm", default=None, help="a checkout of VICO-UoE/DatasetCondensation (dm only)")
    ap.add_argument("--work-dir", default="/tmp/edgecond-speed", help="cache for the reference's data files")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child process")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="condense_speed", help="output file stem")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; expected some of {', '.join(METHODS)}")
    base = {"dataset": args.dataset, "preset": args.preset, "ipc": args.ipc, "steps": args.steps,
            "threads": args.threads, "device": args.device, "work_dir": args.work_dir}
    results: dict[str, dict[str, list[dict]]] = {}
    for method in methods:
        runners = [("edgecond", None)]
        if args.baseline_src:
            runners.append(("baseline", str(Path(args.baseline_src).resolve())))
        if args.reference_dm and method == "dm" and args.device == "cpu":
            runners.append(("reference", None))
        per = results.setdefault(method, {name: [] for name, _ in runners})
        for r in range(args.rounds):
            k = r % len(runners)
            for name, src in runners[k:] + runners[:k]:  # rotate the order every round
                spec = dict(base, method=method, runner=name, src=src, reference_dm=args.reference_dm)
                row = _run_child(spec, args.threads, args.timeout)
                per[name].append(row)
                print(json.dumps({"method": method, "runner": name, "round": r,
                                  "cpu_s": row["cpu_s"], "wall_s": row["wall_s"],
                                  "peak_rss_mb": round(row["peak_rss_mb"])}), flush=True)
    summary = {m: {name: summarise(rows) for name, rows in per.items()} for m, per in results.items()}
    for per in summary.values():
        for name, s in per.items():
            for other in ("reference", "baseline"):
                if other in per and other != name:
                    s[f"cpu_ratio_vs_{other}"] = s["cpu_s"] / per[other]["cpu_s"]
                    s[f"wall_ratio_vs_{other}"] = s["wall_s"] / per[other]["wall_s"]
                    s[f"rss_ratio_vs_{other}"] = s["peak_rss_mb"] / per[other]["peak_rss_mb"]
    env = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads,
           "device": args.device, "load_average_end": os.getloadavg(), "python": sys.version.split()[0]}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else " ".join(argv)
    (out / f"{args.name}.json").write_text(json.dumps(
        {"env": env, "args": vars(args), "summary": summary, "raw": results}, indent=2) + "\n")
    lines = [
        "# Condensation speed (seconds per step, medians over interleaved rounds)",
        "",
        f"`{cmd}` — {env['platform']}, {env['cpu_count']} CPUs, {args.threads} thread(s), device {args.device}, "
        f"load average at the end {env['load_average_end'][0]:.1f}. Step = DM/IDM iteration, IDC/MDC inner step "
        "(image update + network training). Spread = min..max of the per-round medians.",
        "",
        "| method | runner | rounds × steps | CPU s | spread | wall s | spread | peak RSS MB | vs reference CPU / wall / RSS | vs baseline CPU / wall / RSS | s / paper outer it. | h / paper run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, per in summary.items():
        for name, s in per.items():
            def ratios(vs: str) -> str:
                if f"cpu_ratio_vs_{vs}" not in s:
                    return ""
                return " / ".join(f"{s[f'{k}_ratio_vs_{vs}']:.2f}" for k in ("cpu", "wall", "rss"))
            lines.append(
                f"| {m} | {name} | {s['rounds']} × {s['steps_per_round']} | {s['cpu_s']:.2f} | "
                f"{s['cpu_s_min']:.2f}..{s['cpu_s_max']:.2f} | {s['wall_s']:.2f} | {s['wall_s_min']:.2f}..{s['wall_s_max']:.2f} | "
                f"{s['peak_rss_mb']:.0f} | {ratios('reference')} | {ratios('baseline')} | "
                f"{s['wall_s_per_outer_iteration']:.1f} | {s['hours_for_paper_run']:.1f} |"
            )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
