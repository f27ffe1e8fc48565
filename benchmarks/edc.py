"""EDC vs IDC vs IDM (vs random) at equal stored images, with and without soft labels.

For every IPC and method: condense once with the ``quick`` (or ``paper``) preset (condensation
seed 0; buffers are kept in OUT/buffers and reused on a rerun), then train from scratch with
every evaluation seed at size N = IPC under

* the classic protocol (:mod:`edgecond.evaluate`): hard labels, and the stored soft labels;
* EDC's protocol (:mod:`edgecond.protocols`): hard labels, stored soft labels, online teacher.

Every method's soft labels come from the same teacher: the observer(s) of EDC's preset for the
data (:mod:`edgecond.observers`, cached by content hash), so the methods differ only in their
images. Bytes are the exact slice sizes (``bytes_for(N)``) of the buffer without and with its
soft labels (float16). Writes OUT/edc-<dataset>.json and .md::

    python benchmarks/edc.py --dataset digits --ipcs 1,10 --seeds 3 --out benchmarks/results/edc
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROWS = (("classic", "hard"), ("classic", "stored"), ("edc", "hard"), ("edc", "stored"), ("edc", "online"))


def _plain(buf):
    """The same images without soft labels (what the buffer costs without them)."""
    from edgecond.buffer import MultisizeBuffer

    m = buf.meta
    return MultisizeBuffer.from_class_major(
        buf.images_class_major(), labels=list(m.labels), class_names=list(m.class_names), dataset=m.dataset,
        mean=list(m.mean), std=list(m.std), factor=m.factor, method=m.method, config=dict(m.config or {}),
        dtype=m.dtype, extra=dict(m.extra or {}), recipe=m.recipe)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--methods", default="edc,idc,idm")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--preset", default="quick")
    p.add_argument("--eval-preset", default="quick")
    p.add_argument("--rows", default=",".join(f"{a}/{b}" for a, b in ROWS), help="protocol/labels pairs")
    p.add_argument("--condense", default="{}", help="JSON overrides per method: {\"idc\": {...}}")
    p.add_argument("--observer-epochs", type=int, default=None, help="override the EDC preset's observer epochs")
    p.add_argument("--cache-dir", default=None, help="observer cache (default: the library's)")
    p.add_argument("--out", required=True)
    p.add_argument("--buffers", default=None, help="buffer folder (default OUT/buffers): share one between runs")
    p.add_argument("--wait-buffers", action="store_true",
                   help="wait for another run to write a missing buffer instead of condensing it")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--merge", nargs="+", metavar="JSON", help="merge these reports into OUT (no runs)")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.buffers)

    import torch

    from edgecond.condense import condense, condense_preset
    from edgecond.condense.edc import EDCConfig, observer_configs
    from edgecond.buffer import MultisizeBuffer
    from edgecond.data import load_dataset
    from edgecond.evaluate import eval_preset, evaluate_buffer
    from edgecond.observers import get_observer
    from edgecond.protocols import edc_eval_preset, evaluate_buffer_edc
    from edgecond.soft_labels import add_soft_labels
    from edgecond.utils import set_cpu_threads

    set_cpu_threads(args.threads)
    ds = load_dataset(args.dataset)
    out = Path(args.out)
    bufdir = Path(args.buffers) if args.buffers else out / "buffers"
    bufdir.mkdir(parents=True, exist_ok=True)
    tag = args.dataset.replace(":", "-").replace("/", "-").strip("-")
    seeds = list(range(args.seeds))
    over = json.loads(args.condense)
    rows = [tuple(r.split("/")) for r in args.rows.split(",")]
    report_path = out / f"edc-{tag}.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"results": []}
    done = {(r["method"], r["ipc"], r["protocol"], r["labels"]) for r in report["results"]}
    report.update(dataset=args.dataset, preset=args.preset, eval_preset=args.eval_preset, seeds=seeds)

    # the one teacher every method's soft labels come from: EDC's observers for this data
    emc = condense_preset("edc", args.preset, ds, ipc=1).method_config
    if args.observer_epochs:
        emc["observer_epochs"] = args.observer_epochs
    if args.cache_dir:
        emc["cache_dir"] = args.cache_dir
    t0 = time.perf_counter()
    observers = [get_observer(ds, c, cache_dir=emc.get("cache_dir") or None, progress=True)
                 for c in observer_configs(EDCConfig(**emc))]
    report["observers"] = [dict(o.info(), seconds_to_get=round(time.perf_counter() - t0, 2)) for o in observers]
    teachers = [o.model for o in observers]
    classic = eval_preset(args.eval_preset, ds)
    edc_eval = edc_eval_preset(args.eval_preset, ds)
    report["protocols"] = {"classic": classic.to_dict(), "edc": edc_eval.__dict__}

    for ipc in [int(v) for v in args.ipcs.split(",")]:
        for method in args.methods.split(","):
            path = bufdir / f"{tag}-{method}-ipc{ipc}.safetensors"
            while args.wait_buffers and not path.exists():
                time.sleep(10)
            cond = report.setdefault("condense", {}).setdefault(f"{method}/{ipc}", {})
            if path.exists():
                buf = MultisizeBuffer.load(path)
            else:
                kw = dict(over.get(method, {}))
                if method == "edc":
                    kw.setdefault("method_config", {}).update({k: emc[k] for k in ("observer_epochs", "cache_dir")})
                cfg = condense_preset(method, args.preset, ds, ipc=ipc, seed=0, **kw)
                res = condense(ds, cfg, progress=True)
                buf = res.buffer
                buf.save(path)
                cond.update(seconds=round(res.seconds, 2), iterations=cfg.iterations)
            soft = buf if buf.has_soft_labels else add_soft_labels(buf, ds, teachers)
            plain = _plain(buf) if buf.has_soft_labels else buf
            cond.update(bytes_plain=plain.bytes_for(ipc), bytes_soft=soft.bytes_for(ipc))
            for protocol, labels in rows:
                if (method, ipc, protocol, labels) in done:
                    continue
                t1 = time.perf_counter()
                if protocol == "classic":
                    b = soft if labels == "stored" else plain
                    r = evaluate_buffer(b, ds, classic, sizes=[ipc], seeds=seeds, progress=True,
                                        use_soft_labels=labels == "stored")[0]
                    acc, std, accs = r.mean, r.std, r.accuracies
                else:
                    b = soft if labels == "stored" else plain
                    r = evaluate_buffer_edc(b, ds, edc_eval, sizes=[ipc], seeds=seeds, labels=labels,
                                            teachers=teachers, progress=True)[0]
                    acc, std, accs = r.mean, r.std, r.accuracies
                row = {"method": method, "ipc": ipc, "protocol": protocol, "labels": labels,
                       "mean": acc, "std": std, "accuracies": accs,
                       "bytes": soft.bytes_for(ipc) if labels == "stored" else plain.bytes_for(ipc),
                       "seconds": round(time.perf_counter() - t1, 2)}
                report["results"].append(row)
                report_path.write_text(json.dumps(report, indent=1))
                print(json.dumps(row), file=sys.stderr)
    (out / f"edc-{tag}.md").write_text(markdown(report))
    return 0


def merge(paths, out: Path, buffers: str | None) -> int:
    """One report from several runs (e.g. the classic rows and the EDC-protocol rows run side by
    side on one buffer folder); adds the lean slice bytes (no provenance keys) of every buffer."""
    from edgecond.buffer import MultisizeBuffer

    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(reports[0])
    merged["results"], merged["condense"] = [], {}
    for r in reports:
        merged["results"] += r["results"]
        for k, v in r.get("condense", {}).items():
            merged["condense"].setdefault(k, {}).update(v)
        merged["protocols"] = {**merged.get("protocols", {}), **r.get("protocols", {})}
    tag = merged["dataset"].replace(":", "-").replace("/", "-").strip("-")
    bufdir = Path(buffers) if buffers else out / "buffers"
    for key, c in merged["condense"].items():
        method, ipc = key.split("/")
        path = bufdir / f"{tag}-{method}-ipc{ipc}.safetensors"
        if path.exists():
            buf = MultisizeBuffer.load(path)
            spec = [t for t in buf.meta.tensors if t.name == "soft_labels"]
            c["lean_bytes_plain"] = buf.bytes_for(int(ipc), provenance=False) - (
                int(ipc) * spec[0].rank_bytes if spec else 0)
            c["soft_label_bytes"] = int(ipc) * buf.num_classes * buf.factor ** 2 * buf.num_classes * 2
    out.mkdir(parents=True, exist_ok=True)
    (out / f"edc-{tag}.json").write_text(json.dumps(merged, indent=1))
    (out / f"edc-{tag}.md").write_text(markdown(merged))
    return 0


def markdown(report: dict) -> str:
    res = report["results"]
    ipcs = sorted({r["ipc"] for r in res})
    methods = list(dict.fromkeys(r["method"] for r in res))
    cols = list(dict.fromkeys((r["protocol"], r["labels"]) for r in res))
    lines = [f"EDC benchmark: {report['dataset']}, condense preset {report['preset']}, evaluation preset "
             f"{report['eval_preset']}; test accuracy (%) mean ± std over evaluation seeds {report['seeds']} at size "
             "N = IPC. classic = SGD step-decay protocol (evaluate.py); edc = AdamW, smoothing LR ζ=2, batch 25, "
             "EMA 0.99 (protocols.py). hard = class ids; stored = the buffer's float16 teacher logits; online = "
             "the teacher labels every augmented batch.", ""]
    obs = ", ".join(f"{o['model']} ({o['epochs']} ep, test {100 * o['test_accuracy']:.2f} %)" for o in report["observers"])
    lines += [f"Teacher (all methods' soft labels, online labels): {obs}.",
              "Bytes: exact slice files with provenance metadata (`bytes_for(N)`); the soft labels themselves "
              "cost N·K·f²·K·2 bytes (float16).", ""]
    for ipc in ipcs:
        lines += [f"IPC {ipc}", "", "| method | " + " | ".join(f"{p}/{lab}" for p, lab in cols) +
                  " | bytes (hard) | bytes (+soft) | soft-label bytes | condense s |",
                  "|---|" + "---:|" * (len(cols) + 4)]
        for m in methods:
            cells = []
            for p, lab in cols:
                hit = [r for r in res if r["method"] == m and r["ipc"] == ipc and r["protocol"] == p and r["labels"] == lab]
                cells.append(f"{100 * hit[0]['mean']:.2f} ± {100 * hit[0]['std']:.2f}" if hit else "—")
            c = report.get("condense", {}).get(f"{m}/{ipc}", {})
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {c.get('bytes_plain', '—')} | {c.get('bytes_soft', '—')} | "
                         f"{c.get('soft_label_bytes', '—')} | {c.get('seconds', '—')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
