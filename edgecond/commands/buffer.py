"""``edgecond info BUFFER [--json]`` and ``edgecond slice BUFFER (--ipc N | --max-bytes B) -o OUT [--lean]``.

Torch-free: only :mod:`edgecond.buffer`, :mod:`edgecond.budget` and :mod:`edgecond.units`.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import BudgetError
from .checks import check_output_file, int_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a buffer's metadata, bytes per size and accuracy table",
        description="Show a multisize buffer: dataset, method, classes, dtype, factor, IPC, the "
                    "exact file size of every prefix and the measured accuracy per size (if any). "
                    "The whole digest chain is verified; --verify also decodes every rank and checks "
                    "the pixel values (finite, in [0, 1]) and soft labels (finite).",
    )
    p.add_argument("buffer", metavar="BUFFER", help="buffer file (.safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--verify", action="store_true",
                   help="also check decoded values (pixels finite in [0, 1], soft labels finite), rank by rank")
    p.set_defaults(handler=cmd_info)

    p = subparsers.add_parser(
        "slice",
        help="write the first N ranks (or the largest prefix that fits a byte budget)",
        description="Write a valid buffer holding the first N images per class of BUFFER, copying "
                    "byte ranges only. --max-bytes accepts 40000, 40kB, 1.5MB, 2MiB.",
    )
    p.add_argument("buffer", metavar="BUFFER", help="buffer file (.safetensors)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ipc", type=int_arg(1), metavar="N", help="images per class to keep")
    g.add_argument("--max-bytes", metavar="B", help="largest prefix whose file fits B bytes")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument("--lean", "--no-provenance", dest="lean", action="store_true",
                   help="drop the provenance metadata (method, config, accuracy table, extra): the "
                        "smallest valid file, same digests; --max-bytes then counts the lean size")
    p.set_defaults(handler=cmd_slice)


def cmd_info(args: argparse.Namespace) -> int:
    from ..buffer import MultisizeBuffer
    from ..units import format_bytes

    buf = MultisizeBuffer.load(args.buffer)
    buf.verify()
    check = bool(getattr(args, "verify", False))
    if check:
        buf.check_values()
    checked = "digest ok, pixels ok" if check else "digest ok, pixels not checked (--verify)"
    meta = buf.meta
    # linear in ranks: header lengths of every n in one pass (never rebuild the header per n)
    heads = meta.header_sizes()
    lean_heads = meta.header_sizes(provenance=False)
    sizes = [{"n": n, "bytes": heads[n - 1] + n * meta.rank_bytes,
              "lean_bytes": lean_heads[n - 1] + n * meta.rank_bytes,
              "accuracy": meta.accuracy.get(n)} for n in range(1, buf.ipc + 1)]
    if args.json:
        out = meta.to_dict()
        out["file"] = str(args.buffer)
        out["file_bytes"] = buf.bytes_for(buf.ipc)
        out["digest_ok"] = True
        out["values_checked"] = check
        out["sizes"] = sizes
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    c, h, w = meta.image_shape
    if meta.has_provenance:
        prov = (f"  method     {meta.method or '-'}  config {json.dumps(meta.config, sort_keys=True)[:200]}\n"
                f"  provenance digest {meta.provenance_digest} (method, config, accuracy, extra; "
                "dropped by slice --lean)")
    else:
        prov = ("  provenance none (a lean slice, or never recorded): its digests equal its parent's "
                f"first {buf.ipc}, first entry {meta.digests[0]}")
    lines = [
        f"{args.buffer}: {meta.format} multisize buffer, {checked} ({meta.digest})",
        f"  dataset    {meta.dataset}",
        prov,
        f"  classes    {meta.num_classes}: {', '.join(meta.class_names[:10])}{' ...' if meta.num_classes > 10 else ''}",
        f"  images     {buf.ipc} per class, {c}x{h}x{w}, stored {meta.dtype}, factor {meta.factor} "
        f"({buf.ipc * meta.factor ** 2} training images per class)",
        f"  mean/std   {list(meta.mean)} / {list(meta.std)}",
        f"  rank       {meta.rank_bytes} bytes ({format_bytes(meta.rank_bytes)}) per rank of all classes",
    ]
    if getattr(meta, "is_sdc", False):
        lines.append(f"  formation  {meta.formation}: ranks are slimmable components (n ranks decode to n "
                     "images per class, docs/buffer-format.md §5.1)")
    if meta.soft is not None:
        lines.append(f"  soft       {meta.soft.get('kind')} over {meta.soft_label_dim} classes")
    if meta.extra:
        lines.append(f"  extra      keys {sorted(meta.extra)}")
    lines.append("")
    lines.append(f"  {'n':>5}  {'bytes':>12}  {'size':>9}  {'header %':>8}  {'lean bytes':>12}  {'lean %':>6}  accuracy")
    for row in sizes:
        n, nbytes, acc = row["n"], row["bytes"], row["accuracy"]
        head = heads[n - 1]
        lean_head = lean_heads[n - 1]
        acc_s = ""
        if acc is not None:
            acc_s = f"{acc['mean'] * 100:.2f}%"
            if isinstance(acc.get("std"), (int, float)):
                acc_s += f" ± {acc['std'] * 100:.2f}"
        lines.append(f"  {n:>5}  {nbytes:>12}  {format_bytes(nbytes):>9}  {head / nbytes * 100:>8.3f}  "
                     f"{row['lean_bytes']:>12}  {lean_head / row['lean_bytes'] * 100:>6.3f}  {acc_s}")
    more = sorted(k for k in meta.accuracy if k > buf.ipc)
    if more:
        lines.append(f"  (accuracy also recorded for larger sizes of the parent buffer: {more})")
    print("\n".join(lines))
    return 0


def cmd_slice(args: argparse.Namespace) -> int:
    from ..budget import ipc_for_bytes
    from ..buffer import MultisizeBuffer
    from ..units import format_bytes

    check_output_file(args.output, "-o/--output")
    buf = MultisizeBuffer.load(args.buffer)
    keep = not args.lean
    if args.max_bytes is not None:
        decision = ipc_for_bytes(buf, args.max_bytes, provenance=keep)
        if decision.n == 0:
            hint = "" if args.lean else f" (or {buf.bytes_for(1, provenance=False)} with --lean)"
            raise BudgetError(f"--max-bytes {args.max_bytes}: {decision.reason}. Pass a budget of at least "
                              f"{buf.bytes_for(1, provenance=keep)} bytes{hint}.")
        n = decision.n
    else:
        n = args.ipc
    written = buf.slice_to(args.output, n, provenance=keep)
    form = "lean (no provenance)" if args.lean else "with provenance"
    print(f"wrote {args.output}: n={n} of {buf.ipc} images per class, {form}, {written} bytes ({format_bytes(written)})")
    return 0
