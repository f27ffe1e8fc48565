"""The :class:`MultisizeBuffer` object: a read-only, digest-verified view on buffer bytes."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BufferFormatError, ConfigError
from ..errors import BufferFormatReason as R
from ..formation import decode_numpy
from .delta import _append_delta
from .digest import _State, _check_chain, _prov_digest, _provenance, _seed
from .files import _write_pieces
from .header import _Layout, _layout_from_buffer, _layout_from_file
from .meta import BufferMeta, TensorSpec, _encode_header
from .spec import DIGEST_BYTES, PROV_KEY, PathOrStream, _err
from .text import _b64, _canonical, _is_int
from .values import _check_decode_budget, _sdc_decode, decode_images
from .write import _as_bytes_view, _class_major_parts, _normalize_accuracy, _recipe_text


class MultisizeBuffer:
    """A multisize buffer (spec: ``docs/buffer-format.md``); every prefix of ranks is a buffer.

    Create with :meth:`from_class_major`, :meth:`load` or :meth:`from_bytes`. The object is a
    read-only view on file bytes (memory-mapped or in memory); :meth:`subset` makes views
    without copying. Data is digest-verified the first time each prefix is read.
    """

    def __init__(self, *, _buf: memoryview, _layout: _Layout, _n: int, _state: _State,
                 _src: str, _keep: Any = None) -> None:
        self._buf = _buf
        self._layout = _layout
        self._n = _n
        self._state = _state
        self._src = _src
        self._keep = _keep  # keeps a memmap alive
        self._meta = _layout.meta if _n == _layout.n else _layout.meta.with_ipc(_n)

    # ---- construction

    @classmethod
    def from_class_major(
        cls,
        images: Any,
        *,
        labels: Sequence[int] | None = None,
        class_names: Sequence[str],
        dataset: str,
        mean: Sequence[float],
        std: Sequence[float],
        factor: int = 1,
        method: str,
        config: Mapping[str, Any] | None = None,
        dtype: str = "float16",
        soft_labels: Any = None,
        soft_label_kind: str = "logits",
        soft_label_dtype: str = "float32",
        extra: Mapping[str, Any] | None = None,
        accuracy: Any = None,
        recipe: Any = None,
        coefficients: Any = None,
        coefficient_dtype: str = "float16",
    ) -> "MultisizeBuffer":
        """Build a buffer from class-major images ``[K, N, C, H, W]`` (float pixel space or uint8).

        ``images[k, r]`` is the rank-``r`` image of class slot ``k`` (rank 0 = the most important).
        ``labels``: class id of each slot (default ``0..K-1``); ``class_names``: one per slot.
        ``soft_labels``: ``[K, N, factor², L]`` (or ``[K, N, L]`` when ``factor == 1``), stored
        ``soft_label_dtype`` (float32 | float16), kind ``"logits"`` or ``"probs"``. Float images are clipped to ``[0, 1]``.
        ``recipe``: an :class:`edgecond.recipe.Recipe` (essential key ``recipe``), or None.
        ``coefficients``: ``[K, N, M]`` (``M >= N``) makes a slimmable (SDC, formation ``sdc/1``)
        buffer: ``images`` are then the component codes in ``[0, 1]`` (spec §5.1), stored with
        ``coefficient_dtype`` (float16 | float32).
        """
        return cls._assemble(*_class_major_parts(
            images, labels=labels, class_names=class_names, dataset=dataset, mean=mean, std=std, factor=factor,
            method=method, config=config, dtype=dtype, soft_labels=soft_labels, soft_label_kind=soft_label_kind,
            soft_label_dtype=soft_label_dtype,
            extra=extra, accuracy=accuracy, recipe=recipe, coefficients=coefficients,
            coefficient_dtype=coefficient_dtype))

    @classmethod
    def _assemble(cls, md: Mapping[str, str], order: Sequence[TensorSpec],
                  ranks: Sequence[Sequence[Any]], n: int) -> "MultisizeBuffer":
        """Hash the chain over per-rank parts and write one file image (verified by construction)."""
        base = {k: v for k, v in md.items() if k not in ("digest", PROV_KEY)}
        prev = seed = _seed(base, order)
        chain = []
        for parts in ranks:
            hsh = hashlib.sha256(prev)
            for p in parts:
                hsh.update(_as_bytes_view(p))
            prev = hsh.digest()[:DIGEST_BYTES]
            chain.append(_b64(prev))
        full = dict(base)
        if _provenance(base):
            full[PROV_KEY] = _prov_digest(seed, base)
        full["digest"] = "".join(chain)
        out = io.BytesIO()
        out.write(_encode_header(full, order, n))
        for ti in range(len(order)):
            for parts in ranks:
                out.write(_as_bytes_view(parts[ti]))
        return cls.from_bytes(out.getvalue(), _verified=True)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, verify: bool = True,
                   _verified: bool = False) -> "MultisizeBuffer":
        """Open a buffer held in memory (e.g. received over Flower); the bytes are copied.

        ``verify=True`` checks the whole digest chain now (the data is in memory anyway);
        ``verify=False`` checks rank 0 (all metadata) now and later ranks when first read.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BufferFormatError(f"from_bytes expects bytes, got {type(data).__name__}.", reason=R.CONTAINER)
        raw = bytes(data)
        buf = memoryview(raw)
        layout = _layout_from_buffer("<bytes>", buf)
        obj = cls(_buf=buf, _layout=layout, _n=layout.n, _state=_State(layout.n if _verified else 0),
                  _src="<bytes>", _keep=raw)
        obj.verify(None if verify else 1)
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True, verify: bool = False) -> "MultisizeBuffer":
        """Open a buffer file. ``mmap=True`` maps it (only the bytes used are read); otherwise reads it.

        The header is validated and rank 0 verified (the digest chain authenticates all metadata);
        further ranks are verified the first time they are read. ``verify=True`` checks all now.
        """
        p = Path(path)
        src = str(p)
        try:
            total = p.stat().st_size
            if not p.is_file():
                raise BufferFormatError(f"{src}: not a regular file; expected a .safetensors buffer file.",
                                        reason=R.CONTAINER)
            with open(p, "rb") as f:
                layout = _layout_from_file(src, f, total)
                if mmap:
                    keep = np.memmap(p, dtype=np.uint8, mode="r", shape=(total,))
                    buf = memoryview(keep)
                else:
                    f.seek(0)
                    keep = f.read()
                    buf = memoryview(keep)
        except FileNotFoundError:
            raise BufferFormatError(f"{src}: no such file; expected a buffer written by MultisizeBuffer.save.",
                                    reason=R.CONTAINER) from None
        except OSError as exc:
            raise BufferFormatError(f"{src}: cannot read the file ({exc}).", reason=R.CONTAINER) from None
        if len(buf) != total:
            raise BufferFormatError(f"{src}: the file changed while it was opened (size {total} -> {len(buf)}).",
                                    reason=R.CONTAINER)
        obj = cls(_buf=buf, _layout=layout, _n=layout.n, _state=_State(0), _src=src, _keep=keep)
        obj.verify(None if verify else 1)
        return obj

    # ---- properties

    @property
    def meta(self) -> BufferMeta:
        return self._meta

    @property
    def ipc(self) -> int:
        """Images (ranks) per class of this buffer/view."""
        return self._n

    @property
    def num_classes(self) -> int:
        return self._meta.num_classes

    @property
    def factor(self) -> int:
        return self._meta.factor

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._meta.image_shape

    @property
    def dtype(self) -> str:
        return self._meta.dtype

    @property
    def labels(self) -> tuple[int, ...]:
        return self._meta.labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._meta.class_names

    @property
    def has_soft_labels(self) -> bool:
        return self._meta.soft is not None

    @property
    def digest(self) -> str:
        """Hex of the last digest-chain entry: identifies this exact content."""
        return self._meta.digest

    @property
    def rank_bytes(self) -> int:
        return self._meta.rank_bytes

    def __repr__(self) -> str:
        m = self._meta
        return (f"MultisizeBuffer(dataset={m.dataset!r}, method={m.method!r}, ipc={self._n}, "
                f"classes={m.num_classes}, image_shape={m.image_shape}, dtype={m.dtype!r}, factor={m.factor})")

    # ---- sizes

    def bytes_for(self, n: int, *, provenance: bool = True) -> int:
        """Exact size in bytes of the ``n``-rank slice file (0 for ``n = 0``); ``provenance=False``: lean slice."""
        return self._meta.bytes_for(n, provenance=provenance)

    def largest_fitting(self, max_bytes: int, *, provenance: bool = True) -> int:
        """Largest ``n`` whose slice file fits in ``max_bytes`` (0 if not even one rank fits)."""
        return self._meta.largest_fitting(max_bytes, provenance=provenance)

    # ---- verification and raw access

    def _rank_view(self, name: str, a: int, b: int) -> memoryview:
        spec = next(t for t in self._layout.meta.tensors if t.name == name)
        start = self._layout.begins[name]
        return self._buf[start + a * spec.rank_bytes:start + b * spec.rank_bytes]

    def verify(self, n: int | None = None) -> None:
        """Check the digest chain of ranks ``0..n-1`` (default: all); cheap when already done."""
        n = self._n if n is None else self._meta._check_n(n)
        st = self._state
        if st.verified >= n:
            return
        lay = self._layout
        prev = lay.seed if st.verified == 0 else lay.chain[st.verified - 1]
        order = lay.meta.tensors
        parts = ([self._rank_view(t.name, r, r + 1) for t in order] for r in range(st.verified, n))
        _check_chain(self._src, prev, parts, lay.chain[st.verified:n], st.verified)
        st.verified = n

    def _stored(self, name: str, n: int) -> np.ndarray:
        spec = next(t for t in self._layout.meta.tensors if t.name == name)
        view = self._rank_view(name, 0, n)
        return np.frombuffer(view, dtype=spec.np_dtype()).reshape((n, *spec.shape))

    def _resolve_n(self, n: int | None) -> int:
        return self._n if n is None else self._meta._check_n(n)

    def stored_images(self, n: int | None = None) -> np.ndarray:
        """Read-only rank-major stored images ``[n, K, C, H, W]`` in the storage dtype (no copy)."""
        n = self._resolve_n(n)
        self.verify(n)
        return self._stored("images", n)

    def check_values(self, n: int | None = None) -> None:
        """Verify the digests, then decode rank by rank (bounded memory) and check that pixels are
        finite in ``[0, 1]`` and soft labels finite: what ``edgecond info --verify`` runs.

        The digest only proves the bytes are what the writer signed; this finds a file written or
        re-signed with NaN/inf/out-of-range values (which every decoder would reject later).
        """
        n = self._resolve_n(n)
        self.verify(n)
        stored = self._stored("images", n)
        for r in range(n):
            try:
                decode_images(stored[r], src=self._src)
            except BufferFormatError as exc:
                raise _err(self._src, f"rank {r}: {exc}", exc.reason) from None
        if self.has_soft_labels:
            soft = self._stored("soft_labels", n)
            for r in range(n):
                if not np.isfinite(soft[r].astype(np.float32)).all():
                    raise _err(self._src, f"soft labels of rank {r} contain NaN or infinite values; expected "
                                          "finite numbers.", R.VALUES)

    # ---- views and arrays

    def subset(self, n: int) -> "MultisizeBuffer":
        """The first ``n`` ranks as a buffer (a view: no copy)."""
        n = self._meta._check_n(n)
        return MultisizeBuffer(_buf=self._buf, _layout=self._layout, _n=n, _state=self._state,
                               _src=self._src, _keep=self._keep)

    def images_class_major(self, n: int | None = None, *, max_bytes: Any = None) -> np.ndarray:
        """Images ``[K, n, C, H, W]`` as float32 pixel space (a new array); ``max_bytes``: see :func:`decode_budget`."""
        _check_decode_budget(self._src, self._meta.decode_bytes(self._resolve_n(n), decode=False), max_bytes,
                             "images_class_major")
        q = self.stored_images(n)
        if self._meta.is_sdc:  # the decoded (untiled) images of the n-component prefix
            x = self._sdc_images(q, factor=1).reshape(q.shape)
        else:
            x = decode_images(q, src=self._src)
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4))
    def coefficients_class_major(self, n: int | None = None) -> np.ndarray | None:
        """SDC coefficients ``[K, n, M]`` in their storage dtype (a new array); None for plain images."""
        if not self._meta.is_sdc:
            return None
        n = self._resolve_n(n)
        self.verify(n)
        return np.ascontiguousarray(self._stored("coefficients", n).transpose(1, 0, 2))

    def _sdc_images(self, q: np.ndarray, *, factor: int) -> np.ndarray:
        """Spec §5.1 decode of the verified prefix ``q`` (component codes) with its coefficients."""
        return _sdc_decode(self._src, q, self._stored("coefficients", q.shape[0]), factor)

    def class_training_images(self, slot: int, n: int | None = None) -> np.ndarray:
        """Decoded training images ``[n*f², C, H, W]`` (float32 pixel) of class slot ``slot``'s
        first ``n`` ranks, for either formation kind (SDC images depend on ``n``, so a client must
        not cut a larger decode: this is the per-class reader the Avalanche policy uses)."""
        n = self._resolve_n(n)
        if not (_is_int(slot) or isinstance(slot, np.integer)) or not 0 <= int(slot) < self.num_classes:
            raise ConfigError(f"slot must be an integer in 0..{self.num_classes - 1}, got {slot!r}.")
        q = self.stored_images(n)
        if self._meta.is_sdc:
            coef = self._stored("coefficients", n)[:, int(slot):int(slot) + 1]
            return _sdc_decode(self._src, q[:, int(slot):int(slot) + 1], coef, self.factor)
        x = decode_images(q[:, int(slot)], src=self._src)
        return decode_numpy(x, self.factor) if self.factor > 1 else x

    def training_arrays(self, n: int | None = None, *, decode: bool = True,
                        max_bytes: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` to train on: x float32 pixel space, y int64.

        Order: rank-major, then class slot, then (``decode=True``) the ``factor²`` decoded images
        of each stored image (``edgecond.formation.decode_numpy``). ``decode=False`` returns the
        stored images ``[n*K, C, H, W]`` and one label each. Refuses (``BufferFormatError`` naming
        the bytes needed) when :meth:`BufferMeta.decode_bytes` exceeds the decoding budget
        ``max_bytes`` (default :func:`decode_budget`: 2 GiB or ``$EDGECOND_DECODE_BUDGET``).
        """
        _check_decode_budget(self._src, self._meta.decode_bytes(self._resolve_n(n), decode=decode), max_bytes,
                             "training_arrays")
        q = self.stored_images(n)
        m = q.shape[0] * q.shape[1]
        y = np.tile(np.asarray(self._meta.labels, dtype=np.int64), q.shape[0])
        if self._meta.is_sdc:  # spec §5.1: n components -> n images per class (then factor² tiles)
            x = self._sdc_images(q, factor=self.factor if decode else 1)
            return x, (np.repeat(y, self.factor * self.factor) if decode else y)
        x = decode_images(q, src=self._src).reshape(m, *q.shape[2:])
        if decode and self.factor > 1:
            x = decode_numpy(x, self.factor)
            y = np.repeat(y, self.factor * self.factor)
        return x, y

    def soft_targets(self, n: int | None = None, *, decode: bool = True) -> np.ndarray | None:
        """Soft labels in training order: ``[n*K*f², L]`` (``decode=False``: ``[n*K, f², L]``); None if absent."""
        if not self.has_soft_labels:
            return None
        n = self._resolve_n(n)
        width = self._meta.soft_label_dim or 0
        _check_decode_budget(self._src, 8 * n * self.num_classes * self.factor ** 2 * width, None, "soft_targets")
        self.verify(n)
        s = self._stored("soft_labels", n).astype(np.float32)
        if not np.isfinite(s).all():
            raise _err(self._src, "soft labels contain NaN or infinite values; expected finite numbers.", R.VALUES)
        _, k, f2, l = s.shape
        return s.reshape(n * k * f2, l) if decode else s.reshape(n * k, f2, l)

    # ---- writing

    def header(self, n: int | None = None, *, provenance: bool = True) -> bytes:
        """The canonical header bytes of the ``n``-rank slice (length prefix included)."""
        return self._meta.header(self._resolve_n(n), provenance=provenance)

    def slice_to(self, dest: PathOrStream, n: int | None = None, *, provenance: bool = True) -> int:
        """Write the ``n``-rank slice (default: all ranks) to a path or binary stream.

        Copies byte ranges only: the header, then the first ``n`` ranks of each tensor. Returns
        the bytes written (``== bytes_for(n, provenance=provenance)``). Paths are written
        atomically (temp + rename). ``provenance=False`` writes the *lean* slice: essential
        metadata only (no method/config/accuracy/extra); its rank digests are the same, so it
        is hash-free too (spec §3).
        """
        n = self._resolve_n(n)
        header = self._meta.header(n, provenance=provenance)
        self.verify(n)
        pieces = [header] + [self._rank_view(t.name, 0, n) for t in self._layout.meta.tensors]
        return _write_pieces(dest, pieces)

    def save(self, path: PathOrStream, *, provenance: bool = True) -> int:
        """Write the whole buffer (all ``ipc`` ranks); returns bytes written."""
        return self.slice_to(path, self._n, provenance=provenance)

    def to_bytes(self, n: int | None = None, *, provenance: bool = True) -> bytes:
        """The ``n``-rank slice file as bytes (for in-memory transfer, e.g. Flower: pass ``provenance=False``)."""
        out = io.BytesIO()
        self.slice_to(out, n, provenance=provenance)
        return out.getvalue()

    def lean(self) -> "MultisizeBuffer":
        """This buffer without provenance (in memory): ``from_bytes(to_bytes(provenance=False))``."""
        return MultisizeBuffer.from_bytes(self.to_bytes(provenance=False), _verified=True)

    def ranks(self, a: int, b: int | None = None) -> bytes:
        """Delta payload with ranks ``a..b-1`` (spec §6): self-describing and verifiable.

        A client holding ``a`` ranks appends it with :meth:`append_ranks` and gets exactly the
        bytes of the ``b``-rank slice.
        """
        b = self._n if b is None else b
        header = self._meta.delta_header(a, b)
        self.verify(b)
        out = io.BytesIO()
        _write_pieces(out, [header] + [self._rank_view(t.name, a, b) for t in self._layout.meta.tensors])
        return out.getvalue()

    def delta_bytes(self, a: int, b: int) -> int:
        """Exact size of :meth:`ranks` ``(a, b)``."""
        return self._meta.delta_bytes(a, b)

    @classmethod
    def append_ranks(cls, held: "MultisizeBuffer | str | os.PathLike | None",
                     delta: bytes | bytearray | memoryview) -> "MultisizeBuffer":
        """Append a delta (from :meth:`ranks`) to a held prefix; returns the longer buffer (in memory).

        ``held`` must be the same buffer (same essential metadata) with at least ``start`` ranks;
        ranks beyond ``start`` are replaced by the delta's. The result keeps ``held``'s metadata:
        appended to a lean slice it is the lean slice of the larger size, appended to a full one
        the full slice, byte for byte. With ``start == 0``, ``held`` may be None (result: lean).
        Save the result with :meth:`save`.
        """
        return _append_delta(cls, held, delta)

    def with_recipe(self, recipe: Any) -> "MultisizeBuffer":
        """A copy carrying ``recipe`` (an :class:`edgecond.recipe.Recipe`; None removes it).

        The recipe is essential metadata: the chain seed covers it, so every rank digest (and the
        buffer id ``d[0]``) changes; provenance is kept and its ``prov`` recomputed.
        """
        self.verify()
        md = dict(self._meta.raw)
        md.pop("recipe", None)
        if recipe is not None:
            md["recipe"] = _recipe_text(recipe)
        order = self._layout.meta.tensors
        ranks = [[self._rank_view(t.name, r, r + 1) for t in order] for r in range(self._n)]
        return MultisizeBuffer._assemble(md, order, ranks, self._n)

    def with_accuracy(self, table: Any) -> "MultisizeBuffer":
        """A copy whose metadata records measured accuracy per size (merged into any existing table).

        ``table``: ``{n: mean}``, ``{n: {"mean": m, "std": s, ...}}``, or objects with
        ``.size``, ``.mean`` (and ``.std``) such as ``edgecond.evaluate.SizeResult``. Values in [0, 1].
        The accuracy table is provenance: the rank digests stay the same, ``prov`` is recomputed.
        The data is verified first. A lean buffer gains provenance with only this table.
        """
        self.verify()
        acc = {str(k): v for k, v in self._meta.accuracy.items()}
        acc.update(_normalize_accuracy(table))
        md = dict(self._meta.raw)
        md["accuracy"] = _canonical({k: acc[k] for k in sorted(acc, key=int)})
        order = self._layout.meta.tensors
        ranks = [[self._rank_view(t.name, r, r + 1) for t in order] for r in range(self._n)]
        return MultisizeBuffer._assemble(md, order, ranks, self._n)
