"""Cross-evaluation against the reference IDC code at an equal, truncated budget.

Condenses CIFAR-10 (IPC 1, f = 2, the ``paper`` preset) with edgecond and with the reference
IDC implementation (snu-mllab/Efficient-Dataset-Condensation, run *outside* this tree from a
checkout you fetch yourself; no code of it is copied here), then evaluates every result with
*both* evaluators, so that a gap is placed in the condensation or in the evaluation.

Arms (all start from the **same initial images**: the reference's default ``--init random``,
i.e. the first training image of every class, stored whole, so a gain over the initialisation
is comparable between codes):

* ``init``          the initial images, not condensed;
* ``ref``           the reference ``condense.py --reproduce -d cifar10 -f 2 --ipc 1``, budget B;
* ``ec``            edgecond ``idc`` ``paper`` preset (image SGD in pixel space), budget B;
* ``ec-normalized`` the same with ``lr_img_space="normalized"`` (edgecond before the fix);
* ``ec-mosaic``     edgecond's own initialisation (4 downsampled real images per stored image).

Evaluators: ``edgecond`` (``eval_preset("quick")``: 300 epochs, ConvNet-3, DSA + CutMix) and
``reference`` (the reference's ``train.train`` with its CIFAR defaults: 300 epochs, DSA + CutMix;
reported: last-epoch test accuracy).

Reference checkout, once::

    git clone https://github.com/snu-mllab/Efficient-Dataset-Condensation /work/ref/idc  # commit ceac95a
    python benchmarks/reference_parity.py prepare --ref-dir /work/ref/idc --dataset imagefolder:PATH

``prepare`` applies the CPU patches listed in ``REF_PATCHES`` (text substitutions in that
checkout: device strings, ``np.int``, the logging interval, the unused validation workers, an
outer-iteration override for truncated budgets) and writes torchvision-format CIFAR-10 batches
(``cifar-10-batches-py``) rebuilt from ``PATH`` under ``--ref-dir/data``.

Then::

    nice -n 5 python benchmarks/reference_parity.py run --ref-dir /work/ref/idc \\
        --dataset imagefolder:PATH --budget 50 --seeds 1,2 --eval-seeds 0,1 --threads 1 \\
        --out benchmarks/results/reference_parity-cifar10-ipc1

The per-step measurement that located the cause (one inner step, same initial images; mean abs
Δpixel of each code; appended to ``OUT/step_probe.jsonl``)::

    python benchmarks/reference_parity.py step --ref-dir /work/ref/idc --seeds 0,1 --space normalized
    python benchmarks/reference_parity.py step --ref-dir /work/ref/idc --seeds 0,1 --space pixel

Every finished step of ``run`` is appended to ``OUT/records.jsonl`` (a rerun skips what is done);
``OUT/reference_parity.json`` and ``.md`` summarise: arm, budget, evaluator, seeds, mean ± std
(over condensation seeds × evaluation seeds), mean |Δ pixel| from the initialisation, seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle  # only to WRITE the reference's own CIFAR-10 input format (never loaded here)
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARMS = ("init", "ref", "ec", "ec-normalized", "ec-mosaic")
EVALUATORS = ("edgecond", "reference")

# (file, old, new): the CPU patches of reference-code.md, as plain text substitutions.
REF_PATCHES = [
    ("misc/utils.py", "np.int(", "int("),
    ("condense.py", "it_log = n_iter // 50", "it_log = max(1, n_iter // 50)"),
    ("condense.py", "n_iter = args.niter * 100 // args.inner_loop",
     "n_iter = int(os.environ.get('REF_N_OUTER', args.niter * 100 // args.inner_loop))"),
    ("condense.py", "persistent_workers=True,\n                                       num_workers=4)",
     "persistent_workers=False,\n                                       num_workers=0)"),
]
REF_DEVICE_FILES = ["condense.py", "data.py", "train.py", "test.py", "coreset.py", "misc/utils.py",
                    "models/resnet.py", "models/resnet_ap.py"]


# ------------------------------------------------------------------------------------------
# reference side (runs inside a subprocess with the reference checkout on sys.path)
# ------------------------------------------------------------------------------------------


def _ref_env(ref_dir: Path) -> None:
    """Make the reference importable on a CPU: .cuda() no-ops, an efficientnet stub, no md5."""
    import types

    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.manual_seed = lambda *a, **k: None
    sys.modules.setdefault("efficientnet_pytorch", types.SimpleNamespace(EfficientNet=object))
    import torchvision.datasets as tvd

    import torchvision.datasets.cifar as tvc

    tvd.CIFAR10._check_integrity = lambda self: True  # the rebuilt batches differ from the originals' md5
    tvc.check_integrity = lambda *a, **k: True
    sys.path.insert(0, str(ref_dir))


def prepare(ref_dir: Path, dataset: str) -> None:
    for rel in REF_DEVICE_FILES:
        p = ref_dir / rel
        if p.is_file():
            p.write_text(p.read_text().replace("'cuda'", "'cpu'"))
    for rel, old, new in REF_PATCHES:
        p = ref_dir / rel
        s = p.read_text()
        if new not in s:
            if old not in s:
                raise SystemExit(f"{p}: expected text not found (another commit?): {old!r}")
            p.write_text(s.replace(old, new))
    from edgecond.data import load_dataset

    ds = load_dataset(dataset)
    out = ref_dir / "data" / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)

    def u8(x):
        return np.rint(x.numpy() * 255).clip(0, 255).astype(np.uint8).reshape(len(x), -1)

    xtr, ytr = u8(ds.x_train), ds.y_train.numpy().tolist()
    for b, part in enumerate(np.array_split(np.arange(len(ytr)), 5)):
        with open(out / f"data_batch_{b + 1}", "wb") as fh:
            pickle.dump({"data": xtr[part], "labels": [ytr[i] for i in part]}, fh)
    with open(out / "test_batch", "wb") as fh:
        pickle.dump({"data": u8(ds.x_test), "labels": ds.y_test.numpy().tolist()}, fh)
    with open(out / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(ds.class_names)}, fh)
    print(f"patched {ref_dir}; wrote {out} ({len(ytr)} train, {len(ds.y_test)} test)")


def _ref_condense(ref_dir: Path, work: Path, budget: int, seed: int, out_file: Path) -> None:
    """The reference's condense.py main, truncated to ``budget`` inner steps (one outer iteration
    when budget <= 100, else budget/100 outer iterations of 100)."""
    import runpy

    import torch

    _ref_env(ref_dir)
    inner = min(budget, 100)
    os.environ["REF_N_OUTER"] = str(max(1, budget // inner))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    sys.argv = ["condense.py", "--reproduce", "-d", "cifar10", "-f", "2", "--ipc", "1", "--test",
                "--inner_loop", str(inner), "--seed", str(seed), "--data_dir", str(ref_dir / "data")]
    runpy.run_path(str(ref_dir / "condense.py"), run_name="__main__")
    data, target = torch.load(work / "results" / "test" / "data.pt")
    _save_images(out_file, data.reshape(10, -1, *data.shape[1:]).float())


def _ref_init(ref_dir: Path, work: Path, out_file: Path) -> None:
    """The reference's own initial images for ``-f 2 --ipc 1`` (its argument.py switches to
    ``--init mix`` whenever f > 1): made by its Synthesizer.init from its class loader."""
    import torch
    import torchvision

    _ref_env(ref_dir)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    sys.argv = ["condense.py", "--reproduce", "-d", "cifar10", "-f", "2", "--ipc", "1", "--test",
                "--data_dir", str(ref_dir / "data")]
    from argument import args
    from condense import Synthesizer
    from data import ClassMemDataLoader

    train = torchvision.datasets.CIFAR10(str(ref_dir / "data"), train=True,
                                         transform=torchvision.transforms.ToTensor())
    train.nclass = 10
    loader = ClassMemDataLoader(train, batch_size=args.batch_real)
    syn = Synthesizer(args, 10, 3, 32, 32, device="cpu")
    syn.init(loader, init_type=args.init)
    print("init type", args.init)
    _save_images(out_file, syn.data.detach().reshape(10, 1, 3, 32, 32))


def _ref_eval(ref_dir: Path, work: Path, images_file: Path, seed: int, epochs: int) -> float:
    """The reference's evaluation of stored images (its test.py path, 300 epochs on CIFAR-10)."""
    import torch
    import torchvision

    _ref_env(ref_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(exist_ok=True)
    os.chdir(work)
    sys.argv = ["test.py", "-d", "cifar10", "--ipc", "1", "-f", "2", "--data_dir", str(ref_dir / "data")]
    from argument import args  # the reference's own defaults for this dataset

    args.epochs = epochs  # 300 for CIFAR-10 by default in its argument.py
    from data import MultiEpochsDataLoader, TensorDataset, transform_cifar
    from test import decode
    from train import define_model, train

    images = _load_images(images_file)
    k, n = images.shape[:2]
    data = images.reshape(k * n, *images.shape[2:])
    target = torch.arange(k).repeat_interleave(n)
    data, target = decode(args, data, target)
    train_tf, test_tf = transform_cifar(augment=args.augment, from_tensor=True)
    train_loader = MultiEpochsDataLoader(TensorDataset(data, target, train_tf), batch_size=args.batch_size,
                                         shuffle=True, num_workers=0, persistent_workers=False)
    val = torchvision.datasets.CIFAR10(str(ref_dir / "data"), train=False,
                                       transform=torchvision.transforms.Compose(
                                           [torchvision.transforms.ToTensor(), test_tf]))
    val_loader = MultiEpochsDataLoader(val, batch_size=args.batch_size // 2, shuffle=False, num_workers=0,
                                       persistent_workers=False)
    args.epoch_print_freq = args.epochs  # test once, at the end (its test_data() tests 4 times)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = define_model(args, 10)
    _best, last = train(args, model, train_loader, val_loader, logger=print)
    return float(last) / 100.0


def step_probe(ref_dir: Path, dataset: str, steps: int, seeds: list[int], space: str) -> list[dict]:
    """How far one (or ``steps``) inner step(s) move the images in each code, from the same
    initial images, on a fresh ConvNet-3 with no network training in between: the reference's
    Synthesizer / matchloss / diffaug / define_model called in-process vs ``edgecond.condense``."""
    from types import SimpleNamespace

    import torch

    from edgecond.condense import condense, condense_preset
    from edgecond.condense.engine import initial_images
    from edgecond.data import load_dataset

    _ref_env(ref_dir)
    import condense as ref  # the reference's condense.py (module import: its __main__ does not run)
    from train import define_model

    ds = load_dataset(dataset)
    cls_idx = ds.class_indices()
    init = initial_images(ds, 1, 2, seed=0)
    rargs = SimpleNamespace(ipc=1, factor=2, decode_type="single", dataset="cifar10", aug_type="color_crop_cutout",
                            mixup_net="cut", match="grad", metric="mse", bias=False, fc=False, net_type="convnet",
                            depth=3, width=1.0, norm_type="instance", nch=3, size=32)
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        syn = ref.Synthesizer(rargs, 10, 3, 32, 32, device="cpu")
        syn.data.data = init.reshape(10, 3, 32, 32).clone()
        aug, _ = ref.diffaug(rargs, device="cpu")
        model = define_model(rargs, 10)
        model.train()
        opt = torch.optim.SGD(syn.parameters(), lr=5e-4, momentum=0.5)  # --reproduce, IPC 1
        gen = torch.Generator().manual_seed(seed)
        ref_losses = []
        for _ in range(steps):
            for c in range(10):
                idx = cls_idx[c][torch.randperm(len(cls_idx[c]), generator=gen)[:64]]
                img, lab = ds.x_train[idx], torch.full((64,), c, dtype=torch.long)
                img_syn, lab_syn = syn.sample(c, max_size=128)
                img_aug = aug(torch.cat([img, img_syn]))
                loss = ref.matchloss(rargs, img_aug[:64], img_aug[64:], lab, lab_syn, model)
                ref_losses.append(loss.item())
                opt.zero_grad()
                loss.backward()
                opt.step()
        d_ref = float((syn.data.detach().reshape(10, 1, 3, 32, 32) - init).abs().mean())
        cfg = condense_preset("idc", "paper", "cifar10", ipc=1, iterations=1, inner_steps=steps, seed=seed,
                              dtype="float32", lr_img_space=space)
        res = condense(ds, cfg, init_images=init, progress=False)
        d_ec = float((res.images - init).abs().mean())
        rows.append({"seed": seed, "steps": steps, "lr_img_space": space, "ref_dpix": d_ref, "ec_dpix": d_ec,
                     "ratio_ref_over_ec": d_ref / d_ec, "ref_loss": float(np.mean(ref_losses)),
                     "ec_loss": float(res.history["loss"][0])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# edgecond side
# ------------------------------------------------------------------------------------------


def _save_images(path: Path, images) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": images.contiguous().float()}, str(path))


def _load_images(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path))["images"]


def _ec_condense(ds, arm: str, budget: int, seed: int, init_file: Path, out_file: Path) -> None:
    from edgecond.condense import condense, condense_preset

    inner = min(budget, 100)
    over = dict(ipc=1, factor=2, iterations=max(1, budget // inner), inner_steps=inner, seed=seed,
                dtype="float32")
    if arm == "ec-normalized":
        over["lr_img_space"] = "normalized"
    cfg = condense_preset("idc", "paper", "cifar10", **over)
    init = None if arm == "ec-mosaic" else _load_images(init_file)
    res = condense(ds, cfg, init_images=init, progress=False)
    _save_images(out_file, res.images)


def _ec_eval(ds, images_file: Path, seed: int, epochs: int) -> float:
    import torch

    from edgecond.evaluate import eval_preset, train_and_test
    from edgecond.formation import decode_torch

    images = _load_images(images_file).clamp(0, 1)  # what a buffer stores
    k, n = images.shape[:2]
    x = torch.cat([decode_torch(images[c], 2) for c in range(k)])
    y = torch.arange(k).repeat_interleave(len(x) // k)
    return float(train_and_test(x, y, ds, eval_preset("quick", epochs=epochs), seed=seed))


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------


def _done(records_path: Path) -> dict:
    out = {}
    if records_path.is_file():
        for line in records_path.read_text().splitlines():
            r = json.loads(line)
            out[r["key"]] = r
    return out


def _append(records_path: Path, rec: dict) -> None:
    with open(records_path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def _sub(args, *extra, script: str | None = None, flags: tuple = ()) -> None:
    """Run a reference step in a fresh process (its modules parse argv and patch torch): this
    script (or ``script``) with ``extra``, ``flags`` and the shared ``--ref-dir``/``--threads``."""
    cmd = [sys.executable, str(Path(script or __file__).resolve()), *extra, *flags, "--ref-dir", str(args.ref_dir),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    log = Path(args.work) / "logs"
    log.mkdir(parents=True, exist_ok=True)
    name = "_".join(str(e).replace("/", "-") for e in extra[:4])[-120:]
    with open(log / f"{name}.log", "w") as fh:
        subprocess.run(cmd, check=True, env=env, stdout=fh, stderr=subprocess.STDOUT)


def run(args) -> None:
    import torch

    from edgecond.data import load_dataset

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    imgs = work / "images"
    records = out / "records.jsonl"
    done = _done(records)
    ds = load_dataset(args.dataset)
    arms = [a.strip() for a in args.arms.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    evaluators = [e.strip() for e in args.evaluators.split(",")]
    init_file = imgs / "init.safetensors"
    if not init_file.is_file():
        _sub(args, "_ref-init", "--file", str(init_file), "--work", str(work / "ref-init"))
    init = _load_images(init_file)

    def evaluate(arm: str, s: int, f: Path, evs: list[str]) -> None:
        for ev in evs:
            if ev not in EVALUATORS:  # e.g. --evaluators none: condense and measure Δpixel only
                continue
            for es in eval_seeds:
                key = f"eval/{ev}/{arm}/b{0 if arm == 'init' else args.budget}/s{s}/e{es}"
                if key in done or (ev == "reference" and arm in args.skip_ref_eval.split(",")):
                    continue
                t0 = time.perf_counter()
                if ev == "edgecond":
                    acc = _ec_eval(ds, f, es, args.eval_epochs)
                else:
                    res = work / "evals" / f"{key.replace('/', '_')}.json"
                    if not res.is_file():  # (a finished subprocess of an interrupted run counts)
                        _sub(args, "_ref-eval", "--file", str(f), "--seed", str(es), "--result", str(res),
                             "--eval-epochs", str(args.eval_epochs), "--work", str(work / "ref-eval"))
                    acc = json.loads(res.read_text())["acc"]
                secs = round(time.perf_counter() - t0, 1)
                if ev == "reference" and secs < 1.0:  # reused: an interrupted run's subprocess finished it
                    secs = None
                rec = {"key": key, "kind": "eval", "evaluator": ev, "arm": arm,
                       "budget": 0 if arm == "init" else args.budget,
                       "seed": s, "eval_seed": es, "acc": acc, "seconds": secs}
                _append(records, rec)
                done[key] = rec
                report(out, quiet=True)

    # seed-major with the first evaluator; the other evaluators afterwards (slowest last)
    if "init" in arms:
        evaluate("init", 0, init_file, evaluators[:1])
    results = [("init", 0, init_file)] if "init" in arms else []
    for s in seeds:
        for arm in arms:
            if arm == "init":
                continue
            f = imgs / f"{arm}-b{args.budget}-s{s}.safetensors"
            key = f"condense/{arm}/b{args.budget}/s{s}"
            if key not in done:
                t0 = time.perf_counter()
                if arm == "ref":
                    _sub(args, "_ref-condense", "--file", str(f), "--budget", str(args.budget), "--seed", str(s),
                         "--work", str(work / f"ref-run-s{s}"))
                else:
                    _ec_condense(ds, arm, args.budget, s, init_file, f)
                x = _load_images(f)
                rec = {"key": key, "kind": "condense", "arm": arm, "budget": args.budget, "seed": s,
                       "seconds": round(time.perf_counter() - t0, 1),
                       "dpix": None if arm == "ec-mosaic" else float((x.clamp(0, 1) - init).abs().mean()),
                       "out_of_range": float(((x < 0) | (x > 1)).float().mean())}
                _append(records, rec)
                done[key] = rec
            evaluate(arm, s, f, evaluators[:1])
            results.append((arm, s, f))
    for arm, s, f in results:
        evaluate(arm, s, f, evaluators[1:])
    report(out)


def report(out: Path, quiet: bool = False) -> None:
    recs = list(_done(out / "records.jsonl").values())
    rows = []
    cond = [r for r in recs if r["kind"] == "condense"]
    for ev in EVALUATORS:
        for arm in ARMS:
            accs = [r["acc"] for r in recs if r["kind"] == "eval" and r["evaluator"] == ev and r["arm"] == arm]
            if not accs:
                continue
            rs = [r for r in recs if r["kind"] == "eval" and r["evaluator"] == ev and r["arm"] == arm]
            cs = [r for r in cond if r["arm"] == arm]
            dp = [r["dpix"] for r in cs if r.get("dpix") is not None]
            rows.append({
                "evaluator": ev, "arm": arm, "budget": rs[0]["budget"] if arm != "init" else 0,
                "condense_seeds": sorted({r["seed"] for r in rs}), "eval_seeds": sorted({r["eval_seed"] for r in rs}),
                "n": len(accs), "mean": float(np.mean(accs)), "std": float(np.std(accs)), "accuracies": accs,
                "dpix": float(np.mean(dp)) if dp else None,
                "condense_seconds": float(np.mean([r["seconds"] for r in cs])) if cs else None,
                "eval_seconds": (float(np.mean([r["seconds"] for r in rs if r["seconds"] is not None]))
                                 if any(r["seconds"] is not None for r in rs) else None),
            })
    (out / "reference_parity.json").write_text(json.dumps({"rows": rows, "records": recs}, indent=1))
    lines = ["| evaluator | arm | inner steps | seeds (cond × eval) | accuracy % | Δ vs init | mean abs Δpixel | condense s | eval s |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    base = {r["evaluator"]: r["mean"] for r in rows if r["arm"] == "init"}
    for r in rows:
        gain = "" if r["arm"] == "init" or r["evaluator"] not in base else f"{100 * (r['mean'] - base[r['evaluator']]):+.2f}"
        if r["arm"] == "ec-mosaic":
            gain += " (own init)"
        dpix = "" if r["dpix"] is None else f"{r['dpix']:.4f}"
        secs = "" if r["condense_seconds"] is None else f"{r['condense_seconds']:.0f}"
        lines.append(f"| {r['evaluator']} | {r['arm']} | {r['budget']} | {r['condense_seeds']} × {r['eval_seeds']} | "
                     f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {gain} | {dpix} | {secs} | "
                     f"{'' if r['eval_seconds'] is None else format(r['eval_seconds'], '.0f')} |")
    moves = ["| arm | inner steps | seed | mean abs Δpixel from init | values outside [0, 1] | condense s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in sorted(cond, key=lambda r: (r["budget"], r["seed"], ARMS.index(r["arm"]))):
        dp = "" if r.get("dpix") is None else f"{r['dpix']:.5f}"
        moves.append(f"| {r['arm']} | {r['budget']} | {r['seed']} | {dp} | {100 * r['out_of_range']:.2f} % | "
                     f"{r['seconds']:.0f} |")
    (out / "reference_parity.md").write_text(
        "# Reference parity: CIFAR-10 IDC, IPC 1, f = 2 (see benchmarks/reference_parity.py)\n\n"
        + "\n".join(lines) + "\n\n## Image movement (every condensation)\n\n" + "\n".join(moves) + "\n")
    if not quiet:
        print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["prepare", "run", "report", "step", "_ref-condense", "_ref-init", "_ref-eval"])
    p.add_argument("--ref-dir", type=Path, default=Path("/work/ref/idc"))
    p.add_argument("--dataset", default="imagefolder:/work/data/cifar10")
    p.add_argument("--budget", type=int, default=200, help="inner steps (one outer iteration = 100)")
    p.add_argument("--seeds", default="1,2", help="condensation seeds (the reference seeds only when > 0)")
    p.add_argument("--eval-seeds", default="0,1")
    p.add_argument("--arms", default="init,ref,ec,ec-normalized")
    p.add_argument("--evaluators", default="edgecond,reference")
    p.add_argument("--eval-epochs", type=int, default=300, help="both evaluators (300 = each one's default)")
    p.add_argument("--skip-ref-eval", default="", help="arms the reference evaluator skips (comma list)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/reference_parity-cifar10-ipc1")
    p.add_argument("--work", default="/work/ref/parity-work", help="scratch (outside the tree: reference outputs)")
    p.add_argument("--file", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1, help="step: inner steps to measure")
    p.add_argument("--space", default="pixel", help="step: edgecond's lr_img_space")
    p.add_argument("--result", type=Path)
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    if a.mode == "prepare":
        prepare(a.ref_dir, a.dataset)
    elif a.mode == "run":
        run(a)
    elif a.mode == "report":
        report(Path(a.out))
    elif a.mode == "step":
        import torch

        torch.set_num_threads(a.threads)
        rows = step_probe(a.ref_dir, a.dataset, a.steps, [int(s) for s in a.seeds.split(",")], a.space)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "step_probe.jsonl", "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    elif a.mode == "_ref-init":
        _ref_init(a.ref_dir, Path(a.work), a.file)
    elif a.mode == "_ref-condense":
        import torch

        torch.set_num_threads(a.threads)
        _ref_condense(a.ref_dir, Path(a.work), a.budget, a.seed, a.file)
    elif a.mode == "_ref-eval":
        import torch

        torch.set_num_threads(a.threads)
        acc = _ref_eval(a.ref_dir, Path(a.work), a.file, a.seed, a.eval_epochs)
        a.result.parent.mkdir(parents=True, exist_ok=True)
        a.result.write_text(json.dumps({"acc": acc}))


if __name__ == "__main__":
    main()
