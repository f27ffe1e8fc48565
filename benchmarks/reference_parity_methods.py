"""Reference parity for MDC (over IDC) and IDM: the IDC harness's cross-evaluation, other methods.

Reuses :mod:`benchmarks.reference_parity` (its CIFAR-10 pickles, safetensors image files, the
edgecond evaluator, the reference IDC-family evaluator, records and resume logic) for two more
reference codes, each run *outside* this tree from a checkout you make yourself (no code of them
is copied here; ``prepare`` applies the CPU patches of ``shared/reference-code.md`` as text
substitutions in that checkout):

* ``--method mdc``: he-y/Multisize-Dataset-Condensation (commit e9b9f7e) ``condense_reg.py
  --reproduce -d cifar10 -f 2 --ipc 2 --adaptive_reg True`` vs edgecond ``method="mdc"``
  (``base="idc"``, ``paper`` preset). IPC 2 is the smallest IPC with a subset (MDC needs a proper
  prefix: at IPC 1 its adaptive loss has nothing to select). Budget: ``--outer`` outer iterations of
  ``--inner`` inner steps (network re-initialised at every outer iteration in both codes).
* ``--method idm``: uitrbn/IDM (commit fe23bbc) ``IDM_cifar10.py`` with its CIFAR-10 IPC-1 command
  (command.txt) vs edgecond ``method="idm"`` ``paper`` preset. Budget: ``--budget`` image updates
  (the reference's ``--Iteration B-1`` runs B updates, its loop is ``range(Iteration + 1)``).

Arms (same initial images in both codes): ``init`` (not condensed), ``ref`` (the reference code),
``ec`` (edgecond). Evaluators: ``edgecond`` (``eval_preset("quick")``) and ``reference`` — each
method's own: for MDC its ``train.train`` (identical to IDC's up to the device string, run through
:func:`benchmarks.reference_parity._ref_eval` on the MDC checkout), for IDM its ``evaluate_synset``
(``dc_utils.py``: SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, DSA, the 2×2 pieces of every
image upsampled by its ``number_sign_augment``, lr ×0.1 at half the epochs). Both evaluators run
``--eval-epochs`` epochs (300 as in the IDC table; MDC's own default is 1000, IDM's 1000).

Once::

    git clone <mirror of he-y/Multisize-Dataset-Condensation> /work/ref/mdc
    git clone <mirror of uitrbn/IDM> /work/ref/idm
    python benchmarks/reference_parity_methods.py prepare --method mdc --ref-dir /work/ref/mdc
    python benchmarks/reference_parity_methods.py prepare --method idm --ref-dir /work/ref/idm

(the CIFAR-10 pickles are the ones ``reference_parity.py prepare`` wrote, ``--data-dir``). Then::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/reference_parity_methods.py run --method mdc \\
        --ref-dir /work/ref/mdc --outer 2 --inner 5 --seeds 1 --eval-seeds 0,1,2 \\
        --out benchmarks/results/reference_parity-cifar10-mdc-ipc2
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/reference_parity_methods.py run --method idm \\
        --ref-dir /work/ref/idm --budget 10 --seeds 1 --eval-seeds 0,1,2 \\
        --out benchmarks/results/reference_parity-cifar10-idm-ipc1

``OUT/records.jsonl`` holds every finished step (a rerun skips what is done); ``OUT/reference_parity.json``
and ``.md`` summarise: arm, budget, evaluator, seeds, mean ± std, Δ vs init, seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import reference_parity as rp  # noqa: E402  (the IDC harness: shared helpers)

ARMS = ("init", "ref", "ec")
#: the normalisation constants of the IDM reference (utils.get_dataset, CIFAR-10)
IDM_MEAN = (0.4914, 0.4822, 0.4465)
IDM_STD = (0.2023, 0.1994, 0.2010)
IDM_RESULT = "res_DM_CIFAR10_ConvNet_1ipc.pt"

# (file, old, new): CPU and truncation patches, plain text substitutions in the checkouts.
MDC_PATCHES = [
    ("condense_reg.py", "n_iter = args.niter * 100 // args.inner_loop",
     "n_iter = int(os.environ.get('REF_N_OUTER', args.niter * 100 // args.inner_loop))"),
    ("condense_reg.py", "it_log = n_iter // 50", "it_log = max(1, n_iter // 50)"),
    ("condense_reg.py", "persistent_workers=True,\n                                       num_workers=4)",
     "persistent_workers=False,\n                                       num_workers=0)"),
    # --test gives the scratch save dir and skips the evaluations, but also skips the inner loop
    ("condense_reg.py", "            if args.test:\n                continue",
     "            if args.test and not os.environ.get('REF_RUN_INNER'):\n                continue"),
]
MDC_DEVICE_FILES = ["condense_reg.py", "data.py", "train.py", "test.py", "misc/utils.py",
                    "models/resnet.py", "models/resnet_ap.py"]
IDM_PATCHES = [
    ("utils_edc.py", "np.int(", "int("),
    # start from the harness's initial images (the same ones edgecond starts from)
    ("IDM_cifar10.py", "        ''' training '''\n",
     "        if os.environ.get('REF_INIT_FILE'):\n"
     "            from safetensors.torch import load_file as _lf\n"
     "            image_syn.data.copy_(_lf(os.environ['REF_INIT_FILE'])['images'])\n"
     "        ''' training '''\n"),
]


def _patch(ref_dir: Path, patches, device_files=()) -> None:
    for rel in device_files:
        p = ref_dir / rel
        if p.is_file():
            p.write_text(p.read_text().replace("'cuda'", "'cpu'"))
    for rel, old, new in patches:
        p = ref_dir / rel
        s = p.read_text()
        if old in s and not (old in new and new in s):  # (a patch that keeps its old text applies once)
            p.write_text(s.replace(old, new))
        elif new not in s:
            raise SystemExit(f"{p}: expected text not found (another commit?): {old!r}")
    print(f"patched {ref_dir}")


# ------------------------------------------------------------------------------------------
# reference side (subprocesses with the reference checkout on sys.path)
# ------------------------------------------------------------------------------------------


class _ClassAccuracy:
    """What the IDM reference reads of ``torchnet.meter.ClassErrorMeter(accuracy=True)``:
    ``add(logits, target)``, ``value()[0]`` (top-1 accuracy in percent), ``n``, ``reset()``."""

    def __init__(self, accuracy: bool = True) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.correct = 0, 0

    def add(self, output, target) -> None:
        self.n += int(target.numel())
        self.correct += int((output.argmax(1) == target).sum())

    def value(self):
        return [100.0 * self.correct / max(self.n, 1)]


def _stub_modules() -> None:
    """Imports the references make that this environment lacks and the runs do not use
    (aim tracking, k-means sampling of DREAM, kornia's ZCA), plus torchnet's accuracy meter."""
    aim = types.ModuleType("aim")

    class Run:  # falsy: the reference's `if run:` branches (tracking, export) are skipped
        hash = "none"

        def __init__(self, *a, **k):
            pass

        def __bool__(self):
            return False

        def track(self, *a, **k):
            pass

        def __setitem__(self, k, v):
            pass

    aim.Run, aim.Text, aim.Repo = Run, str, (lambda *a, **k: None)
    sys.modules.setdefault("aim", aim)
    km = types.ModuleType("fast_pytorch_kmeans")
    km.KMeans = object
    sys.modules.setdefault("fast_pytorch_kmeans", km)
    sys.modules.setdefault("kornia", types.ModuleType("kornia"))
    tn = types.ModuleType("torchnet")
    tn.meter = types.SimpleNamespace(ClassErrorMeter=_ClassAccuracy)
    sys.modules.setdefault("torchnet", tn)


def _mdc_ref_init(ref_dir: Path, work: Path, data_dir: Path, ipc: int, out_file: Path) -> None:
    """MDC's own initial images for ``-f 2 --ipc N`` (its argument.py switches to ``--init mix``
    when f > 1: per class the first N·f² training images, downsampled into the f×f tiles),
    made by its Synthesizer.init. The reference condensation starts from the same images
    (the choice is deterministic), so they are also edgecond's initialisation."""
    import torchvision

    _stub_modules()
    rp._ref_env(ref_dir)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    sys.argv = ["condense_reg.py", "--reproduce", "-d", "cifar10", "-f", "2", "--ipc", str(ipc), "--test",
                "--adaptive_reg", "True", "--data_dir", str(data_dir)]
    from argument import args
    import condense_reg as ref
    from data import ClassMemDataLoader

    ref.logger, ref.args = print, args  # module globals its __main__ block would set
    train = torchvision.datasets.CIFAR10(str(data_dir), train=True, transform=torchvision.transforms.ToTensor())
    train.nclass = 10
    loader = ClassMemDataLoader(train, batch_size=args.batch_real)
    syn = ref.Synthesizer(args, 10, 3, 32, 32, device="cpu")
    syn.init(loader, init_type=args.init)
    print("init type", args.init)
    rp._save_images(out_file, syn.data.detach().reshape(10, ipc, 3, 32, 32))


def _mdc_ref_condense(ref_dir: Path, work: Path, data_dir: Path, ipc: int, inner: int, outer: int, seed: int,
                      out_file: Path) -> None:
    """``condense_reg.py --reproduce -d cifar10 -f 2 --ipc N --adaptive_reg True`` truncated to
    ``outer`` outer iterations of ``inner`` inner steps."""
    import runpy

    import torch

    _stub_modules()
    rp._ref_env(ref_dir)
    os.environ["REF_N_OUTER"], os.environ["REF_RUN_INNER"] = str(outer), "1"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    sys.argv = ["condense_reg.py", "--reproduce", "-d", "cifar10", "-f", "2", "--ipc", str(ipc), "--test",
                "--adaptive_reg", "True", "--inner_loop", str(inner), "--seed", str(seed),
                "--data_dir", str(data_dir)]
    runpy.run_path(str(ref_dir / "condense_reg.py"), run_name="__main__")
    data, _target = torch.load(work / "raid" / "results" / "test" / f"data_{outer}.pt")
    rp._save_images(out_file, data.reshape(10, ipc, *data.shape[1:]).float())


def _idm_ref_condense(ref_dir: Path, work: Path, data_dir: Path, budget: int, batch_real: int, seed: int,
                      init_file: Path, out_file: Path) -> None:
    """IDM's CIFAR-10 IPC-1 command (command.txt) with ``--Iteration budget-1`` (= ``budget``
    image updates), ``--batch_real`` truncated, one experiment, no evaluation inside."""
    import random
    import runpy

    import torch
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tvc

    _stub_modules()
    tvd.CIFAR10._check_integrity = lambda self: True  # the rebuilt batches differ from the originals' md5
    tvc.check_integrity = lambda *a, **k: True
    sys.path.insert(0, str(ref_dir))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    # the initial images in IDM's value space: normalised with its constants
    from safetensors.torch import save_file

    mean = torch.tensor(IDM_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IDM_STD).view(1, 3, 1, 1)
    init = rp._load_images(init_file).reshape(10, 3, 32, 32)
    save_file({"images": ((init - mean) / std).contiguous()}, str(work / "init-normalized.safetensors"))
    os.environ["REF_INIT_FILE"] = str(work / "init-normalized.safetensors")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    sys.argv = ["IDM_cifar10.py", "--dataset", "CIFAR10", "--model", "ConvNet", "--ipc", "1",
                "--dsa_strategy", "color_crop_cutout_flip_scale_rotate", "--init", "real", "--lr_img", "0.2",
                "--num_exp", "1", "--num_eval", "1", "--net_train_real", "--eval_interval", "100",
                "--outer_loop", "1", "--mismatch_lambda", "0", "--net_decay", "--embed_last", "1000",
                "--syn_ce", "--ce_weight", "0.5", "--train_net_num", "1", "--batch_real", str(batch_real),
                "--net_generate_interval", "5", "--aug", "--Iteration", str(budget - 1),
                "--data_path", str(data_dir), "--save_path", str(work / "result")]
    runpy.run_path(str(ref_dir / "IDM_cifar10.py"), run_name="__main__")
    res = torch.load(work / "result" / IDM_RESULT)
    x = res["data"][0][0].float()
    rp._save_images(out_file, (x * std + mean).reshape(10, 1, 3, 32, 32))


def _idm_ref_eval(ref_dir: Path, work: Path, data_dir: Path, images_file: Path, seed: int, epochs: int) -> float:
    """IDM's evaluation of stored images: its ``evaluate_synset`` on the ``number_sign_augment``
    pieces, inputs normalised with its constants, its test loader."""
    import random

    import torch
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tvc

    _stub_modules()
    tvd.CIFAR10._check_integrity = lambda self: True
    tvc.check_integrity = lambda *a, **k: True
    sys.path.insert(0, str(ref_dir))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    from dc_utils import ParamDiffAug, evaluate_synset, get_network, number_sign_augment
    from utils import get_dataset

    args = types.SimpleNamespace(dataset="CIFAR10", zca=False, device="cpu", lr_net=0.01, epoch_eval_train=epochs,
                                 batch_train=256, batch_real=256, dsa=True,
                                 dsa_strategy="color_crop_cutout_flip_scale_rotate", dsa_param=ParamDiffAug())
    out = get_dataset("CIFAR10", str(data_dir), args.batch_real, "none", args=args)
    testloader = out[8]
    mean = torch.tensor(IDM_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IDM_STD).view(1, 3, 1, 1)
    images = rp._load_images(images_file)
    k, n = images.shape[:2]
    x = (images.reshape(k * n, 3, 32, 32) - mean) / std
    y = torch.arange(k).repeat_interleave(n)
    x, y = number_sign_augment(x, y)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = get_network("ConvNet", 3, 10, (32, 32))
    _net, _acc_train, acc_test = evaluate_synset(0, net, x, y, testloader, args)
    return float(acc_test)


def _mdc_ref_eval(ref_dir: Path, work: Path, images_file: Path, seed: int, epochs: int) -> float:
    """MDC's evaluation (its train.train; the IDC harness's path on the MDC checkout)."""
    _stub_modules()
    return rp._ref_eval(ref_dir, work, images_file, seed, epochs)


# ------------------------------------------------------------------------------------------
# edgecond side
# ------------------------------------------------------------------------------------------


def _ec_condense_mdc(ds, ipc: int, inner: int, outer: int, seed: int, init_file: Path, out_file: Path) -> dict:
    """edgecond MDC over IDC with the reference's schedule of the subset loss: the reference
    selects its first Most Learnable Subset at the end of outer iteration 0 (select_reg_ipc at
    it = 1), so outer iteration 0 is plain IDC and the subset loss acts from outer iteration 1 on.
    edgecond applies it from the start (paper B.2), so the arm runs 1 outer iteration of
    ``idc`` and then ``outer - 1`` of ``mdc`` from those images (a fresh image momentum at the
    boundary; the second stage's seed is ``seed + 1000`` so its draws are not a replay)."""
    from edgecond.condense import condense, condense_preset

    common = dict(ipc=ipc, factor=2, inner_steps=inner, dtype="float32")
    init = rp._load_images(init_file)
    cfg1 = condense_preset("idc", "paper", "cifar10", iterations=1, seed=seed, **common)
    res = condense(ds, cfg1, init_images=init, progress=False)
    meta = {}
    if outer > 1:
        cfg2 = condense_preset("mdc", "paper", "cifar10", base="idc", iterations=outer - 1, seed=seed + 1000,
                               **common)
        res = condense(ds, cfg2, init_images=res.images, progress=False)
        meta = {"hooks_config": dict(cfg2.hooks_config), "lr_img": cfg2.lr_img}
    rp._save_images(out_file, res.images)
    return meta


def _ec_condense_idm(ds, budget: int, batch_real: int, seed: int, init_file: Path, out_file: Path) -> dict:
    from edgecond.condense import condense, condense_preset

    cfg = condense_preset("idm", "paper", "cifar10", ipc=1, iterations=budget, batch_real=batch_real, seed=seed,
                          dtype="float32")
    res = condense(ds, cfg, init_images=rp._load_images(init_file), progress=False)
    rp._save_images(out_file, res.images)
    return {"lr_img": cfg.lr_img, "lr_img_space": cfg.lr_img_space, "method_config": cfg.method_config}


def _ec_init_idm(ds, out_file: Path) -> None:
    """edgecond's IDM initialisation (a 2×2 mosaic of real images, seed 0), used by both codes."""
    from edgecond.condense.engine import initial_images

    rp._save_images(out_file, initial_images(ds, 1, 2, seed=0))


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------


def _budget_label(args) -> str:
    return f"{args.outer}x{args.inner}" if args.method == "mdc" else str(args.budget)


def _sub(args, *extra) -> None:
    """A reference step in a fresh process (the references parse argv and patch torch)."""
    rp._sub(args, *extra, script=__file__,
            flags=("--method", args.method, "--data-dir", str(args.data_dir)))


def run(args) -> None:
    import torch

    from edgecond.data import load_dataset

    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    imgs = work / "images"
    records = out / "records.jsonl"
    done = rp._done(records)
    _ds: list = []

    def dataset():  # loaded only by the steps that need it (a CIFAR-10 copy is ~1.2 GB)
        if not _ds:
            _ds.append(load_dataset(args.dataset))
        return _ds[0]

    arms = [a.strip() for a in args.arms.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    evaluators = [e.strip() for e in args.evaluators.split(",")]
    budget = _budget_label(args)
    init_file = imgs / "init.safetensors"
    if not init_file.is_file():
        if args.method == "mdc":
            _sub(args, "_ref-init", "--file", str(init_file), "--work", str(work / "ref-init"))
        else:
            _ec_init_idm(dataset(), init_file)
    init = rp._load_images(init_file)

    def evaluate(arm: str, s: int, f: Path, ev: str, es: int) -> None:
        b = 0 if arm == "init" else budget
        key = f"eval/{ev}/{arm}/b{b}/s{s}/e{es}"
        if key in done or ev not in rp.EVALUATORS:
            return
        t0, c0 = time.perf_counter(), time.process_time()
        if ev == "edgecond":
            acc = rp._ec_eval(dataset(), f, es, args.eval_epochs)
            cpu = round(time.process_time() - c0, 1)
        else:
            res = work / "evals" / f"{key.replace('/', '_')}.json"
            if not res.is_file():
                _sub(args, "_ref-eval", "--file", str(f), "--seed", str(es), "--result", str(res),
                     "--eval-epochs", str(args.eval_epochs), "--work", str(work / "ref-eval"))
            result = json.loads(res.read_text())
            acc, cpu = result["acc"], result.get("cpu_seconds")
        rec = {"key": key, "kind": "eval", "method": args.method, "evaluator": ev, "arm": arm, "budget": b,
               "seed": s, "eval_seed": es, "acc": acc, "seconds": round(time.perf_counter() - t0, 1),
               "cpu_seconds": cpu, "eval_epochs": args.eval_epochs}
        rp._append(records, rec)
        done[key] = rec
        report(out, args.method, quiet=True, work=work)

    # condense every arm first, then evaluate eval-seed-major (every arm under every evaluator
    # for eval seed 0, then 1, ...), so a run cut short still has balanced rows
    results = [("init", 0, init_file)] if "init" in arms else []
    for s in seeds:
        for arm in arms:
            if arm == "init":
                continue
            f = imgs / f"{arm}-b{budget}-s{s}.safetensors"
            key = f"condense/{arm}/b{budget}/s{s}"
            if key not in done:
                t0, c0 = time.perf_counter(), time.process_time()
                meta: dict = {}
                if arm == "ref":
                    extra = (["--outer", str(args.outer), "--inner", str(args.inner), "--ipc", str(args.ipc)]
                             if args.method == "mdc" else ["--budget", str(args.budget),
                                                            "--batch-real", str(args.batch_real)])
                    _sub(args, "_ref-condense", "--file", str(f), "--seed", str(s), "--init-file", str(init_file),
                         "--work", str(work / f"ref-run-s{s}"), *extra)
                    cpu = None  # a subprocess: wall seconds only
                elif args.method == "mdc":
                    meta = _ec_condense_mdc(dataset(), args.ipc, args.inner, args.outer, s, init_file, f)
                    cpu = round(time.process_time() - c0, 1)
                else:
                    meta = _ec_condense_idm(dataset(), args.budget, args.batch_real, s, init_file, f)
                    cpu = round(time.process_time() - c0, 1)
                x = rp._load_images(f)
                rec = {"key": key, "kind": "condense", "method": args.method, "arm": arm, "budget": budget,
                       "seed": s, "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": cpu,
                       "dpix": float((x.clamp(0, 1) - init).abs().mean()),
                       "out_of_range": float(((x < 0) | (x > 1)).float().mean()), **meta}
                rp._append(records, rec)
                done[key] = rec
            results.append((arm, s, f))
    for es in eval_seeds:
        for ev in evaluators:
            for arm, s, f in results:
                evaluate(arm, s, f, ev, es)
    report(out, args.method, work=work)


TITLES = {
    "mdc": "MDC over IDC, CIFAR-10, IPC 2, f = 2 (budget: outer iterations × inner steps)",
    "idm": "IDM, CIFAR-10, IPC 1, l = 2 (budget: image updates)",
}


def _displacements(work: Path, cond: list[dict]) -> list[dict]:
    """Per condensation seed: how far and in which direction each code moved the images from the
    shared initialisation (unclamped values; the cosine of the two displacement fields)."""
    imgs = Path(work) / "images"
    init_file = imgs / "init.safetensors"
    out = []
    for r in cond:
        if r["arm"] != "ref":
            continue
        fr = imgs / f"ref-b{r['budget']}-s{r['seed']}.safetensors"
        fe = imgs / f"ec-b{r['budget']}-s{r['seed']}.safetensors"
        if not (init_file.is_file() and fr.is_file() and fe.is_file()):
            continue
        init = rp._load_images(init_file)
        dr, de = (rp._load_images(fr) - init).flatten(), (rp._load_images(fe) - init).flatten()
        out.append({"seed": r["seed"], "budget": r["budget"], "dpix_ref": float(dr.abs().mean()),
                    "dpix_ec": float(de.abs().mean()), "norm_ratio": float(de.norm() / dr.norm().clamp_min(1e-12)),
                    "cosine": float((dr @ de) / (dr.norm() * de.norm()).clamp_min(1e-12))})
    return out


def report(out: Path, method: str, quiet: bool = False, work: Path | None = None) -> None:
    recs = list(rp._done(out / "records.jsonl").values())
    cond = [r for r in recs if r["kind"] == "condense"]
    rows = []
    for ev in rp.EVALUATORS:
        for arm in ARMS:
            rs = [r for r in recs if r["kind"] == "eval" and r["evaluator"] == ev and r["arm"] == arm]
            if not rs:
                continue
            accs = [r["acc"] for r in rs]
            cs = [r for r in cond if r["arm"] == arm]
            rows.append({"evaluator": ev, "arm": arm, "budget": rs[0]["budget"],
                         "condense_seeds": sorted({r["seed"] for r in rs}),
                         "eval_seeds": sorted({r["eval_seed"] for r in rs}),
                         "n": len(accs), "mean": float(np.mean(accs)), "std": float(np.std(accs)), "accuracies": accs,
                         "dpix": float(np.mean([r["dpix"] for r in cs])) if cs else None,
                         "condense_seconds": float(np.mean([r["seconds"] for r in cs])) if cs else None,
                         "eval_seconds": float(np.mean([r["seconds"] for r in rs]))})
    moves = _displacements(work, cond) if work is not None else []
    (out / "reference_parity.json").write_text(json.dumps({"method": method, "rows": rows, "displacements": moves,
                                                           "records": recs}, indent=1))
    base = {r["evaluator"]: r["mean"] for r in rows if r["arm"] == "init"}
    lines = ["| evaluator | arm | budget | seeds (cond × eval) | accuracy % | Δ vs init | mean abs Δpixel | condense s | eval s |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        gain = "" if r["arm"] == "init" or r["evaluator"] not in base else f"{100 * (r['mean'] - base[r['evaluator']]):+.2f}"
        dpix = "" if r["dpix"] is None else f"{r['dpix']:.4f}"
        secs = "" if r["condense_seconds"] is None else f"{r['condense_seconds']:.0f}"
        lines.append(f"| {r['evaluator']} | {r['arm']} | {r['budget']} | {r['condense_seeds']} × {r['eval_seeds']} | "
                     f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {gain} | {dpix} | {secs} | {r['eval_seconds']:.0f} |")
    mv = ["| seed | budget | mean abs Δpixel ref | mean abs Δpixel ec | ‖Δec‖/‖Δref‖ | cos(Δref, Δec) |",
          "|---:|---:|---:|---:|---:|---:|"]
    mv += [f"| {m['seed']} | {m['budget']} | {m['dpix_ref']:.5f} | {m['dpix_ec']:.5f} | {m['norm_ratio']:.3f} | "
           f"{m['cosine']:.3f} |" for m in moves]
    (out / "reference_parity.md").write_text(
        f"# Reference parity: {TITLES[method]} (see benchmarks/reference_parity_methods.py)\n\n"
        + "\n".join(lines) + "\n\n## Image movement from the shared initial images (unclamped)\n\n"
        + "\n".join(mv) + "\n")
    if not quiet:
        print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["prepare", "run", "report", "_ref-init", "_ref-condense", "_ref-eval"])
    p.add_argument("--method", choices=["mdc", "idm"], required=True)
    p.add_argument("--ref-dir", type=Path, required=True, help="the reference checkout (outside this tree)")
    p.add_argument("--data-dir", type=Path, default=Path("/work/ref/idc/data"),
                   help="holds cifar-10-batches-py (written by reference_parity.py prepare)")
    p.add_argument("--dataset", default="imagefolder:/work/data/cifar10")
    p.add_argument("--ipc", type=int, default=2, help="mdc: stored images per class (>= 2)")
    p.add_argument("--outer", type=int, default=2, help="mdc: outer iterations")
    p.add_argument("--inner", type=int, default=5, help="mdc: inner steps per outer iteration")
    p.add_argument("--budget", type=int, default=10, help="idm: image updates")
    p.add_argument("--batch-real", type=int, default=256, help="idm: real images per class per update")
    p.add_argument("--seeds", default="1")
    p.add_argument("--eval-seeds", default="0,1,2")
    p.add_argument("--arms", default="init,ref,ec")
    p.add_argument("--evaluators", default="edgecond,reference")
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--work", help="scratch outside the tree (default /work/ref/parity-<method>)")
    p.add_argument("--file", type=Path)
    p.add_argument("--init-file", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result", type=Path)
    a = p.parse_args(argv)
    a.work = a.work or f"/work/ref/parity-{a.method}"
    a.out = a.out or (f"benchmarks/results/reference_parity-cifar10-mdc-ipc{a.ipc}" if a.method == "mdc"
                      else "benchmarks/results/reference_parity-cifar10-idm-ipc1")
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    if a.mode == "prepare":
        if a.method == "mdc":
            _patch(a.ref_dir, MDC_PATCHES, MDC_DEVICE_FILES)
            if not (a.ref_dir / "data").exists():  # rp._ref_eval reads REF_DIR/data
                (a.ref_dir / "data").symlink_to(a.data_dir.resolve())
        else:
            _patch(a.ref_dir, IDM_PATCHES)
        return
    if a.mode == "run":
        return run(a)
    if a.mode == "report":
        return report(Path(a.out), a.method, work=Path(a.work))
    import torch

    torch.set_num_threads(a.threads)
    if a.mode == "_ref-init":
        _mdc_ref_init(a.ref_dir, Path(a.work), a.data_dir, a.ipc, a.file)
    elif a.mode == "_ref-condense":
        if a.method == "mdc":
            _mdc_ref_condense(a.ref_dir, Path(a.work), a.data_dir, a.ipc, a.inner, a.outer, a.seed, a.file)
        else:
            _idm_ref_condense(a.ref_dir, Path(a.work), a.data_dir, a.budget, a.batch_real, a.seed, a.init_file, a.file)
    elif a.mode == "_ref-eval":
        c0 = time.process_time()
        if a.method == "mdc":
            acc = _mdc_ref_eval(a.ref_dir, Path(a.work), a.file, a.seed, a.eval_epochs)
        else:
            acc = _idm_ref_eval(a.ref_dir, Path(a.work), a.data_dir, a.file, a.seed, a.eval_epochs)
        a.result.parent.mkdir(parents=True, exist_ok=True)
        a.result.write_text(json.dumps({"acc": acc, "cpu_seconds": round(time.process_time() - c0, 1)}))


if __name__ == "__main__":
    main()
