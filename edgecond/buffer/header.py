"""Reading a header (spec §1-§4): a short reader over one small validator per section.

:func:`_parse_header` runs, in order: the container (JSON object), the format and metadata keys,
the tensors (names, dtypes, shapes, caps), the data layout (offsets tile the data section), the
essential values (classes, labels, mean/std, factor, soft labels, formation), the digest list,
the provenance keys, the delta keys and the provenance digest. Each raises
:class:`~edgecond.errors.BufferFormatError` with its own :class:`~edgecond.errors.BufferFormatReason`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO, Any, Mapping, Sequence

from ..errors import BufferFormatReason as R
from .digest import _prov_digest, _seed
from .meta import BufferMeta, TensorSpec, _data_order
from .spec import (_DELTA_KEYS, _OPTIONAL_KEYS, _REQUIRED_KEYS, _SOFT_KINDS, _ST_NAMES, _TENSOR_DTYPES,
                   DELTA_FORMAT, DIGEST_CHARS, FORMAT, MAX_CHANNELS, MAX_CLASSES, MAX_FACTOR, MAX_HEADER_BYTES,
                   MAX_LABEL, MAX_SDC_COEFFICIENTS, MAX_SIDE, MAX_SOFT_DIM, PROV_KEY, PROVENANCE_KEYS,
                   SDC_FORMATION, _err)
from .text import _finite_number, _is_int, _loads, _parse_list, _parse_names, _unb64


@dataclass
class _Layout:
    meta: BufferMeta
    n: int
    data_start: int  # absolute offset of the data section
    begins: dict[str, int]  # absolute offset of each tensor
    seed: bytes
    chain: list[bytes]  # n chain entries (raw digests)
    start: int = 0  # delta only
    anchor: bytes = b""  # delta only


def _sdc_coefficients_spec(src: str, raw: tuple, n: int, k: int) -> "TensorSpec":
    """Spec §5.1: ``coefficients`` is ``[N, K, M]`` with ``N <= M <= MAX_SDC_COEFFICIENTS``."""
    dt, shape, _ = raw
    if len(shape) != 3 or shape[0] != n or shape[1] != k or not n <= shape[2] <= MAX_SDC_COEFFICIENTS:
        raise _err(src, f"'coefficients' has shape {shape!r:.80}; expected [N={n}, K={k}, M] with "
                        f"{n} <= M <= {MAX_SDC_COEFFICIENTS} (one weight per decoded row, formation sdc/1).", R.TENSORS)
    return TensorSpec("coefficients", dt, tuple(shape[1:]))


def _check_formation(src: str, md: Mapping[str, str], raw_specs: Mapping[str, tuple]) -> str:
    """Spec §5.1: the optional ``formation`` key; ``sdc/1`` iff a ``coefficients`` tensor is present."""
    formation = md.get("formation", "")
    if "formation" in md and formation != SDC_FORMATION:
        raise _err(src, f"unsupported formation {formation!r:.40}; this edgecond reads {SDC_FORMATION!r} "
                        "or no 'formation' key (plain images). Upgrade edgecond or re-create the buffer.", R.VERSION)
    if ("coefficients" in raw_specs) != (formation == SDC_FORMATION):
        raise _err(src, f"the 'coefficients' tensor and formation {SDC_FORMATION!r} must be present together; "
                        f"found tensor={'coefficients' in raw_specs}, formation={formation or None!r}.", R.METADATA)
    if formation and "soft_labels" in raw_specs:
        raise _err(src, f"formation {SDC_FORMATION!r} does not define soft labels; found a 'soft_labels' tensor.", R.METADATA)
    return formation


def _read_prefix(src: str, first8: bytes, total_size: int) -> int:
    if total_size == 0:
        raise _err(src, "the file is empty (0 bytes); expected a safetensors file of at least 8 bytes.", R.CONTAINER)
    if len(first8) < 8 or total_size < 8:
        raise _err(src, f"truncated: {total_size} bytes, expected at least 8 (header length) + header + data.", R.CONTAINER)
    (hlen,) = struct.unpack("<Q", first8[:8])
    if hlen > MAX_HEADER_BYTES:
        raise _err(src, f"header length {hlen} exceeds the cap of {MAX_HEADER_BYTES} bytes (1 MiB); the file is "
                        "damaged or not an edgecond buffer.", R.CONTAINER)
    if hlen > total_size - 8:
        raise _err(src, f"truncated: header length {hlen} needs at least {8 + hlen} bytes, file has {total_size}.", R.CONTAINER)
    if hlen % 8:
        raise _err(src, f"header length {hlen} is not a multiple of 8 as edgecond/1 requires; the file is "
                        "damaged or was rewritten by another tool.", R.CONTAINER)
    return hlen


def _parse_header(src: str, js: bytes, hlen: int, total_size: int, *, kind: str = "buffer") -> _Layout:
    """Validate a header (spec §1-§4) against the file size; returns the layout. ``kind``: buffer|delta."""
    try:
        return _parse_header_checked(src, js, hlen, total_size, kind=kind)
    except RecursionError:
        raise _err(src, "the header nests JSON values too deeply; the file is damaged.", R.CONTAINER) from None


def _parse_header_checked(src: str, js: bytes, hlen: int, total_size: int, *, kind: str) -> _Layout:
    header = _check_container(src, js)
    md = _check_metadata_keys(src, header.pop("__metadata__", None), kind)
    raw_specs = _check_tensor_entries(src, header)
    n, order = _check_tensor_shapes(src, raw_specs, md["digest"])
    data_start, begins = _check_data_layout(src, order, raw_specs, n, 8 + hlen, total_size)
    k, (c, h, w) = _order_images(order)
    ess = _check_essentials(src, md, raw_specs, k, c, h, w)
    digests, chain = _check_digest_list(src, md["digest"], n)
    prov = _check_provenance_fields(src, md)
    base_md = {kk: vv for kk, vv in md.items() if kk not in ("digest",) + _DELTA_KEYS}
    start, anchor = _check_delta_keys(src, md, base_md) if kind == "delta" else (0, b"")
    seed = _seed(base_md, order)
    _check_provenance_digest(src, md, seed)
    meta = BufferMeta(
        dataset=ess["dataset"], class_names=tuple(ess["classes"]), labels=tuple(ess["labels"]),
        image_shape=(c, h, w), dtype=_ST_NAMES[raw_specs["images"][0]], ipc=n, factor=ess["factor"],
        mean=ess["mean"], std=ess["std"], method=prov["method"], config=prov["config"], accuracy=prov["accuracy"],
        soft=ess["soft"], extra=prov["extra"], space="pixel", format=FORMAT, digests=digests, tensors=order,
        raw=base_md, provenance_digest=md.get(PROV_KEY, ""), recipe=_check_recipe(src, md),
        formation=ess["formation"],
    )
    return _Layout(meta=meta, n=n, data_start=data_start, begins=begins, seed=seed,
                   chain=chain, start=start, anchor=anchor)


def _order_images(order: Sequence[TensorSpec]) -> tuple[int, tuple[int, int, int]]:
    """``K`` and ``(C, H, W)`` of the images tensor."""
    k, c, h, w = next(t for t in order if t.name == "images").shape
    return k, (c, h, w)


def _check_container(src: str, js: bytes) -> dict:
    """Spec §1: the header is one UTF-8 JSON object."""
    if not js[:1] == b"{":
        raise _err(src, f"not a safetensors/edgecond file: the header must start with '{{', found {js[:1]!r}.",
                   R.CONTAINER)
    try:
        text = js.decode("utf-8")
        header = _loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _err(src, f"the header is not valid UTF-8 JSON ({exc}); the file is damaged.", R.CONTAINER) from None
    if not isinstance(header, dict):
        raise _err(src, "the header is not a JSON object; the file is damaged.", R.CONTAINER)
    return header


def _check_format(src: str, md: Any, kind: str) -> None:
    """Spec §3 ``format``: this reader's format (and version) for a buffer or a delta."""
    want_format = FORMAT if kind == "buffer" else DELTA_FORMAT
    if not isinstance(md, dict) or "format" not in md:
        raise _err(src, f"not an edgecond buffer: no __metadata__['format'] (expected {want_format!r}); "
                        "this looks like a plain safetensors file.", R.FOREIGN)
    fmt = md["format"]
    if not isinstance(fmt, str):
        raise _err(src, f"__metadata__['format'] must be a string, found {type(fmt).__name__}.", R.FOREIGN)
    if fmt != want_format:
        name, _, ver = fmt.partition("/")
        want_name = want_format.partition("/")[0]
        if name == want_name:
            raise _err(src, f"unsupported format version {ver!r} ({fmt!r}); this edgecond reads {want_format!r}. "
                            "Upgrade edgecond or re-create the buffer.", R.VERSION)
        raise _err(src, f"not an edgecond {kind}: format is {fmt!r}, expected {want_format!r}.", R.FOREIGN)


def _check_metadata_keys(src: str, md: Any, kind: str) -> dict[str, str]:
    """Spec §3: string values only, every required key, no unknown key."""
    _check_format(src, md, kind)
    for k, v in md.items():
        if not isinstance(v, str):
            raise _err(src, f"__metadata__[{k!r}] must be a string, found {type(v).__name__}.", R.METADATA)
    allowed = set(_REQUIRED_KEYS) | set(_OPTIONAL_KEYS) | (
        set(_DELTA_KEYS) if kind == "delta" else set(PROVENANCE_KEYS) | {PROV_KEY})
    unknown = sorted(set(md) - allowed)
    if unknown:
        raise _err(src, f"unknown metadata keys {unknown}; expected only {sorted(allowed)}.", R.METADATA)
    need = set(_REQUIRED_KEYS) | (set(_DELTA_KEYS) if kind == "delta" else set())
    missing = sorted(need - set(md))
    if missing:
        raise _err(src, f"missing metadata keys {missing}; the file is damaged or not an edgecond {kind}.",
                   R.METADATA)
    return md


def _check_tensor_entries(src: str, header: Mapping[str, Any]) -> dict[str, tuple]:
    """Spec §2: known tensor names, each ``{dtype, shape, data_offsets}`` of the right types."""
    unknown_t = sorted(set(header) - set(_TENSOR_DTYPES))
    if unknown_t:
        raise _err(src, f"unknown tensors {unknown_t}; expected 'images' and optionally 'soft_labels' "
                        "(or 'coefficients' with formation sdc/1).", R.TENSORS)
    if "images" not in header:
        raise _err(src, "no 'images' tensor; expected an 'images' tensor of shape [N, K, C, H, W].", R.TENSORS)
    raw_specs = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _err(src, f"tensor {name!r} must be an object with keys dtype, shape, data_offsets; "
                            f"found {entry!r:.120}.", R.TENSORS)
        dt, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dt not in _TENSOR_DTYPES[name]:
            raise _err(src, f"tensor {name!r} has dtype {dt!r}; expected one of {list(_TENSOR_DTYPES[name])}.",
                       R.TENSORS)
        if not (isinstance(shape, list) and all(_is_int(s) and s >= 1 for s in shape)):
            raise _err(src, f"tensor {name!r} has shape {shape!r:.80}; expected a list of positive integers.",
                       R.TENSORS)
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) and o >= 0 for o in offs)):
            raise _err(src, f"tensor {name!r} has data_offsets {offs!r:.80}; expected [begin, end] integers.",
                       R.TENSORS)
        raw_specs[name] = (dt, shape, offs)
    return raw_specs


def _check_tensor_shapes(src: str, raw_specs: Mapping[str, tuple], digest: str) -> tuple[int, tuple[TensorSpec, ...]]:
    """Spec §2-§3: ``images [N, K, C, H, W]`` (caps first), ``soft_labels``/``coefficients`` agree with it."""
    dt, ishape, _ = raw_specs["images"]
    if len(ishape) != 5:
        raise _err(src, f"'images' has shape {ishape}; expected 5 dimensions [N, K, C, H, W].", R.TENSORS)
    n, k, c, h, w = ishape
    _check_rank_count(src, n, digest)
    _check_image_caps(src, k, c, h, w)
    specs = [TensorSpec("images", dt, (k, c, h, w))]
    if "soft_labels" in raw_specs:
        sdt, sshape, _ = raw_specs["soft_labels"]
        if len(sshape) != 4 or sshape[0] != n or sshape[1] != k:
            raise _err(src, f"'soft_labels' has shape {sshape}; expected [N={n}, K={k}, factor², L].", R.TENSORS)
        _check_soft_caps(src, sshape)
        specs.append(TensorSpec("soft_labels", sdt, tuple(sshape[1:])))
    if "coefficients" in raw_specs:
        specs.append(_sdc_coefficients_spec(src, raw_specs["coefficients"], n, k))
    return n, _data_order(specs)


def _check_data_layout(src: str, order: Sequence[TensorSpec], raw_specs: Mapping[str, tuple], n: int,
                       data_start: int, total_size: int) -> tuple[int, dict[str, int]]:
    """Spec §2: the tensors tile the data section in data order, no overlap, gap or trailing byte."""
    data_len = total_size - data_start
    pos = 0
    begins = {}
    for t in order:
        b, e = raw_specs[t.name][2]
        size = n * t.rank_bytes
        if b != pos or e - b != size:
            raise _err(src, f"tensor {t.name!r} has data_offsets [{b}, {e}]; expected [{pos}, {pos + size}] "
                            f"(tensors tile the data section in the order {[s.name for s in order]}, no overlap or gap).",
                       R.LAYOUT)
        begins[t.name] = data_start + b
        pos = e
    if pos != data_len:
        what = "truncated" if data_len < pos else "trailing bytes"
        raise _err(src, f"{what}: the tensors need {pos} data bytes, the file has {data_len} "
                        f"(file size {total_size}, expected {data_start + pos}).", R.LAYOUT)
    return data_start, begins


def _js_field(src: str, md: Mapping[str, str], key: str, typ: type, what: str, reason: R) -> Any:
    """A metadata value that holds JSON of type ``typ``."""
    try:
        val = _loads(md[key])
    except ValueError as exc:
        raise _err(src, f"__metadata__[{key!r}] is not valid JSON ({exc}); expected {what}.", reason) from None
    if not isinstance(val, typ):
        raise _err(src, f"__metadata__[{key!r}] is {md[key]!r:.80}; expected {what}.", reason)
    return val


def _check_essentials(src: str, md: Mapping[str, str], raw_specs: Mapping[str, tuple],
                      k: int, c: int, h: int, w: int) -> dict[str, Any]:
    """Spec §3 essential values: dataset, classes, labels, mean/std, space, factor, soft, formation."""
    dataset = md["dataset"]
    if not dataset:
        raise _err(src, "__metadata__['dataset'] is empty; expected the dataset name.", R.METADATA)
    out: dict[str, Any] = {"dataset": dataset, "classes": _check_classes(src, md, k),
                           "labels": _check_labels(src, md, k), **_check_stats(src, md, c)}
    if md.get("space", "pixel") != "pixel":
        raise _err(src, f"value space {md['space']!r:.40} is not supported; expected 'pixel' ([0, 1]) or no "
                        "'space' key.", R.METADATA)
    out["factor"] = factor = _check_factor(src, md, h, w)
    out["soft"] = _check_soft(src, md, raw_specs, factor)
    out["formation"] = _check_formation(src, md, raw_specs)
    return out


def _check_classes(src: str, md: Mapping[str, str], k: int) -> list:
    classes = _parse_names(md["classes"])
    if classes is None or len(classes) != k or not all(isinstance(v, str) and v for v in classes) \
            or len(set(classes)) != k:
        raise _err(src, f"'classes' must list {k} distinct non-empty names (one per class slot), comma-separated "
                        f"or as a JSON array; found {md['classes']!r:.120}.", R.METADATA)
    return classes


def _check_labels(src: str, md: Mapping[str, str], k: int) -> list:
    if "labels" not in md:
        return list(range(k))
    labels = _parse_list(md["labels"])
    if labels is None or len(labels) != k or not all(_is_int(v) and 0 <= v < MAX_LABEL for v in labels) \
            or len(set(labels)) != k:
        raise _err(src, f"'labels' must list {k} distinct integers in [0, 2**31) (comma-separated); "
                        f"found {md['labels']!r:.120}.", R.METADATA)
    return labels


def _check_stats(src: str, md: Mapping[str, str], c: int) -> dict[str, tuple[float, ...]]:
    stats = {}
    for key in ("mean", "std"):
        vals = _parse_list(md[key])
        if vals is None or len(vals) != c or not all(_finite_number(v) for v in vals):
            raise _err(src, f"'{key}' must list {c} finite numbers (one per channel, comma-separated); "
                            f"found {md[key]!r:.120}.", R.METADATA)
        if key == "std" and not all(v > 0 for v in vals):
            raise _err(src, f"'std' must be positive; found {vals!r}.", R.METADATA)
        stats[key] = tuple(float(v) for v in vals)
    return stats


def _check_factor(src: str, md: Mapping[str, str], h: int, w: int) -> int:
    fac = md.get("factor", "1")
    if not (fac.isascii() and fac.isdigit() and fac[0] != "0" and len(fac) < 6):
        raise _err(src, f"'factor' is {fac!r:.40}; expected a positive decimal integer (omitted when 1).", R.METADATA)
    factor = int(fac)
    _check_factor_cap(src, factor)
    if h % factor or w % factor:
        raise _err(src, f"factor {factor} does not divide the image size {h}x{w}.", R.METADATA)
    return factor


def _check_soft(src: str, md: Mapping[str, str], raw_specs: Mapping[str, tuple], factor: int) -> dict | None:
    """Spec §3 ``soft``: present iff the ``soft_labels`` tensor is, with ``factor²`` labels per image."""
    soft = None
    if "soft" in md:
        soft = _js_field(src, md, "soft", dict, "a JSON object {\"kind\": \"logits\"|\"probs\"}", R.METADATA)
        if soft.get("kind") not in _SOFT_KINDS:
            raise _err(src, f"soft label kind {soft.get('kind')!r:.40}; expected one of {list(_SOFT_KINDS)}.",
                       R.METADATA)
    has_soft_tensor = "soft_labels" in raw_specs
    if has_soft_tensor != (soft is not None):
        raise _err(src, "the 'soft_labels' tensor and the 'soft' metadata key must be present together; "
                        f"found tensor={has_soft_tensor}, key={soft is not None}.", R.METADATA)
    if has_soft_tensor and raw_specs["soft_labels"][1][2] != factor * factor:
        raise _err(src, f"'soft_labels' has {raw_specs['soft_labels'][1][2]} entries per stored image; "
                        f"expected factor² = {factor * factor}.", R.TENSORS)
    return soft


def _check_digest_list(src: str, dig: str, n: int) -> tuple[tuple[str, ...], list[bytes]]:
    """Spec §4: ``n`` canonical 22-character base64url entries."""
    digests = tuple(dig[i * DIGEST_CHARS:(i + 1) * DIGEST_CHARS] for i in range(n))
    chain = [_unb64(d) for d in digests]
    if len(dig) != n * DIGEST_CHARS or any(d is None for d in chain):
        raise _err(src, f"'digest' must be {n} x {DIGEST_CHARS} base64url characters (one 128-bit entry per "
                        f"rank, A-Z a-z 0-9 - _, canonical, no padding); found {len(dig)} characters.", R.DIGEST)
    return digests, chain


def _check_provenance_fields(src: str, md: Mapping[str, str]) -> dict[str, Any]:
    """Spec §3 provenance: descriptive keys (method, config, extra, accuracy), covered by 'prov'."""
    method = md.get("method", "")
    if "method" in md and not method:
        raise _err(src, "__metadata__['method'] is empty; expected the condensation method name.", R.PROVENANCE)
    config = _js_field(src, md, "config", dict, "a JSON object", R.PROVENANCE) if "config" in md else {}
    extra = _js_field(src, md, "extra", dict, "a JSON object", R.PROVENANCE) if "extra" in md else {}
    accuracy: dict[int, dict] = {}
    if "accuracy" in md:
        acc = _js_field(src, md, "accuracy", dict, "a JSON object {\"<n>\": {\"mean\": a, ...}}", R.PROVENANCE)
        for key, val in acc.items():
            if not (key.isascii() and key.isdigit() and key[0] != "0" and len(key) < 10):
                raise _err(src, f"accuracy key {key!r:.40} is not a positive decimal size.", R.PROVENANCE)
            mean = val.get("mean") if isinstance(val, dict) else None
            if not (_finite_number(mean) and 0 <= mean <= 1):
                raise _err(src, f"accuracy[{key}] is {val!r:.80}; expected an object with 'mean' in [0, 1].",
                           R.PROVENANCE)
            accuracy[int(key)] = val
    return {"method": method, "config": config, "extra": extra, "accuracy": accuracy}


def _check_delta_keys(src: str, md: Mapping[str, str], base_md: dict[str, str]) -> tuple[int, bytes]:
    """Spec §6: a delta's ``start`` rank and ``anchor`` digest; its seed is the buffer's (format edgecond/1)."""
    st, an = md["start"], md["anchor"]
    if not (st.isascii() and st.isdigit() and len(st) < 10 and (st == "0" or st[0] != "0")):
        raise _err(src, f"delta 'start' is {st!r:.40}; expected a non-negative decimal rank.", R.DELTA)
    anchor_b = _unb64(an)
    if anchor_b is None:
        raise _err(src, f"delta 'anchor' is {an!r:.40}; expected {DIGEST_CHARS} base64url characters "
                        "(the chain entry before 'start').", R.DELTA)
    base_md["format"] = FORMAT
    return int(st), anchor_b


def _check_provenance_digest(src: str, md: Mapping[str, str], seed: bytes) -> None:
    """Spec §4: 'prov' is present iff provenance keys are, and hashes them (bound to the seed)."""
    prov = md.get(PROV_KEY, "")
    has_prov_keys = any(kk in md for kk in PROVENANCE_KEYS)
    if has_prov_keys != (PROV_KEY in md):
        what = ("provenance keys " + str([kk for kk in PROVENANCE_KEYS if kk in md]) + " without 'prov'"
                if has_prov_keys else "'prov' without any provenance key")
        raise _err(src, f"{what}; expected both or neither ('prov' is the digest of {list(PROVENANCE_KEYS)}). "
                        "Re-create the file, or slice it with provenance=False to drop the provenance.", R.PROVENANCE)
    if has_prov_keys:
        want = _prov_digest(seed, md)
        if prov != want:
            raise _err(src, f"provenance digest mismatch: 'prov' is {prov!r:.40}, the provenance keys hash to "
                            f"{want!r} (it also covers the essential metadata); the method/config/accuracy/extra "
                            "or the essential metadata was edited or damaged. "
                            "Re-download the file, or slice it with provenance=False (lean) to drop it.",
                       R.PROVENANCE)


def _check_rank_count(src: str, n: int, digest: str) -> None:
    """Spec §3 caps: the rank count is bounded by its digest list, checked before any per-rank work."""
    if len(digest) != n * DIGEST_CHARS:
        raise _err(src, f"the images tensor declares {n} ranks but 'digest' has {len(digest)} characters; "
                        f"expected {DIGEST_CHARS} base64url characters per rank (at most {MAX_HEADER_BYTES // DIGEST_CHARS} ranks fit "
                        "the 1 MiB header). The file is damaged or hostile.", R.CAPS)


def _check_image_caps(src: str, k: int, c: int, h: int, w: int) -> None:
    """Spec §3 caps on the declared class slots, channels and image size."""
    for what, val, cap in (("class slots K", k, MAX_CLASSES), ("channels C", c, MAX_CHANNELS),
                           ("image height H", h, MAX_SIDE), ("image width W", w, MAX_SIDE)):
        if val > cap:
            raise _err(src, f"the images tensor declares {val} {what}; the cap is {cap}. The file is damaged "
                            "or hostile (edgecond never writes such a buffer).", R.CAPS)


def _check_soft_caps(src: str, sshape: Sequence[int]) -> None:
    if sshape[3] > MAX_SOFT_DIM:
        raise _err(src, f"'soft_labels' declares {sshape[3]} classes per label; the cap is {MAX_SOFT_DIM}.", R.CAPS)


def _check_factor_cap(src: str, factor: int) -> None:
    if factor > MAX_FACTOR:
        raise _err(src, f"'factor' is {factor}; the cap is {MAX_FACTOR} (each stored image decodes to factor² "
                        "training images). The file is damaged or hostile.", R.CAPS)


def _layout_from_buffer(src: str, buf: memoryview, kind: str = "buffer") -> _Layout:
    total = len(buf)
    hlen = _read_prefix(src, bytes(buf[:8]), total)
    return _parse_header(src, bytes(buf[8:8 + hlen]), hlen, total, kind=kind)


def _layout_from_file(src: str, f: IO[bytes], total: int) -> _Layout:
    f.seek(0)
    hlen = _read_prefix(src, f.read(8), total)
    js = f.read(hlen)
    if len(js) != hlen:
        raise _err(src, f"truncated: could read only {len(js)} of {hlen} header bytes.", R.CONTAINER)
    return _parse_header(src, js, hlen, total)


def _check_recipe(src: str, md: Mapping[str, str]) -> Any:
    """Spec §3 ``recipe``: parse and validate (None when absent: older buffers carry none)."""
    if "recipe" not in md:
        return None
    from ..errors import BufferFormatError
    from ..recipe import parse_recipe

    try:
        return parse_recipe(md["recipe"], src=src)
    except BufferFormatError as exc:
        if exc.reason is R.OTHER:
            exc.reason = R.METADATA
        raise

