"""Deltas (spec §6): appending ranks ``a..b-1`` received from :meth:`MultisizeBuffer.ranks` to a held prefix."""
from __future__ import annotations

import io
from typing import Any

from ..errors import BufferFormatError
from ..errors import BufferFormatReason as R
from .digest import _check_chain
from .header import _layout_from_buffer
from .meta import _encode_header
from .text import _b64


def _append_delta(cls: Any, held: Any, delta: bytes | bytearray | memoryview) -> Any:
    """The body of :meth:`MultisizeBuffer.append_ranks` (``cls``: the buffer class)."""
    if not isinstance(delta, (bytes, bytearray, memoryview)):
        raise BufferFormatError(f"delta must be bytes from MultisizeBuffer.ranks, got {type(delta).__name__}.",
                                reason=R.DELTA)
    dbuf = memoryview(bytes(delta))
    dl = _layout_from_buffer("<delta>", dbuf, kind="delta")
    a = dl.start
    if held is not None and not isinstance(held, cls):
        held = cls.load(held, mmap=True)
    if held is None:
        if a != 0:
            raise BufferFormatError(f"<delta>: it starts at rank {a} but no held buffer was given; pass the "
                                    f"buffer holding ranks 0..{a - 1}.", reason=R.DELTA)
        if dl.anchor != dl.seed:
            raise BufferFormatError("<delta>: its anchor does not match its own metadata (expected the chain "
                                    "seed for a delta starting at rank 0); the delta is damaged.", reason=R.DELTA)
        prev = dl.seed
        head_chain: list[bytes] = []
        held_parts: list[memoryview] = []
    else:
        hl = held._layout
        if hl.seed != dl.seed:
            raise BufferFormatError(
                "<delta>: it belongs to another buffer (its metadata differs from the held buffer's: "
                f"held {held._meta.dataset}/{held._meta.method}, delta {dl.meta.dataset}/{dl.meta.method}); "
                "request the delta from the server that sent the held buffer.", reason=R.DELTA
            )
        if held.ipc < a:
            raise BufferFormatError(f"<delta>: it starts at rank {a} but the held buffer has {held.ipc} ranks; "
                                    f"request ranks({held.ipc}, {a + dl.n}).", reason=R.DELTA)
        if a > 0:
            held.verify(a)
        prev = hl.chain[a - 1] if a > 0 else hl.seed
        if prev != dl.anchor:
            raise BufferFormatError(f"<delta>: anchor {_b64(dl.anchor)} does not match the held "
                                    f"buffer's rank {a - 1} digest {_b64(prev)}; the held buffer or "
                                    "the delta is damaged or from another buffer.", reason=R.DELTA)
        head_chain = hl.chain[:a]
        held_parts = [held._rank_view(t.name, 0, a) for t in hl.meta.tensors]
    order = dl.meta.tensors
    sizes = {t.name: t.rank_bytes for t in order}
    parts = ([dbuf[dl.begins[t.name] + r * sizes[t.name]:dl.begins[t.name] + (r + 1) * sizes[t.name]]
              for t in order] for r in range(dl.n))
    _check_chain("<delta>", prev, parts, dl.chain, a)
    b = a + dl.n
    md = dict(dl.meta.raw if held is None else held._layout.meta.raw)
    md["digest"] = "".join(_b64(d) for d in head_chain + dl.chain)
    out = io.BytesIO()
    out.write(_encode_header(md, order, b))
    for i, t in enumerate(order):
        if held_parts:
            out.write(held_parts[i])
        out.write(dbuf[dl.begins[t.name]:dl.begins[t.name] + dl.n * sizes[t.name]])
    return cls.from_bytes(out.getvalue(), _verified=True)
