"""edgecond.data: digits, npz, imagefolder (+ cache), IDX / fashion-mnist, torchvision errors."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecond import data as D
from edgecond.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def digits():
    return D.load_dataset("digits")


# ------------------------------------------------------------------ digits


def test_digits_shapes_values_and_split(digits):
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    assert digits.image_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]
    # pixel = value / 16 → multiples of 1/16
    assert torch.allclose(digits.x_train * 16, (digits.x_train * 16).round())
    # stratified split: every class keeps ~75 %
    counts = torch.bincount(digits.y_train, minlength=10)
    test_counts = torch.bincount(digits.y_test, minlength=10)
    assert counts.sum() == 1347 and (counts >= 130).all() and (test_counts >= 43).all()
    # mean/std are those of the training split
    assert digits.mean[0] == pytest.approx(float(digits.x_train.mean()), rel=5e-4)  # 4 significant digits
    assert digits.std[0] == pytest.approx(float(digits.x_train.std(unbiased=False)), rel=5e-4)
    assert digits.mean[0] == float(f"{digits.mean[0]:.4g}")  # compact in buffer headers


def test_digits_split_matches_sklearn():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    b = load_digits()
    _, _, ytr, yte = train_test_split(b.data, b.target, test_size=0.25, random_state=0, stratify=b.target)
    d = D.load_dataset("DIGITS")  # case-insensitive
    assert np.array_equal(d.y_train.numpy(), ytr) and np.array_equal(d.y_test.numpy(), yte)


def test_normalize_roundtrip_and_class_indices(digits):
    z = digits.normalize(digits.x_train)
    assert abs(float(z.mean())) < 1e-3 and float(z.std()) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(digits.denormalize(z), digits.x_train, atol=1e-6)
    idx = digits.class_indices()
    assert len(idx) == 10 and sum(len(i) for i in idx) == 1347
    for c, i in enumerate(idx):
        assert (digits.y_train[i] == c).all()


def test_subset_per_class_deterministic_and_seeded(digits):
    x1, y1 = digits.subset_per_class(3, seed=0)
    x2, y2 = digits.subset_per_class(3, seed=0)
    x3, _ = digits.subset_per_class(3, seed=1)
    assert x1.shape == (30, 1, 8, 8) and y1.tolist() == [c for c in range(10) for _ in range(3)]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    # every picked image is a training image of its class
    flat = digits.x_train.flatten(1)
    for xi, yi in zip(x1, y1):
        hits = (flat == xi.flatten()).all(dim=1).nonzero().flatten()
        assert len(hits) >= 1 and (digits.y_train[hits] == yi).any()


def test_subset_errors(digits):
    with pytest.raises(ConfigError, match="ipc"):
        digits.subset_per_class(0, seed=0)
    with pytest.raises(ConfigError, match="only .* training images"):
        digits.subset_per_class(10_000, seed=0)


# ------------------------------------------------------------------ names


def test_unknown_name_lists_what_exists():
    with pytest.raises(DatasetError) as exc:
        D.load_dataset("imagenet-1k")
    for name in ("digits", "cifar10", "npz", "imagefolder"):
        assert name in str(exc.value)
    with pytest.raises(DatasetError, match="needs a path"):
        D.load_dataset("npz")
    with pytest.raises(DatasetError, match="takes no"):
        D.load_dataset("digits:/tmp")


def test_list_datasets():
    infos = {i.name: i for i in D.list_datasets()}
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder:PATH", "npz:PATH"):
        assert name in infos
    assert infos["digits"].available and "scikit-learn" in infos["digits"].source
    assert set(infos["digits"].to_dict()) == {"name", "description", "source", "available"}


# ------------------------------------------------------------------ npz


def _arrays(n=6, k=3, h=5, w=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    y = np.arange(n) % k
    return x, y


def test_npz_nhwc_uint8(tmp_path):
    x, y = _arrays()
    p = tmp_path / "set.npz"
    np.savez(p, x_train=x, y_train=y, x_test=x[:3], y_test=y[:3], class_names=np.array(["a", "b", "c"]))
    d = D.load_dataset(f"npz:{p}")
    assert d.image_shape == (3, 5, 4) and d.class_names == ["a", "b", "c"]
    assert torch.allclose(d.x_train, torch.from_numpy(x.transpose(0, 3, 1, 2) / 255.0).float())
    assert d.source == str(p.resolve()) and d.name == f"npz:{p.resolve()}"  # the name reopens it (edgecond.data.provenance)


def test_npz_nchw_float_and_grey(tmp_path):
    x, y = _arrays(c=1)
    xf = (x.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    p = tmp_path / "f.npz"
    np.savez(p, x_train=xf, y_train=y, x_test=xf, y_test=y)
    d = D.load_dataset(f"npz:{p}")
    assert d.image_shape == (1, 5, 4) and d.class_names == ["0", "1", "2"]
    assert torch.allclose(d.x_train, torch.from_numpy(xf))
    p2 = tmp_path / "g.npz"
    np.savez(p2, x_train=x[..., 0], y_train=y, x_test=x[..., 0], y_test=y)  # [N, H, W]
    assert D.load_dataset(f"npz:{p2}").image_shape == (1, 5, 4)


def test_npz_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        D.load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    x, y = _arrays()
    p = tmp_path / "m.npz"
    np.savez(p, x_train=x, y_train=y)
    with pytest.raises(DatasetError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        D.load_dataset(f"npz:{p}")
    np.savez(p, x_train=x.astype(np.float32), y_train=y, x_test=x, y_test=y)  # float 0..255
    with pytest.raises(DatasetError, match=r"expected pixel values in \[0, 1\]"):
        D.load_dataset(f"npz:{p}")
    np.savez(p, x_train=x, y_train=y[:-1], x_test=x, y_test=y)
    with pytest.raises(DatasetError, match=r"y_train has shape \(5,\); expected \[6\]"):
        D.load_dataset(f"npz:{p}")
    np.savez(p, x_train=np.zeros((2, 7, 7, 7), np.uint8), y_train=[0, 1], x_test=x, y_test=y)
    with pytest.raises(DatasetError, match=r"expected \[N, C, H, W\] or \[N, H, W, C\]"):
        D.load_dataset(f"npz:{p}")
    np.savez(p, x_train=x, y_train=y, x_test=x[:, :4], y_test=y)
    with pytest.raises(DatasetError, match="same"):
        D.load_dataset(f"npz:{p}")


# ------------------------------------------------------------------ imagefolder


def _write_folder(root: Path, mode: str = "RGB", size=(6, 5), per_class=(3, 2)):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for split, n in zip(("train", "test"), per_class):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(arr, mode=mode).save(root / split / cls / f"{i}.png")
                pixels[(split, cls, i)] = arr
    return pixels


def test_imagefolder_loads_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOND_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    pixels = _write_folder(folder)
    d = D.load_dataset(f"imagefolder:{folder}")
    assert d.class_names == ["cat", "dog"] and d.image_shape == (3, 5, 6)
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.y_test.tolist() == [0, 0, 1, 1]
    expect = torch.from_numpy(pixels[("train", "dog", 1)].transpose(2, 0, 1) / 255.0).float()
    assert torch.allclose(d.x_train[4], expect)
    caches = list((tmp_path / "cache").glob("imagefolder-*.npz"))
    assert len(caches) == 1
    # second load: from the cache, no decoding
    monkeypatch.setattr(D, "_decode_images", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("decoded")))
    d2 = D.load_dataset(f"imagefolder:{folder}")
    assert torch.equal(d2.x_train, d.x_train) and d2.class_names == d.class_names
    # a changed file invalidates the cache
    from PIL import Image

    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(folder / "train" / "cat" / "9.png")
    with pytest.raises(RuntimeError, match="decoded"):
        D.load_dataset(f"imagefolder:{folder}")


def test_imagefolder_grey_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOND_CACHE", str(tmp_path / "cache"))
    grey = tmp_path / "grey"
    _write_folder(grey, mode="L")
    assert D.load_dataset(f"imagefolder:{grey}").image_shape == (1, 5, 6)
    with pytest.raises(DatasetError, match=r"missing train/, test/"):
        D.load_dataset(f"imagefolder:{tmp_path / 'absent'}")
    bad = tmp_path / "bad"
    _write_folder(bad)
    from PIL import Image

    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(bad / "train" / "dog" / "z.png")
    with pytest.raises(DatasetError, match="expected all images of one size"):
        D.load_dataset(f"imagefolder:{bad}")
    odd = tmp_path / "odd"
    _write_folder(odd)
    (odd / "test" / "bird").mkdir()
    with pytest.raises(DatasetError, match=r"classes \['bird'\] that train/ lacks"):
        D.load_dataset(f"imagefolder:{odd}")


# ------------------------------------------------------------------ IDX / fashion-mnist / mnist


def _write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist_dir(d: Path, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(10, 4, 4), dtype=np.uint8)
    y = np.arange(10, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(d / f"train-images-idx3-ubyte{suffix}", x, gz)
    _write_idx(d / f"train-labels-idx1-ubyte{suffix}", y, gz)
    _write_idx(d / f"t10k-images-idx3-ubyte{suffix}", x[:5], gz)
    _write_idx(d / f"t10k-labels-idx1-ubyte{suffix}", y[:5], gz)
    return x, y


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(D.read_idx(tmp_path / "a.gz"), arr)
    _write_idx(tmp_path / "b", arr, gz=False)
    assert np.array_equal(D.read_idx(tmp_path / "b"), arr)
    (tmp_path / "c").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetError, match="not an IDX file"):
        D.read_idx(tmp_path / "c")
    (tmp_path / "d").write_bytes((tmp_path / "b").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        D.read_idx(tmp_path / "d")


def test_fashion_mnist_from_debian_dir(tmp_path, monkeypatch):
    deb = tmp_path / "usr-share-datasets-fashion-mnist"
    x, y = _write_mnist_dir(deb)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", deb)
    d = D.load_dataset("fashion-mnist", root=tmp_path / "empty")
    assert d.image_shape == (1, 4, 4) and d.class_names == D.FASHION_CLASSES and d.source == str(deb)
    assert torch.allclose(d.x_train[:, 0], torch.from_numpy(x / 255.0).float())
    assert d.y_test.tolist() == [0, 1, 2, 3, 4]
    info = {i.name: i for i in D.list_datasets(root=tmp_path / "empty")}["fashion-mnist"]
    assert info.available and info.source == str(deb)


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="dataset-fashion-mnist") as exc:
        D.load_dataset("fashion-mnist", root=tmp_path)
    assert "train-images-idx3-ubyte" in str(exc.value) and "download" in str(exc.value)


def test_mnist_raw_idx_in_root(tmp_path):
    _write_mnist_dir(tmp_path / "MNIST" / "raw", gz=False)
    d = D.load_dataset("mnist", root=tmp_path)
    assert d.x_train.shape == (10, 1, 4, 4) and d.num_classes == 10


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn"])
def test_torchvision_missing_offline(tmp_path, name):
    with pytest.raises(DatasetError) as exc:
        D.load_dataset(name, root=tmp_path)
    msg = str(exc.value)
    assert name in msg and str(tmp_path) in msg and "download" in msg
