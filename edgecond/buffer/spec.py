"""Spec constants of the multisize buffer format (``docs/buffer-format.md``, format ``edgecond/1``).

Caps, dtype codes, metadata key sets and the one error constructor every check uses.
"""
from __future__ import annotations

import os
import re
from typing import IO, Union

import numpy as np

from ..errors import BufferFormatError, BufferFormatReason
from ..formation import SDC_KIND, SDC_VERSION

FORMAT_NAME = "edgecond"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
DELTA_FORMAT = f"{FORMAT_NAME}-delta/{FORMAT_VERSION}"
MAX_HEADER_BYTES = 1 << 20  # 1 MiB
DIGEST_BYTES = 16  # chain entries: SHA-256 truncated to 128 bits
DIGEST_CHARS = 22  # ... written as unpadded base64url (spec §4)
MAX_LABEL = 2**31  # class ids are in [0, 2**31)
_B64 = re.compile(r"[A-Za-z0-9_-]{22}")
# Hard caps on what a header may declare (spec §3 "Caps"): checked before anything proportional to
# them is allocated or looped over. The rank count needs no cap of its own: its digest list
# (22 characters per rank) must fit the 1 MiB header, so N <= 47,662.
MAX_CLASSES = 1 << 17  # K: class slots (ImageNet-21k has 21,841)
MAX_CHANNELS = 16  # C
MAX_SIDE = 4096  # H and W, pixels
MAX_FACTOR = 8  # formation factor f (each stored image decodes to f² images)
MAX_SOFT_DIM = 1 << 17  # L: width of a soft label
# Decoding (training_arrays, images_class_major, soft_targets) refuses to allocate more than this
# unless the caller passes max_bytes=... or sets EDGECOND_DECODE_BUDGET (e.g. "8GiB").
DEFAULT_DECODE_BUDGET = 2 * 1024**3  # 2 GiB
DECODE_BUDGET_ENV = "EDGECOND_DECODE_BUDGET"

_ST_TO_NP = {"U8": np.dtype("uint8"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
_NP_TO_ST = {"uint8": "U8", "float16": "F16", "float32": "F32"}
_ST_NAMES = {v: k for k, v in _NP_TO_ST.items()}
_TENSOR_DTYPES = {"images": ("U8", "F16", "F32"), "soft_labels": ("F16", "F32"),
                  "coefficients": ("F16", "F32")}  # coefficients: formation sdc/1 only (spec §5.1)
# spec §3: essential keys (covered by the digest chain's seed; every slice keeps them) ...
_REQUIRED_KEYS = ("classes", "dataset", "digest", "format", "mean", "std")
_OPTIONAL_KEYS = ("factor", "formation", "labels", "recipe", "soft", "space")  # written only when not the default
SDC_FORMATION = f"{SDC_KIND}/{SDC_VERSION}"  # metadata 'formation' of slimmable (SDC) buffers
MAX_SDC_COEFFICIENTS = 1 << 16  # cap on M, the coefficients per rank and class (spec §5.1)
# ... provenance keys (descriptive; covered by PROV_KEY; dropped by provenance=False)
PROVENANCE_KEYS = ("accuracy", "config", "extra", "method")
PROV_KEY = "prov"
_DELTA_KEYS = ("anchor", "start")
_PROV_TAG = FORMAT.encode() + b" provenance\0"
_SOFT_KINDS = ("logits", "probs")

PathOrStream = Union[str, "os.PathLike[str]", IO[bytes]]


def _err(src: str, msg: str, reason: BufferFormatReason) -> BufferFormatError:
    return BufferFormatError(f"{src}: {msg}", reason=reason)
