"""Files and streams: atomic writes, reading a header (``read_meta``), streaming a slice (``slice_file``)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Sequence

from ..errors import BufferFormatError
from ..errors import BufferFormatReason as R
from .digest import _check_chain
from .header import _layout_from_file
from .meta import BufferMeta
from .spec import PathOrStream, _err
from .text import _check_provenance_mode

def _write_pieces(dest: PathOrStream, pieces: Sequence[Any]) -> int:
    total = sum(len(memoryview(p).cast("B")) for p in pieces)
    if hasattr(dest, "write"):
        for p in pieces:
            dest.write(p)
        return total
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for p in pieces:
                f.write(p)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a saved buffer is 0644 under umask 022
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return total


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_meta(path: str | os.PathLike | IO[bytes]) -> BufferMeta:
    """Parse and validate the header of a buffer file (reads only the header and rank 0).

    Rank 0 is hashed so the metadata is authenticated by the digest chain; use it for budget
    decisions without opening the data (``edgecond.budget`` takes a ``BufferMeta``).
    """
    if hasattr(path, "read"):
        f = path
        f.seek(0, os.SEEK_END)
        total = f.tell()
        return _meta_from_stream("<stream>", f, total)
    p = Path(path)
    try:
        total = p.stat().st_size
        with open(p, "rb") as f:
            return _meta_from_stream(str(p), f, total)
    except FileNotFoundError:
        raise BufferFormatError(f"{p}: no such file; expected a buffer file.", reason=R.CONTAINER) from None


def _meta_from_stream(src: str, f: IO[bytes], total: int) -> BufferMeta:
    lay = _layout_from_file(src, f, total)
    parts = []
    for t in lay.meta.tensors:
        f.seek(lay.begins[t.name])
        parts.append(f.read(t.rank_bytes))
    _check_chain(src, lay.seed, [parts], lay.chain[:1], 0)
    return lay.meta


def slice_file(src: str | os.PathLike | IO[bytes], dest: PathOrStream, n: int, *, verify: bool = True,
               provenance: bool = True) -> int:
    """Stream the ``n``-rank slice of a buffer file without opening the rest of it.

    Reads exactly the header plus the first ``n`` ranks of each tensor (one ``read`` per
    tensor), verifies their digest chain (``verify=True``) and writes the slice. Returns the
    bytes written (``== bytes_for(n, provenance=provenance)``); ``provenance=False``: lean slice.
    """
    provenance = _check_provenance_mode(provenance)
    if hasattr(src, "read"):
        f = src
        f.seek(0, os.SEEK_END)
        total = f.tell()
        return _slice_stream("<stream>", f, total, dest, n, verify, provenance)
    p = Path(src)
    try:
        total = p.stat().st_size
        with open(p, "rb") as f:
            return _slice_stream(str(p), f, total, dest, n, verify, provenance)
    except FileNotFoundError:
        raise BufferFormatError(f"{p}: no such file; expected a buffer file.", reason=R.CONTAINER) from None


def _slice_stream(name: str, f: IO[bytes], total: int, dest: PathOrStream, n: int, verify: bool,
                  provenance: bool = True) -> int:
    lay = _layout_from_file(name, f, total)
    n = lay.meta._check_n(n)
    blocks = []
    for t in lay.meta.tensors:
        f.seek(lay.begins[t.name])
        want = n * t.rank_bytes
        data = f.read(want)
        if len(data) != want:
            raise _err(name, f"truncated: read {len(data)} of {want} bytes of tensor {t.name!r}.", R.LAYOUT)
        blocks.append(memoryview(data))
    if verify:
        sizes = [t.rank_bytes for t in lay.meta.tensors]
        parts = ([blk[r * s:(r + 1) * s] for blk, s in zip(blocks, sizes)] for r in range(n))
        _check_chain(name, lay.seed, parts, lay.chain[:n], 0)
    return _write_pieces(dest, [lay.meta.header(n, provenance=provenance)] + blocks)
