"""Benchmark: header overhead and slicing cost of a CIFAR-sized multisize buffer.

A 10-class 3x32x32 uint8 buffer with 50 images per class (random pixels: slicing never looks
at values) is written once; then for every n = 1..50:

- ``header %``: canonical header bytes / slice file bytes;
- ``mmap slice``: ``MultisizeBuffer.slice_to(BytesIO, n)`` on a memory-mapped, already
  verified buffer (copying byte ranges only);
- ``to file``: the same, written atomically to a file on disk (temp file + rename);
- ``control write``: writing the slice's bytes (already in memory) the same way: the disk's share;
- ``stream slice``: ``edgecond.buffer.slice_file(file, BytesIO, n)`` from disk, verifying the
  n ranks' digest chain, with every ``read`` counted (bytes read vs bytes written);
- ``cold load+slice``: ``MultisizeBuffer.load`` + ``slice_to`` (verifies ranks 0..n-1).

Times are the median of ``--repeats`` runs. Writes JSON and Markdown::

    .venv/bin/python benchmarks/buffer_slicing.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from edgecond.buffer import MultisizeBuffer, slice_file  # noqa: E402

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CountingFile(io.FileIO):
    """A file whose reads are counted."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.bytes_read = 0
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        out = super().read(size)
        self.bytes_read += len(out)
        self.reads += 1
        return out


_BEST: dict[str, float] = {}


def _median_ms(fn, repeats: int) -> float:
    """Median wall time in ms; the best (min) time is kept in ``_BEST[fn.__name__]``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    _BEST[fn.__name__] = min(times)
    return statistics.median(times)


def run(ipc: int = 50, repeats: int = 30, workdir: Path | None = None) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, ipc, 3, 32, 32), dtype=np.uint8)
    buf = MultisizeBuffer.from_class_major(
        x, class_names=NAMES, dataset="cifar10", mean=[0.4914, 0.4822, 0.4465],
        std=[0.2470, 0.2435, 0.2616], method="random", config={"seed": 0}, dtype="uint8",
    )
    tmp = Path(workdir or tempfile.mkdtemp(prefix="edgecond-bench-"))
    path = tmp / "cifar10-50ipc-uint8.safetensors"
    buf.save(path)
    mm = MultisizeBuffer.load(path, mmap=True, verify=True)
    rows = []
    for n in range(1, ipc + 1):
        size = mm.bytes_for(n)
        head = len(mm.header(n))
        out = io.BytesIO()
        written = mm.slice_to(out, n)
        assert written == size == len(out.getvalue())

        def mmap_slice():
            mm.slice_to(io.BytesIO(), n)

        def file_slice():
            mm.slice_to(tmp / "slice.safetensors", n)

        payload = out.getvalue()

        def plain_write():  # control: the same bytes written with the same atomic temp+rename
            fd, name = tempfile.mkstemp(dir=tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(name, tmp / "control.safetensors")

        def stream_slice():
            with open(path, "rb", buffering=0) as f:
                slice_file(f, io.BytesIO(), n)

        def cold():
            MultisizeBuffer.load(path, mmap=True).slice_to(io.BytesIO(), n)

        with CountingFile(path, "rb") as f:
            sink = io.BytesIO()
            slice_file(f, sink, n)
            bytes_read, reads = f.bytes_read, f.reads
        assert sink.getvalue() == out.getvalue()
        rows.append({
            "n": n,
            "file_bytes": size,
            "header_bytes": head,
            "header_pct": 100.0 * head / size,
            "payload_bytes": n * mm.rank_bytes,
            "mmap_slice_ms": _median_ms(mmap_slice, repeats),
            "file_slice_ms": _median_ms(file_slice, repeats),
            "control_write_ms": _median_ms(plain_write, repeats),
            "stream_slice_verify_ms": _median_ms(stream_slice, repeats),
            "cold_load_slice_ms": _median_ms(cold, max(5, repeats // 3)),
            "best_ms": {k: _BEST[k] for k in ("mmap_slice", "file_slice", "plain_write", "stream_slice", "cold")},
            "stream_bytes_read": bytes_read,
            "stream_reads": reads,
            "bytes_written": written,
            "bytes_read_minus_written": bytes_read - written,
        })
    full_header = len(mm.header(ipc))
    return {
        "benchmark": "buffer_slicing",
        "buffer": {"classes": 10, "image_shape": [3, 32, 32], "dtype": "uint8", "ipc": ipc,
                   "rank_bytes": mm.rank_bytes, "file_bytes": mm.bytes_for(ipc), "header_bytes": full_header},
        "note": "stream reads = header of the source file (incl. all ipc digests) + n ranks; "
                "bytes_read - bytes_written = source header - slice header",
        "repeats": repeats,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "numpy": np.__version__},
        "rows": rows,
        "summary": {
            "header_pct_n1": rows[0]["header_pct"],
            "header_pct_n2": rows[1]["header_pct"] if ipc > 1 else None,
            "header_pct_nmax": rows[-1]["header_pct"],
            "nmax_mmap_slice_ms": rows[-1]["mmap_slice_ms"],
            "nmax_file_slice_ms": rows[-1]["file_slice_ms"],
            "nmax_control_write_ms": rows[-1]["control_write_ms"],
            "nmax_stream_slice_verify_ms": rows[-1]["stream_slice_verify_ms"],
            "nmax_best_ms": rows[-1]["best_ms"],
            "max_mmap_slice_ms": max(r["mmap_slice_ms"] for r in rows),
            "max_file_slice_ms": max(r["file_slice_ms"] for r in rows),
            "max_control_write_ms": max(r["control_write_ms"] for r in rows),
            "max_stream_slice_verify_ms": max(r["stream_slice_verify_ms"] for r in rows),
            "max_cold_load_slice_ms": max(r["cold_load_slice_ms"] for r in rows),
        },
    }


def to_markdown(res: dict) -> str:
    b = res["buffer"]
    s = res["summary"]
    lines = [
        f"# Buffer slicing: {b['classes']} classes x {'x'.join(map(str, b['image_shape']))} {b['dtype']}, "
        f"{b['ipc']} IPC ({b['file_bytes']} bytes)",
        "",
        f"Median of {res['repeats']} runs; {res['machine']['processor']}, {res['machine']['cpus']} CPUs, "
        f"Python {res['machine']['python']}.",
        "",
        f"- header overhead: n=1 **{s['header_pct_n1']:.2f}%**, n=2 {s['header_pct_n2']:.2f}%, "
        f"n={b['ipc']} {s['header_pct_nmax']:.3f}%",
        f"- n={b['ipc']}: mmap to memory **{s['nmax_mmap_slice_ms']:.3f} ms**, to a file {s['nmax_file_slice_ms']:.3f} ms "
        f"(control write {s['nmax_control_write_ms']:.3f} ms), streamed+verified {s['nmax_stream_slice_verify_ms']:.3f} ms",
        f"- n={b['ipc']} best of {res['repeats']}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in s["nmax_best_ms"].items()),
        f"- slowest median over all n (noise of a shared machine included): mmap to memory **{s['max_mmap_slice_ms']:.3f} ms**, mmap to a file "
        f"{s['max_file_slice_ms']:.3f} ms (control: writing the same bytes {s['max_control_write_ms']:.3f} ms), "
        "streamed+verified "
        f"{s['max_stream_slice_verify_ms']:.3f} ms, cold load+slice {s['max_cold_load_slice_ms']:.3f} ms",
        f"- {res['note']}",
        "",
        "| n | file bytes | header bytes | header % | mmap slice ms | to file ms | control write ms | stream+verify ms | cold ms | bytes read | bytes written |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['n']} | {r['file_bytes']} | {r['header_bytes']} | {r['header_pct']:.3f} | "
            f"{r['mmap_slice_ms']:.3f} | {r['file_slice_ms']:.3f} | {r['control_write_ms']:.3f} | {r['stream_slice_verify_ms']:.3f} | {r['cold_load_slice_ms']:.3f} | "
            f"{r['stream_bytes_read']} | {r['bytes_written']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results", help="folder for buffer_slicing.{json,md}")
    ap.add_argument("--ipc", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgecond-bench-") as tmp:
        res = run(ipc=args.ipc, repeats=args.repeats, workdir=Path(tmp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "buffer_slicing.json").write_text(json.dumps(res, indent=2) + "\n")
    md = to_markdown(res)
    (out / "buffer_slicing.md").write_text(md)
    print("\n".join(md.splitlines()[:8]))
    print(f"wrote {out / 'buffer_slicing.json'} and {out / 'buffer_slicing.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
