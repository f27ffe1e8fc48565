"""On-device training benchmark: the torch-free ONNX Runtime edge trainer vs torch on the CPU.

Measures, for one dataset and model:

1. **speed and memory**: seconds per training step and peak RSS of the edge trainer
   (``python -m clients.edge.train``, a fresh process, no torch) vs a torch CPU loop of the same
   model, initialisation, batch size and batches (a fresh process too), same thread count;
2. **bundle size vs budget**: ``edgecond deploy`` at several byte budgets: IPC chosen, bytes used;
3. **accuracy per slice size**: a bundle per IPC trained by the edge trainer, and by torch with the
   same init, batch order, augmentation draws and LR schedule (``torch.optim.AdamW``/``SGD``; ORT's
   AdamW applies eps after bias correction, so AdamW runs agree closely, not bit for bit).

The buffer is real training images drawn at random per class (``--buffer`` takes a condensed
one instead). Writes ``edge.json`` and ``edge.md`` to ``--out``.

    nice -n 10 python benchmarks/edge.py --dataset digits --model convnet --model-kwargs '{"width": 32}' \
        --sizes 1 5 10 20 50 --epochs 100 --threads 1 --out benchmarks/results/edge-digits
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------
# torch reference worker (run in its own process so its RSS is its own)
# ------------------------------------------------------------------------------------------


def torch_worker(bundle_dir: str, epochs: int, seed: int, threads: int, augment: bool) -> dict:
    """Train the bundle's model with torch exactly as the edge trainer schedules it."""
    import torch

    from clients.edge.train import (augment_batch, epoch_batches, load_eval_arrays, load_training_arrays, lr_at,
                                    normalize, peak_rss_bytes)
    from edgecond.deploy import read_manifest
    from edgecond.models import build_model

    torch.set_num_threads(int(threads))
    m = read_manifest(bundle_dir)
    training = m["training"]
    x, y = load_training_arrays(m)
    held = load_eval_arrays(m)
    info = m["model"]
    model = build_model(info["name"], tuple(m["image_shape"]), m["num_classes"], seed=info["seed"], **info["kwargs"])
    lr = float(training["lr"])
    if training["optimizer"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-6, weight_decay=5e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    aug = training["augment"]
    rng = np.random.default_rng(seed)
    batch = int(m["batch_size"])
    times, losses = [], []
    model.train()
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch, epochs, lr, training.get("schedule", "step"))
        ep = []
        for idx in epoch_batches(len(x), batch, rng):
            xb = x[idx]
            if augment:
                xb = augment_batch(xb, rng, crop_pad=int(aug["crop_pad"]), flip=bool(aug["flip"]))
            xb = torch.from_numpy(normalize(xb, m["mean"], m["std"]))
            yb = torch.from_numpy(y[idx])
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            ep.append(loss.item())
        losses.append(float(np.mean(ep)))
    acc = None
    if held is not None:
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(normalize(held[0], m["mean"], m["std"]))).argmax(1).numpy()
        acc = float((pred == held[1]).mean())
    rss = peak_rss_bytes()
    return {"seconds_per_step": float(np.mean(times[1:] if len(times) > 1 else times)),
            "seconds_per_step_median": float(np.median(times)), "steps": len(times),
            "peak_rss_bytes": int(rss), "accuracy": acc, "loss_per_epoch": losses}


# ------------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------------


def _env(threads: int) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))


def run_edge(bundle: Path, epochs: int, seed: int, threads: int, augment: bool) -> dict:
    cmd = [sys.executable, "-m", "clients.edge.train", str(bundle), "--epochs", str(epochs), "--seed", str(seed),
           "--threads", str(threads), "-q", "--no-save", "--augment" if augment else "--no-augment"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"edge trainer failed: {proc.stderr[-2000:]}")
    return json.loads((bundle / "metrics.json").read_text())


def run_torch(bundle: Path, epochs: int, seed: int, threads: int, augment: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", str(bundle), "--epochs", str(epochs),
           "--seed", str(seed), "--threads", str(threads)] + (["--augment"] if augment else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"torch worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_buffer(dataset: str, ipc: int, seed: int, path: Path, root: str | None) -> Path:
    from edgecond.buffer import MultisizeBuffer
    from edgecond.data import load_dataset

    data = load_dataset(dataset, root=root)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    rng = np.random.default_rng(seed)
    images = np.stack([x[rng.permutation(np.flatnonzero(y == c))[:ipc]] for c in range(data.num_classes)])
    buf = MultisizeBuffer.from_class_major(images, class_names=data.class_names, dataset=data.name,
                                           mean=data.mean, std=data.std, method="random-real",
                                           config={"seed": seed}, dtype="uint8")
    buf.save(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-worker", metavar="BUNDLE", help=argparse.SUPPRESS)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--buffer", default=None, help="use this buffer instead of random real images")
    p.add_argument("--model", default="convnet")
    p.add_argument("--model-kwargs", default='{"width": 32}')
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10, 20, 50])
    p.add_argument("--budgets", nargs="+", default=None, help="byte budgets for the size table")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--speed-epochs", type=int, default=5)
    p.add_argument("--speed-repeats", type=int, default=3, help="alternating repeats; the fastest is kept")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="(worker) augment")
    p.add_argument("--no-augment", action="store_true", help="train without crop/flip")
    p.add_argument("--out", default="benchmarks/results/edge")
    args = p.parse_args(argv)

    if args.torch_worker:
        print(json.dumps(torch_worker(args.torch_worker, args.epochs, args.seed, args.threads, args.augment)))
        return 0

    from edgecond.buffer import MultisizeBuffer
    from edgecond.deploy import DeployConfig, deploy
    from edgecond.units import format_bytes, parse_bytes

    kwargs = json.loads(args.model_kwargs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    augment = not args.no_augment
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    t_all = time.perf_counter()
    try:
        src = Path(args.buffer) if args.buffer else make_buffer(args.dataset, max(args.sizes), args.seed,
                                                                work / "buffer.safetensors", args.data_root)
        full = MultisizeBuffer.load(src)
        sizes = [n for n in args.sizes if n <= full.ipc]
        base = dict(model=args.model, model_kwargs=kwargs, batch_size=args.batch, optimizer=args.optimizer,
                    seed=args.seed, dataset_root=args.data_root)

        # 1. speed / memory on the largest size
        n_speed = max(sizes)
        speed_bundle = work / "speed"
        deploy(src, speed_bundle, DeployConfig(max_bytes=10**12, check=True, **base))
        # alternate the two trainers and keep each one's fastest repeat: the machine is shared
        edges, torches = [], []
        for _ in range(args.speed_repeats):
            edges.append(run_edge(speed_bundle, args.speed_epochs, args.seed, args.threads, augment))
            torches.append(run_torch(speed_bundle, args.speed_epochs, args.seed, args.threads, augment))
        edge = min(edges, key=lambda r: r["seconds_per_step_median"])
        torch_r = min(torches, key=lambda r: r["seconds_per_step_median"])
        speed = {"ipc": n_speed, "train_images": edge["train_images"], "batch_size": args.batch,
                 "threads": args.threads, "steps": edge["steps"], "repeats": args.speed_repeats,
                 "edge": {k: edge[k] for k in ("seconds_per_step", "seconds_per_step_median", "first_step_seconds",
                                               "peak_rss_bytes", "torch_imported")},
                 "torch": {k: torch_r[k] for k in ("seconds_per_step", "seconds_per_step_median", "peak_rss_bytes")},
                 "edge_medians": [r["seconds_per_step_median"] for r in edges],
                 "torch_medians": [r["seconds_per_step_median"] for r in torches]}
        print(f"speed (best of {args.speed_repeats}): edge {edge['seconds_per_step'] * 1e3:.2f} ms/step, {edge['peak_rss_bytes'] / 2**20:.0f} MiB; "
              f"torch {torch_r['seconds_per_step'] * 1e3:.2f} ms/step, {torch_r['peak_rss_bytes'] / 2**20:.0f} MiB",
              flush=True)
        artifact_bytes = sum(v for k, v in
                             json.loads((speed_bundle / "manifest.json").read_text())["bytes"].items()
                             if k in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"))

        # 2. bundle size vs budget
        budgets = [parse_bytes(b) for b in args.budgets] if args.budgets else [
            artifact_bytes + full.bytes_for(max(1, n), provenance=False) + 2048 for n in sorted({1, *sizes})]
        size_rows = []
        for i, budget in enumerate(budgets):
            try:
                r = deploy(src, work / f"budget{i}", DeployConfig(max_bytes=budget, check=False, **base))
                size_rows.append({"budget": budget, "ipc": r.ipc, "bytes": r.total_bytes,
                                  "buffer_bytes": r.files["buffer.safetensors"], "used": r.total_bytes / budget})
            except Exception as exc:  # a budget below the artifacts: report it
                size_rows.append({"budget": budget, "ipc": 0, "bytes": 0, "error": type(exc).__name__})
            shutil.rmtree(work / f"budget{i}", ignore_errors=True)

        # 3. accuracy per size
        acc_rows = []
        for n in sizes:
            sliced = work / f"slice{n}.safetensors"
            full.slice_to(sliced, n, provenance=False)
            b = work / f"acc{n}"
            deploy(sliced, b, DeployConfig(max_bytes=10**12, check=False, eval_samples=args.eval_samples,
                                           eval_dataset=args.dataset, **base))
            e = run_edge(b, args.epochs, args.seed, args.threads, augment)
            t = run_torch(b, args.epochs, args.seed, args.threads, augment)
            acc_rows.append({"ipc": n, "train_images": e["train_images"], "steps": e["steps"],
                             "edge_accuracy": e["accuracy"], "torch_accuracy": t["accuracy"],
                             "edge_seconds": e["train_seconds"], "edge_final_loss": e["final_loss"],
                             "torch_final_loss": t["loss_per_epoch"][-1]})
            print(f"ipc {n}: edge {e['accuracy']:.4f} torch {t['accuracy']:.4f}", flush=True)
            shutil.rmtree(b, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {"dataset": args.dataset, "model": args.model, "model_kwargs": kwargs, "optimizer": args.optimizer,
              "epochs": args.epochs, "augment": augment, "seed": args.seed, "eval_samples": args.eval_samples,
              "buffer": str(args.buffer or "random real images (uint8)"), "artifact_bytes": artifact_bytes,
              "speed": speed, "budgets": size_rows, "accuracy": acc_rows,
              "host": {"machine": platform.machine(), "python": platform.python_version(),
                       "cpus": os.cpu_count(), "note": "shared 2-core machine, timings under contention"},
              "seconds": time.perf_counter() - t_all}
    (out / "edge.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Edge trainer benchmark: {args.dataset}, {args.model} {json.dumps(kwargs)}, {args.optimizer}",
          "", f"Command: `python benchmarks/edge.py {shlex.join(argv or sys.argv[1:])}`", "",
          f"## Speed and memory (IPC {n_speed}, batch {args.batch}, {args.threads} thread(s), "
          f"{speed['steps']} steps, fastest of {args.speed_repeats} alternating runs each)", "",
          "| trainer | ms/step (mean) | ms/step (median) | peak RSS |", "|---|---|---|---|",
          f"| edge (ORT, no torch) | {speed['edge']['seconds_per_step'] * 1e3:.2f} | "
          f"{speed['edge']['seconds_per_step_median'] * 1e3:.2f} | {format_bytes(speed['edge']['peak_rss_bytes'])} |",
          f"| torch CPU | {speed['torch']['seconds_per_step'] * 1e3:.2f} | "
          f"{speed['torch']['seconds_per_step_median'] * 1e3:.2f} | {format_bytes(speed['torch']['peak_rss_bytes'])} |",
          "", f"## Bundle size vs budget (artifacts {format_bytes(artifact_bytes)})", "",
          "| budget | IPC | bundle bytes | used |", "|---|---|---|---|"]
    for r in size_rows:
        md.append(f"| {r['budget']} | {r['ipc']} | {r['bytes']} | {r.get('used', 0) * 100:.1f}% |")
    md += ["", f"## Accuracy per slice ({args.epochs} epochs, {args.eval_samples} held-out test images)", "",
           "| IPC | train images | steps | edge acc | torch acc |", "|---|---|---|---|---|"]
    for r in acc_rows:
        md.append(f"| {r['ipc']} | {r['train_images']} | {r['steps']} | {r['edge_accuracy'] * 100:.2f}% | "
                  f"{r['torch_accuracy'] * 100:.2f}% |")
    (out / "edge.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'edge.json'} and {out / 'edge.md'} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
