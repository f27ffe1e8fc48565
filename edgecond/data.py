"""Dataset registry: load a dataset by name into pixel-space tensors.

Every loader returns an :class:`ImageDataset`: ``float32`` images in **pixel space [0, 1]**,
shape ``[N, C, H, W]``, ``int64`` labels, class names and the per-channel mean/std of the
training split. Models see normalised inputs; :meth:`ImageDataset.normalize` does that.

Names (case-insensitive, ``_`` == ``-``)::

    digits            scikit-learn's bundled 8x8 digits (offline default), 75/25 stratified split
    mnist             torchvision MNIST            (root + download switch)
    fashion-mnist     Debian's IDX files (/usr/share/datasets/fashion-mnist) or torchvision
    cifar10 cifar100  torchvision CIFAR
    svhn              torchvision SVHN
    imagefolder:PATH  PATH/train/<class>/*.png|jpg, PATH/test/<class>/* (decoded once, cached as .npz)
    npz:PATH          arrays x_train, y_train, x_test, y_test (NHWC or NCHW; uint8 or float in [0,1])

``load_dataset`` caches nothing in memory; only ``imagefolder`` keeps an on-disk ``.npz`` cache
of the decoded pixels (invalidated when any file's name, size or mtime changes).
"""
from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ConfigError, DatasetError
from .facts import DataFacts
from .datafiles import _NPZ_KEYS, _check_npz_sizes, _find_idx_dir, read_idx  # noqa: F401  (read_idx re-exported)
from .imagedata import ImageDataset, from_arrays, holdout_split  # noqa: F401  (re-exported)
from .registry import Registry

__all__ = [
    "ImageDataset",
    "DatasetInfo",
    "DatasetSpec",
    "DATASETS",
    "register_dataset",
    "load_dataset",
    "registered_facts",
    "provenance",
    "dataset_of_buffer",
    "flips_of_buffer",
    "list_datasets",
    "from_arrays",
    "holdout_split",
    "read_idx",
    "default_root",
    "cache_dir",
    "DEBIAN_FASHION_MNIST",
]

log = logging.getLogger(__name__)

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX gz files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def default_root() -> Path:
    """Root for torchvision downloads: ``$EDGECOND_DATA`` or ``~/.cache/edgecond/datasets``."""
    env = os.environ.get("EDGECOND_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecond" / "datasets"


def cache_dir() -> Path:
    """Cache for decoded image folders: ``$EDGECOND_CACHE`` or ``~/.cache/edgecond/cache``."""
    env = os.environ.get("EDGECOND_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecond" / "cache"




# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass
class DatasetInfo:
    """What :func:`list_datasets` reports for one dataset name."""

    name: str
    description: str
    source: str
    available: bool
    flips: bool | None = None  #: horizontal flips keep labels (None: the user says, default no)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "available": self.available, "flips": self.flips}


@dataclass
class DatasetSpec:
    """A registered loader. ``loader(arg, root, download)``; ``arg`` is the text after ``name:``."""

    loader: Callable[[str | None, Path, bool], ImageDataset]
    description: str
    locate: Callable[[Path], tuple[str, bool]] = field(default=lambda root: ("", True))
    takes_path: bool = False
    #: does a horizontal flip keep labels? ``None``: the user says (``load_dataset(flips=...)``),
    #: default ``False``
    flips: bool | None = None
    #: the dataset's facts when they are known without loading it (torchvision sets), else None
    facts: DataFacts | None = None


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset",
    hint="Use 'imagefolder:PATH' or 'npz:PATH' for your own data; `edgecond datasets` lists what is available.",
)


def register_dataset(
    name: str,
    *,
    description: str,
    locate: Callable[[Path], tuple[str, bool]] | None = None,
    takes_path: bool = False,
    flips: bool | None = None,
    facts: DataFacts | None = None,
):
    """Decorator registering ``loader(arg, root, download) -> ImageDataset`` under ``name``.

    ``flips``: whether horizontal flips keep this dataset's labels (``None`` = the caller's
    ``load_dataset(flips=...)``, default ``False``)."""

    def deco(loader):
        DATASETS.register(
            name,
            DatasetSpec(
                loader=loader,
                description=description,
                locate=locate or (lambda root: ("", True)),
                takes_path=takes_path,
                flips=flips,
                facts=facts,
            ),
        )
        return loader

    return deco


def load_dataset(name: str, *, root: str | os.PathLike | None = None, download: bool = False,
                 flips: bool | None = None) -> ImageDataset:
    """Load a dataset by name (see module docstring). ``root`` is where torchvision datasets live
    (default :func:`default_root`); ``download=True`` lets torchvision fetch missing files.

    ``flips``: whether horizontal flips keep labels. Registered datasets know (CIFAR yes; digits,
    MNIST, Fashion-MNIST... see ``edgecond datasets``); for ``npz:``/``imagefolder:`` data pass it
    (default ``False``: never mirror what might be text or digits). Passing a value that
    contradicts a registered dataset's is an error."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"dataset name {name!r} is empty; expected e.g. 'digits' or 'imagefolder:PATH'.")
    base, sep, arg = name.strip().partition(":")
    try:
        spec = DATASETS.get(base)
    except ConfigError as exc:  # unknown name: a dataset problem, listing what exists
        raise DatasetError(str(exc)) from None
    if spec.takes_path and not arg:
        raise DatasetError(f"dataset {name!r} needs a path: write '{base}:PATH'.")
    if not spec.takes_path and sep:
        raise DatasetError(f"dataset {base!r} takes no ':PATH' suffix (got {name!r}); pass --root to move its files.")
    root_path = Path(root).expanduser() if root is not None else default_root()
    if flips is not None and spec.flips is not None and bool(flips) != spec.flips:
        raise DatasetError(
            f"flips={bool(flips)} for dataset {base!r}, whose labels are {'kept' if spec.flips else 'not kept'} "
            f"by a horizontal flip; drop the flips setting (it is only for npz:/imagefolder: data)."
        )
    ds = spec.loader(arg or None, root_path, bool(download))
    ds.flips = bool(spec.flips if spec.flips is not None else (flips if flips is not None else False))
    return ds


def registered_facts(name: str) -> DataFacts | None:
    """The facts of a registered dataset that are known without loading it (the torchvision
    sets), or ``None`` (load the dataset and read ``.facts``)."""
    base, _, arg = str(name).strip().partition(":")
    try:
        spec = DATASETS.get(base)
    except ConfigError:
        return None
    return None if arg else spec.facts


def provenance(dataset: ImageDataset) -> dict:
    """What a buffer records about the data it was condensed from: the name to reopen it with
    (``npz:``/``imagefolder:`` with the resolved path), where it was read, the content digest of
    the training split and its :class:`~edgecond.facts.DataFacts`."""
    return {"name": dataset.name, "source": dataset.source, "digest": dataset.digest(),
            "facts": dataset.facts.to_dict()}


def flips_of_buffer(meta) -> bool:
    """The flip policy for training on a buffer: the flips fact recorded at condensation time
    (``extra["data"]["facts"]["flips"]``); for buffers without it (older files, lean slices),
    the registry's answer for the recorded dataset name; ``False`` when nobody knows."""
    rec = ((getattr(meta, "extra", None) or {}).get("data") or {}).get("facts") or {}
    if "flips" in rec:
        return bool(rec["flips"])
    return bool(_registered_flips(str(getattr(meta, "dataset", ""))))


def _registered_flips(name: str) -> bool | None:
    """The registry's flips fact for a dataset name (``None``: unregistered, or the user says)."""
    base = str(name).partition(":")[0]
    return DATASETS.get(base).flips if base and base in DATASETS else None


def dataset_of_buffer(meta, *, root: str | os.PathLike | None = None) -> ImageDataset:
    """Reopen the dataset a buffer was condensed from (``meta``: its :class:`BufferMeta`) and check
    that it is the same data: a moved, missing or changed file is a :class:`DatasetError` that
    says which, and how to point at the data explicitly (``--dataset``)."""
    rec = (getattr(meta, "extra", None) or {}).get("data") or {}
    name = rec.get("name") or getattr(meta, "dataset", "")
    flips = (rec.get("facts") or {}).get("flips")
    try:
        ds = load_dataset(name, root=root, flips=None if _registered_flips(name) is not None else flips)
    except DatasetError as exc:
        raise DatasetError(
            f"the buffer was condensed from {name!r}, which cannot be opened now ({exc}). If the data moved, "
            "pass it explicitly: --dataset NAME (e.g. npz:NEW/PATH.npz)."
        ) from None
    want = rec.get("digest")
    if want and ds.digest() != want:
        raise DatasetError(
            f"dataset {name!r} has changed since the buffer was condensed: training-split digest {ds.digest()} "
            f"!= recorded {want}. Evaluate on the original data, or pass --dataset explicitly to use this data."
        )
    return ds


def list_datasets(*, root: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """Every registered dataset, where it reads from and whether its files are present."""
    root_path = Path(root).expanduser() if root is not None else default_root()
    out = []
    for key, spec in DATASETS.items():
        source, available = spec.locate(root_path)
        out.append(DatasetInfo(name=key + (":PATH" if spec.takes_path else ""), description=spec.description,
                               source=source, available=available, flips=spec.flips))
    return out


# --------------------------------------------------------------------------------------------
# digits (offline default)
# --------------------------------------------------------------------------------------------


@register_dataset(
    "digits",
    flips=False,
    description="scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), 75/25 stratified split",
    locate=lambda root: ("scikit-learn (bundled with the package, offline)", True),
)
def _load_digits(arg: str | None, root: Path, download: bool) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return from_arrays("digits", x_tr, y_tr, x_te, y_te, class_names=[str(i) for i in range(10)],
                       source="sklearn.datasets.load_digits")


# --------------------------------------------------------------------------------------------
# IDX files (MNIST format; edgecond.datafiles) — Debian's fashion-mnist package, raw MNIST folders
# --------------------------------------------------------------------------------------------


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def _fashion_dirs(root: Path) -> list[Path]:
    return [DEBIAN_FASHION_MNIST, root / "FashionMNIST" / "raw", root / "fashion-mnist"]


# --------------------------------------------------------------------------------------------
# torchvision datasets
# --------------------------------------------------------------------------------------------


def _tv_call(name: str, root: Path, download: bool, make: Callable[[bool], object], hint_files: str):
    """Call a torchvision constructor; turn its missing-file/download errors into DatasetError."""
    if download:
        root.mkdir(parents=True, exist_ok=True)
    try:
        return make(download)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
        if download:
            raise DatasetError(
                f"could not download {name!r} into {str(root)!r} ({type(exc).__name__}: {exc}). "
                f"Check the internet connection, or put {hint_files} under that root yourself "
                "and run without --download."
            ) from None
        raise DatasetError(
            f"dataset {name!r} was not found under root {str(root)!r} (expected {hint_files}). "
            "Pass download=True (CLI: --download) to fetch it, or --root / $EDGECOND_DATA to where it is. "
            "Offline, use 'digits', 'imagefolder:PATH' or 'npz:PATH'."
        ) from None


def _exists_all(paths: Sequence[Path]) -> bool:
    return all(p.exists() for p in paths)


@register_dataset(
    "mnist",
    facts=DataFacts(image_shape=(1, 28, 28), num_classes=10, train_per_class=5421, train_size=60000, flips=False),
    flips=False,
    description="MNIST 28x28 handwritten digits (60k/10k), via torchvision",
    locate=lambda root: (str(root / "MNIST"), _find_idx_dir([root / "MNIST" / "raw"]) is not None),
)
def _load_mnist(arg: str | None, root: Path, download: bool) -> ImageDataset:
    found = _find_idx_dir([root / "MNIST" / "raw"])
    if found is None or download:
        from torchvision import datasets as tvd

        _tv_call("mnist", root, download,
                 lambda dl: [tvd.MNIST(str(root), train=t, download=dl) for t in (True, False)],
                 "MNIST/raw/{train,t10k}-{images,labels}-idx?-ubyte")
        found = _find_idx_dir([root / "MNIST" / "raw"])
        if found is None:
            raise DatasetError(f"torchvision fetched MNIST but its raw IDX files are missing under {str(root)!r}.")
    return _load_idx_set("mnist", found, [str(i) for i in range(10)])


def _load_idx_set(name: str, found: tuple[Path, dict[str, Path]], class_names: list[str]) -> ImageDataset:
    d, files = found
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        xs, ys = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise DatasetError(
                f"{name}: IDX files in {str(d)!r} have images {xs.shape} and labels {ys.shape} for the {split} split; "
                "expected images [N, H, W] and labels [N]."
            )
    return from_arrays(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       class_names=class_names, source=str(d))


def _locate_fashion(root: Path) -> tuple[str, bool]:
    found = _find_idx_dir(_fashion_dirs(root))
    if found:
        return str(found[0]), True
    return f"{DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist) or {root / 'FashionMNIST'}", False


@register_dataset(
    "fashion-mnist",
    facts=DataFacts(image_shape=(1, 28, 28), num_classes=10, train_per_class=6000, train_size=60000, flips=True),
    flips=True,
    description="Fashion-MNIST 28x28 (60k/10k): Debian's dataset-fashion-mnist IDX files, else torchvision",
    locate=_locate_fashion,
)
def _load_fashion(arg: str | None, root: Path, download: bool) -> ImageDataset:
    found = _find_idx_dir(_fashion_dirs(root))
    if found is None:
        if not download:
            raise DatasetError(
                "dataset 'fashion-mnist' was not found: looked for train-images-idx3-ubyte(.gz), "
                "train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz) in "
                + ", ".join(repr(str(p)) for p in _fashion_dirs(root))
                + ". Install Debian's package (apt-get install dataset-fashion-mnist), or pass "
                "download=True (CLI: --download) to fetch it with torchvision."
            )
        from torchvision import datasets as tvd

        _tv_call("fashion-mnist", root, download,
                 lambda dl: [tvd.FashionMNIST(str(root), train=t, download=dl) for t in (True, False)],
                 "FashionMNIST/raw/*-ubyte")
        found = _find_idx_dir(_fashion_dirs(root))
        if found is None:
            raise DatasetError(f"torchvision fetched Fashion-MNIST but its IDX files are missing under {str(root)!r}.")
    return _load_idx_set("fashion-mnist", found, FASHION_CLASSES)


def _load_cifar(name: str, cls_name: str, folder: str, root: Path, download: bool) -> ImageDataset:
    from torchvision import datasets as tvd

    cls = getattr(tvd, cls_name)
    # torchvision reads the official CIFAR python batches (the only format they are distributed in).
    sets = _tv_call(name, root, download,
                    lambda dl: [cls(str(root), train=t, download=dl) for t in (True, False)],
                    f"{folder}/ (the extracted official archive)")
    tr, te = sets
    return from_arrays(name, np.asarray(tr.data), np.asarray(tr.targets), np.asarray(te.data),
                       np.asarray(te.targets), class_names=list(tr.classes), source=str(root / folder))


def _register_cifar(name: str, cls_name: str, folder: str, test_file: str, num_classes: int, description: str):
    """Register a torchvision CIFAR set (32x32 colour, 50k/10k, flips keep labels)."""

    @register_dataset(
        name,
        facts=DataFacts(image_shape=(3, 32, 32), num_classes=num_classes, train_per_class=50000 // num_classes,
                        train_size=50000, flips=True),
        flips=True,
        description=description,
        locate=lambda root: (str(root / folder), (root / folder / test_file).exists()),
    )
    def load(arg: str | None, root: Path, download: bool) -> ImageDataset:
        return _load_cifar(name, cls_name, folder, root, download)

    return load


_load_cifar10 = _register_cifar("cifar10", "CIFAR10", "cifar-10-batches-py", "test_batch", 10,
                                "CIFAR-10 32x32 colour (50k/10k), via torchvision")
_load_cifar100 = _register_cifar("cifar100", "CIFAR100", "cifar-100-python", "test", 100,
                                 "CIFAR-100 32x32 colour (50k/10k, 100 classes), via torchvision")


@register_dataset(
    "svhn",
    facts=DataFacts(image_shape=(3, 32, 32), num_classes=10, train_per_class=4659, train_size=73257, flips=False),
    flips=False,
    description="SVHN 32x32 house numbers (73k/26k), via torchvision",
    locate=lambda root: (str(root / "svhn"), _exists_all([root / "svhn" / "train_32x32.mat",
                                                            root / "svhn" / "test_32x32.mat"])),
)
def _load_svhn(arg: str | None, root: Path, download: bool) -> ImageDataset:
    from torchvision import datasets as tvd

    base = root / "svhn"
    tr, te = _tv_call("svhn", base, download,
                      lambda dl: [tvd.SVHN(str(base), split=s, download=dl) for s in ("train", "test")],
                      "svhn/train_32x32.mat and svhn/test_32x32.mat")
    # torchvision already maps label 10 → 0 for the digit zero
    return from_arrays("svhn", np.asarray(tr.data), np.asarray(tr.labels), np.asarray(te.data),
                       np.asarray(te.labels), class_names=[str(i) for i in range(10)], source=str(base))


# --------------------------------------------------------------------------------------------
# npz:PATH
# --------------------------------------------------------------------------------------------



@register_dataset(
    "npz",
    description="your arrays: .npz with x_train, y_train, x_test, y_test (NHWC or NCHW, uint8 or float in [0,1]); "
                "optional class_names",
    locate=lambda root: ("PATH (a .npz file)", True),
    takes_path=True,
)
def _load_npz(arg: str | None, root: Path, download: bool) -> ImageDataset:
    path = Path(str(arg)).expanduser()
    if not path.is_file():
        raise DatasetError(
            f"npz dataset file {str(path)!r} does not exist; expected a .npz with arrays "
            f"{', '.join(_NPZ_KEYS)} (numpy.savez)."
        )
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in _NPZ_KEYS if k not in keys]
            if missing:
                raise DatasetError(
                    f"{str(path)!r} lacks arrays {missing}; it has {sorted(keys)}. Expected "
                    f"{', '.join(_NPZ_KEYS)} (optional: class_names)."
                )
            arrays = {k: z[k] for k in _NPZ_KEYS}
            names = [str(s) for s in z["class_names"].tolist()] if "class_names" in keys else None
    except DatasetError:
        raise
    except ValueError as exc:  # object arrays need pickle: refused
        raise DatasetError(
            f"cannot read {str(path)!r} without pickle ({exc}); store plain numeric arrays "
            "and class_names as a unicode string array (np.array([...], dtype=str))."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable .npz file ({exc}).") from None
    return from_arrays(f"npz:{path.resolve()}", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       class_names=names, source=str(path.resolve()))


# --------------------------------------------------------------------------------------------
# imagefolder:PATH
# --------------------------------------------------------------------------------------------


def _list_images(split_dir: Path, stats: dict[str, tuple[int, int]] | None = None) -> dict[str, list[Path]]:
    """Sorted class folders → sorted image files. When ``stats`` is given, each file's
    (size, mtime_ns) is recorded there during the same directory scan (cache fingerprint)."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    out: dict[str, list[Path]] = {}
    for c in classes:
        entries = [e for e in os.scandir(split_dir / c)
                   if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
        entries.sort(key=lambda e: e.name)
        if stats is not None:
            for e in entries:
                st = e.stat()
                stats[e.path] = (st.st_size, st.st_mtime_ns)
        out[c] = [Path(e.path) for e in entries]
    return out


def _fingerprint(listing: dict[str, dict[str, list[Path]]], stats: dict[str, tuple[int, int]]) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        for c, files in listing[split].items():
            for p in files:
                size, mtime = stats.get(str(p)) or (p.stat().st_size, p.stat().st_mtime_ns)
                h.update(f"{split}/{c}/{p.name}:{size}:{mtime}\n".encode())
    return h.hexdigest()


def _decode_images(files: Sequence[Path], mode: str, size: tuple[int, int] | None, what: str) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def one(p: Path) -> np.ndarray:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
        except Exception as exc:  # PIL raises many types
            raise DatasetError(f"{what}: cannot decode image {str(p)!r} ({exc}); remove or replace it.") from None
        if size is not None and arr.shape[:2] != size:
            raise DatasetError(
                f"{what}: image {str(p)!r} is {arr.shape[1]}x{arr.shape[0]} (WxH) but the first image is "
                f"{size[1]}x{size[0]}; expected all images of one size (resize them first)."
            )
        return arr

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        arrs = list(ex.map(one, files, chunksize=256))
    out = np.stack(arrs) if arrs else np.zeros((0, *(size or (1, 1))), np.uint8)
    return out if out.ndim == 4 else out[..., None]


def _imagefolder_cache_path(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / f"imagefolder-{folder.name}-{key}.npz"


def _imagefolder_locate(root: Path) -> tuple[str, bool]:
    """What ``edgecond data`` shows for an imagefolder: a path argument, no download."""
    return "PATH (a folder with train/ and test/)", True


@register_dataset(
    "imagefolder",
    description="your images: PATH/train/<class>/*, PATH/test/<class>/* (png/jpg...); decoded once and cached "
                "as .npz under $EDGECOND_CACHE",
    locate=_imagefolder_locate,
    takes_path=True,
)
def _load_imagefolder(arg: str | None, root: Path, download: bool) -> ImageDataset:
    folder = Path(str(arg)).expanduser()
    what = f"imagefolder:{folder}"
    missing = [s for s in ("train", "test") if not (folder / s).is_dir()]
    if missing:
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise DatasetError(
            f"{what}: missing {', '.join(s + '/' for s in missing)} in {str(folder)!r} (it has: "
            f"{', '.join(have) if have else 'nothing' if folder.is_dir() else 'the folder does not exist'}); "
            "expected PATH/train/<class>/<image> and PATH/test/<class>/<image>."
        )
    file_stats: dict[str, tuple[int, int]] = {}
    listing = {s: _list_images(folder / s, file_stats) for s in ("train", "test")}
    classes = list(listing["train"])
    if not classes:
        raise DatasetError(f"{what}: {str(folder / 'train')!r} has no class folders; expected train/<class>/<image>.")
    extra = sorted(set(listing["test"]) - set(classes))
    if extra:
        raise DatasetError(
            f"{what}: test/ has classes {extra} that train/ lacks (train has {classes}); expected the same class "
            "folders in both splits."
        )
    empty = [c for c in classes if not listing["train"][c]]
    if empty:
        raise DatasetError(
            f"{what}: train/ classes {empty} contain no images with suffix {', '.join(IMAGE_SUFFIXES)}."
        )
    fp = _fingerprint(listing, file_stats)
    cache = _imagefolder_cache_path(folder)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fp:
                    log.debug("imagefolder cache hit %s", cache)
                    stats = z["stats"] if "stats" in z.files else None
                    return from_arrays(f"imagefolder:{folder.resolve()}", z["x_train"], z["y_train"], z["x_test"],
                                       z["y_test"], class_names=[str(c) for c in z["class_names"].tolist()],
                                       source=str(folder.resolve()), stats=stats)
        except Exception:  # a broken cache is rebuilt, never trusted
            log.info("ignoring unreadable cache %s", cache)
    mode, size = _probe_image(listing["train"][classes[0]][0])
    arrays = {}
    for split in ("train", "test"):
        files = [p for c in classes for p in listing[split].get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in listing[split].get(c, [])], dtype=np.int64)
        log.info("decoding %d %s images of %s", len(files), split, folder)
        arrays[f"x_{split}"] = _decode_images(files, mode, size, what).transpose(0, 3, 1, 2)
        arrays[f"y_{split}"] = labels
    ds = from_arrays(f"imagefolder:{folder.resolve()}", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                     arrays["y_test"], class_names=classes, source=str(folder.resolve()))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # unique per writer
        np.savez(tmp, fingerprint=np.array(fp), class_names=np.array(classes, dtype=str),
                 stats=np.array([ds.mean, ds.std], dtype=np.float64), **arrays)
        os.replace(tmp, cache)
    except OSError as exc:
        log.warning("could not write the imagefolder cache %s (%s); decoding again next time", cache, exc)
    return ds


def _probe_image(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode to convert to, (H, W)) of a folder's first image; grey stays 1 channel."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            return mode, (im.size[1], im.size[0])
    except Exception as exc:
        raise DatasetError(f"cannot decode image {str(path)!r} ({exc}); remove or replace it.") from None


