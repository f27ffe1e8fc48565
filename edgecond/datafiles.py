"""Dataset file formats read without torch: IDX (MNIST's format) and the checks an ``.npz`` passes
before :mod:`edgecond.data` loads it (no zip bombs)."""
from __future__ import annotations

import gzip
import os
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DatasetError

__all__ = ["read_idx"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) into a numpy array; clear errors on bad headers."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DatasetError(f"IDX file {str(path)!r} does not exist.") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {str(path)!r}: {exc}; the file is damaged, re-download it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"{str(path)!r} is not an IDX file (header {data[:4].hex() or 'empty'}); expected 00 00 <type> <ndim>."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"IDX file {str(path)!r} is truncated inside its header.")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(data) - header != count * dtype.itemsize:
        raise DatasetError(
            f"IDX file {str(path)!r} holds {len(data) - header} data bytes but its header {tuple(dims)} "
            f"needs {count * dtype.itemsize}; the file is truncated or damaged."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx_dir(dirs: Sequence[Path]) -> tuple[Path, dict[str, Path]] | None:
    for d in dirs:
        found = {}
        for key, stem in _MNIST_FILES.items():
            for cand in (d / (stem + ".gz"), d / stem):
                if cand.is_file():
                    found[key] = cand
                    break
        if len(found) == 4:
            return d, found
    return None



_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


_NPZ_MAX_BYTES = 16 * 1024**3  # cap on the arrays an .npz may declare (before anything is allocated)


def _check_npz_sizes(path: Path) -> None:
    """The file must be a zip whose .npy members declare no more bytes than they hold (no bombs)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{str(path)!r} is not a .npz (zip) file ({exc}); expected numpy.savez output "
                           f"with arrays {', '.join(_NPZ_KEYS)}.") from None
    total = 0
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            try:
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(fh))
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
                raise DatasetError(f"{str(path)!r}: member {info.filename!r} is not a readable .npy array "
                                   f"({exc}).") from None
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
            total += need
            if need > info.file_size or total > _NPZ_MAX_BYTES:
                raise DatasetError(f"{str(path)!r}: array {info.filename!r} declares shape {shape} ({need} bytes) "
                                   f"but holds {info.file_size} bytes (cap {_NPZ_MAX_BYTES} in all); the file is "
                                   "damaged or hostile.")
