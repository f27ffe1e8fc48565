"""``python -m edgecond.demo`` (what ``make demo`` runs): the multisize job end to end, offline.

1. condense the bundled digits dataset ONCE with MDC (over IDC by default, ``--base dm|idm``;
   the subset-degradation benchmark's quick settings) into one multisize buffer of 10 images
   per class;
2. train a ConvNet from scratch on every prefix size 1..10 and measure test accuracy, and the
   same on random real images of the same per-class count and seeds (the baseline line);
3. print the table, write the measured accuracies into the buffer's metadata and save the
   buffer, a JSON report and an accuracy-vs-size plot under ``./out/demo/``.

Flags: ``--out DIR``, ``--seeds K`` (evaluation seeds, default 3), ``--fast`` (half the
condensation iterations and evaluation epochs), ``--threads N`` (default: ``OMP_NUM_THREADS``,
else 1), ``--iterations N`` / ``--epochs N`` / ``--ipc N`` (smaller smoke runs). Progress is a
bar on a terminal and a line every 30 s in a redirected log (``edgecond.progress``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path


def run_demo(out: str | Path = "out/demo", *, seeds: int = 3, fast: bool = False, ipc: int = 10,
             base: str = "idc", device: str = "cpu", progress: bool = True, iterations: int | None = None,
             epochs: int | None = None, random_real: bool = True, dataset: str = "digits",
             condense_overrides: dict | None = None, eval_overrides: dict | None = None) -> dict:
    """Condense ``dataset`` (digits) with MDC, evaluate every size (and random real images of the
    same sizes and seeds when ``random_real``), write buffer + JSON + PNG; return the report.

    ``iterations`` / ``epochs`` override the condensation iterations and evaluation epochs;
    ``condense_overrides``/``eval_overrides`` go to the presets (tests)."""
    from .condense import condense, condense_preset
    from .report import SubsetDegradationResult
    from .data import load_dataset
    from .evaluate import eval_preset, evaluate_buffer, evaluate_random_real

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset_name = dataset
    dataset = load_dataset(dataset_name)
    # the one resolver: MDC over `base` with the quick preset for this data's geometry
    overrides = dict(condense_overrides or {})
    eval_overrides = dict(eval_overrides or {})
    config = condense_preset("mdc", "quick", dataset, base=base, ipc=ipc, **overrides)
    if fast:
        overrides["iterations"] = max(1, config.iterations // 2)
        eval_overrides.setdefault("epochs", eval_preset("quick").epochs // 2)
    if iterations is not None:
        overrides["iterations"] = int(iterations)
    if epochs is not None:
        eval_overrides["epochs"] = int(epochs)
    config = condense_preset("mdc", "quick", dataset, base=base, ipc=ipc, **overrides)
    t0 = time.perf_counter()
    result = condense(dataset, config, device=device, progress=progress, log_path=out / "condense-log.jsonl")
    condense_s = time.perf_counter() - t0
    ecfg = eval_preset("quick", dataset, **eval_overrides)
    t1 = time.perf_counter()
    sizes = evaluate_buffer(result.buffer, dataset, ecfg, sizes=range(1, ipc + 1), seeds=range(seeds),
                            device=device, progress=progress)
    eval_s = time.perf_counter() - t1
    methods: dict = {}
    if random_real:  # the baseline: random real images, same per-class counts, same seeds
        t2 = time.perf_counter()
        real = evaluate_random_real(dataset, ecfg, sizes=range(1, ipc + 1), seeds=range(seeds), device=device,
                                    progress=progress)
        real_s = time.perf_counter() - t2
        methods["random"] = {
            "sizes": [s.size for s in real], "mean": [s.mean for s in real], "std": [s.std for s in real],
            "accuracies": [s.accuracies for s in real], "bytes": [s.bytes for s in real],
            "storage_bytes": int(real[-1].bytes), "runs": 0, "condense_seconds": 0.0, "eval_seconds": real_s,
        }
    buffer = result.buffer
    try:
        buffer = buffer.with_accuracy({s.size: s.mean for s in sizes})
    except Exception as exc:  # noqa: BLE001 - the table is still worth saving without it
        logging.getLogger(__name__).warning("could not write accuracies into the buffer metadata: %s", exc)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset_name)[-32:].strip("_")
    buffer_path = out / f"{stem}-mdc-{base}-ipc{ipc}.safetensors"
    buffer.save(buffer_path)
    mdc_meta = buffer.meta.extra.get("mdc", {}) if hasattr(buffer.meta, "extra") else {}
    report = SubsetDegradationResult(
        config={"dataset": dataset.name, "base": base, "ipc": ipc, "preset": "quick", "seeds": list(range(seeds)),
                "condense": json.loads(json.dumps(dataclasses.asdict(config), default=str)), "eval": ecfg.to_dict()},
        methods={**methods, "MDC": {
            "sizes": [s.size for s in sizes], "mean": [s.mean for s in sizes], "std": [s.std for s in sizes],
            "accuracies": [s.accuracies for s in sizes], "bytes": [s.bytes for s in sizes],
            "storage_bytes": int(buffer.bytes_for(ipc)), "runs": 1,
            "condense_seconds": condense_s, "eval_seconds": eval_s,
        }},
        runtimes={"MDC_condense": condense_s, "MDC_eval": eval_s,
                  **({"random_eval": methods["random"]["eval_seconds"]} if methods else {}),
                  "total": time.perf_counter() - t0},
        extra={"mdc": mdc_meta, "buffer": str(buffer_path)},
    )
    paths = report.write(out, stem="demo")
    return {"report": report, "paths": {**paths, "buffer": buffer_path}, "sizes": sizes, "mdc": mdc_meta,
            "random": methods.get("random")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecond.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo", help="output directory (default ./out/demo)")
    p.add_argument("--seeds", type=int, default=3, help="evaluation seeds per size (default 3)")
    p.add_argument("--fast", action="store_true", help="half the condensation iterations and epochs")
    p.add_argument("--base", default="idc", choices=("idc", "dm", "idm"),
                   help="base matcher (default idc: the strongest on digits; see docs/multisize.md)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $OMP_NUM_THREADS when set, else 1)")
    p.add_argument("--ipc", type=int, default=10, help="images per class of the buffer (default 10)")
    p.add_argument("--iterations", type=int, default=None, help="condensation iterations (default: the preset's)")
    p.add_argument("--epochs", type=int, default=None, help="evaluation epochs (default: the quick preset's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .errors import EdgecondError
    from .utils import resolve_device, set_cpu_threads

    set_cpu_threads(args.threads if args.threads is not None else int(os.environ.get("OMP_NUM_THREADS") or 1))
    t0 = time.perf_counter()
    try:
        res = run_demo(args.out, seeds=args.seeds, fast=args.fast, base=args.base, ipc=args.ipc,
                       device=str(resolve_device(args.device)), iterations=args.iterations, epochs=args.epochs)
    except EdgecondError as exc:
        print(f"edgecond demo: error: {exc}", file=sys.stderr)
        return 2
    print()
    print("Multisize buffer: digits, MDC over", args.base.upper(), "- accuracy of every prefix (one condensation)")
    real = res.get("random")
    print(f"{'size':>4}  {'bytes':>7}  accuracy" + ("                random real images" if real else ""))
    for i, s in enumerate(res["sizes"]):
        spread = f"± {100 * s.std:.2f} %" if len(s.accuracies) > 1 else "%   (1 seed: no std)"
        line = f"{s.size:>4}  {s.bytes:>7}  {100 * s.mean:6.2f} {spread}"
        if real:
            line += f"   {100 * real['mean'][i]:6.2f} ± {100 * real['std'][i]:.2f} %"
        print(line)
    hist = res["mdc"].get("history", [])
    print("MLS history (t, MLS, frozen ranks):", [(h["t"], h["mls"], h["frozen"]) for h in hist if h.get("selected")])
    for key in ("buffer", "json", "md", "png"):
        print(f"  {key:>6}: {res['paths'][key]}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
