"""``edgecond show BUFFER [--sizes 1,2,10] [--classes 0,1] -o grid.png``: a picture of the buffer.

Torch-free: :mod:`edgecond.show` (numpy + matplotlib).
"""
from __future__ import annotations

import argparse

from ..errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show",
        help="write a PNG grid of a buffer's images (class x rank, prefix boundaries marked)",
        description="Draw the stored images of BUFFER as a grid, one row per class and one column per "
                    "rank, up to the largest of --sizes, with a red line after each size in --sizes "
                    "(the prefix a client with that budget receives).",
    )
    p.add_argument("buffer", metavar="BUFFER", help="buffer file (.safetensors)")
    p.add_argument("--sizes", default=None, metavar="LIST",
                   help="comma list of prefix sizes to mark, e.g. 1,2,10 (default: all ranks)")
    p.add_argument("--classes", default=None, metavar="LIST", help="comma list of class ids (default all)")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="output image (.png)")
    p.set_defaults(handler=cmd_show)


def _classes(text: str | None, num_classes: int) -> list[int] | None:
    if not text:
        return None
    try:
        ids = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--classes {text!r}: expected a comma list of class ids such as 0,1,2.") from None
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad or not ids:
        raise ConfigError(f"--classes {text!r}: class ids must be in 0..{num_classes - 1}; got {bad or 'none'}.")
    return ids


def cmd_show(args: argparse.Namespace) -> int:
    from ..buffer import MultisizeBuffer
    from ..show import parse_sizes, save_grid

    buf = MultisizeBuffer.load(args.buffer)
    sizes = parse_sizes(args.sizes, buf.ipc)
    path = save_grid(buf, args.output, sizes=sizes, classes=_classes(args.classes, buf.num_classes))
    print(f"wrote {path}: {buf.num_classes if args.classes is None else len(args.classes.split(','))} classes "
          f"x {max(sizes)} ranks, prefix boundaries at {sizes}")
    return 0
