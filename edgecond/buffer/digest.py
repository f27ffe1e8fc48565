"""The digest chain (spec §4): seed over the essentials, one 128-bit entry per rank, provenance digest."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import BufferFormatReason
from .spec import _DELTA_KEYS, _PROV_TAG, DIGEST_BYTES, FORMAT, PROV_KEY, PROVENANCE_KEYS, _err
from .text import _b64, _canonical

if TYPE_CHECKING:
    from .meta import TensorSpec

def _essential(md: Mapping[str, str]) -> dict[str, str]:
    """The metadata the chain seed covers: everything but the digest, provenance and delta keys."""
    drop = set(PROVENANCE_KEYS) | {PROV_KEY, "digest"} | set(_DELTA_KEYS)
    return {k: v for k, v in md.items() if k not in drop}


def _provenance(md: Mapping[str, str]) -> dict[str, str]:
    return {k: md[k] for k in PROVENANCE_KEYS if k in md}


def _prov_digest(seed: bytes, md: Mapping[str, str]) -> str:
    """Spec §4: digest of the provenance keys, bound to the chain seed (the essentials)."""
    h = hashlib.sha256(_PROV_TAG + seed + _canonical(_provenance(md)).encode())
    return _b64(h.digest()[:DIGEST_BYTES])


def _seed(metadata: Mapping[str, str], tensors: Sequence[TensorSpec]) -> bytes:
    """Spec §4: chain seed (16 bytes) over the essential metadata and the tensor specs.

    Provenance keys, ``prov``, ``digest`` and delta keys are not covered, so dropping
    provenance (or adding an accuracy table) leaves every rank digest unchanged.
    """
    md = _essential(metadata)
    tl = [[t.name, t.dtype, list(t.shape)] for t in tensors]
    full = hashlib.sha256(FORMAT.encode() + b"\0" + _canonical({"metadata": md, "tensors": tl}).encode())
    return full.digest()[:DIGEST_BYTES]



class _State:
    """Verification progress shared by a buffer and its views (same underlying bytes)."""

    __slots__ = ("verified",)

    def __init__(self, verified: int = 0) -> None:
        self.verified = verified


def _check_chain(src: str, prev: bytes, ranks: Iterable[Sequence[Any]], expected: Sequence[bytes],
                 first: int) -> bytes:
    """Continue the chain from ``prev`` over the given ranks; raise at the first mismatch."""
    for i, parts in enumerate(ranks):
        h = hashlib.sha256(prev)
        for p in parts:
            h.update(p)
        prev = h.digest()[:DIGEST_BYTES]
        if prev != expected[i]:
            raise _err(src, f"digest mismatch at rank {first + i}: expected {_b64(expected[i])}, "
                            f"computed {_b64(prev)}; the file is damaged (or its essential metadata was edited). "
                            "Re-download or re-create it.", BufferFormatReason.DIGEST)
    return prev


# ----------------------------------------------------------------------------- the buffer
