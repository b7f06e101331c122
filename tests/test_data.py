"""Tests for edgekit.data: sources, the tensor cache, prepare's splits and the device loader."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from edgekit.data import channel_stats, prepare, split_indices
from edgekit.data.cache import cache_path, cached
from edgekit.data.loader import AugmentParams, DeviceLoader, crop, warp
from edgekit.data.sources import DATASETS, FINGERPRINTS, TEST, TRAIN, VAL, fingerprint
from edgekit.errors import EdgekitError
from edgekit.registry import Entry

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGEKIT_CACHE", str(folder))
    return folder


def digits(**kw):
    args = {"image_size": None, "val_fraction": 0.15, "test_fraction": 0.15} | kw
    return prepare("digits", {}, **args)


# ------------------------------------------------------------------------------------- registry


def test_every_dataset_has_a_fingerprint():
    assert set(DATASETS.names()) == set(FINGERPRINTS)
    assert {"digits", "imagefolder", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= set(DATASETS.names())


def test_unknown_dataset_and_bad_option():
    with pytest.raises(EdgekitError, match="did you mean 'digits'"):
        prepare("digit", {}, None, 0.15, 0.15)
    with pytest.raises(ValidationError):
        prepare("digits", {"root": "x"}, None, 0.15, 0.15)
    with pytest.raises(EdgekitError, match="val_fraction"):
        prepare("digits", {}, None, 1.5, 0.15)


# --------------------------------------------------------------------------------------- digits


def test_digits_shapes_splits_and_stratification():
    data = digits()
    sizes = [len(part[1]) for part in (data.train, data.val, data.test)]
    assert sizes == [1257, 270, 270]
    images, labels = data.train
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8) and labels.dtype == torch.int64
    assert int(images.max()) == 255
    assert data.class_names == [str(i) for i in range(10)]
    assert (data.in_channels, data.image_size) == (1, 8)
    overall = torch.cat([p[1] for p in (data.train, data.val, data.test)]).bincount() / 1797
    for _, part_labels in (data.train, data.val, data.test):
        share = part_labels.bincount(minlength=10) / len(part_labels)
        assert (share - overall).abs().max() < 0.02


def test_split_indices_partition_and_carve_val_from_train():
    labels = torch.arange(100) % 4
    parts = split_indices(labels, None, 0.2, 0.1, seed=0)
    together = torch.cat([parts[TRAIN], parts[VAL], parts[TEST]]).sort().values
    assert torch.equal(together, torch.arange(100))
    assert [len(parts[s]) for s in (TRAIN, VAL, TEST)] == [70, 20, 10]
    given = torch.tensor([TRAIN] * 80 + [TEST] * 20, dtype=torch.uint8)
    parts = split_indices(labels, given, 0.2, 0.5, seed=0)
    assert torch.equal(parts[TEST], torch.arange(80, 100))  # the data's own test set is kept
    # val is a fraction of the 80 train images, not of all 100: 1,800 train + 10,000 test images
    # once lost 1,770 of the 1,800 to val this way.
    assert len(parts[VAL]) == 16 and parts[VAL].max() < 80


def test_train_per_class_is_a_seeded_stratified_cap_before_val():
    labels = torch.arange(1000) % 4  # 250 per class
    given = torch.tensor([TRAIN] * 800 + [TEST] * 200, dtype=torch.uint8)
    parts = split_indices(labels, given, 0.25, 0.1, seed=0, train_per_class=20)
    pool = torch.cat([parts[TRAIN], parts[VAL]])
    assert labels[pool].bincount().tolist() == [20, 20, 20, 20]  # capped per class, before val
    assert len(parts[VAL]) == 20 and labels[parts[VAL]].bincount().tolist() == [5, 5, 5, 5]
    assert len(parts[TEST]) == 200 and pool.max() < 800  # the test set is never capped
    again = split_indices(labels, given, 0.25, 0.1, seed=0, train_per_class=20)
    other = split_indices(labels, given, 0.25, 0.1, seed=1, train_per_class=20)
    assert torch.equal(again[TRAIN], parts[TRAIN]) and not torch.equal(other[TRAIN], parts[TRAIN])


def test_train_per_class_is_recorded_and_explained(tmp_path):
    capped = digits(train_per_class=30)
    assert sum(capped.per_class()["train"]) + sum(capped.per_class()["val"]) == 300
    assert capped.fingerprint != digits().fingerprint
    assert capped.describe().startswith("train 255 (25–26/class), val 45") and "test 270" in capped.describe()
    assert digits(train_per_class=5000).notes == [
        "data.train_per_class = 5000: no class has that many (at most 183); using all"
    ]
    with pytest.raises(EdgekitError, match="train_per_class = 0: expected a positive count"):
        digits(train_per_class=0)


def test_a_split_that_leaves_too_few_training_images_is_an_error():
    with pytest.raises(
        EdgekitError, match=r"leaves 0 training images of class '\d' \(train 8, val 2, test 270\)"
    ):
        digits(train_per_class=1)


def test_split_is_deterministic_per_seed():
    a, b, c = digits(), digits(), digits(split_seed=1)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.val[1], b.val[1])
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not torch.equal(a.val[0], c.val[0])


def test_image_size_resizes_batched():
    data = digits(image_size=16)
    assert data.train[0].shape[1:] == (1, 16, 16) and data.image_size == 16


def test_mean_std_come_from_the_train_split():
    data = digits()
    train = data.train[0].double() / 255
    assert data.mean == pytest.approx([train.mean().item()], rel=1e-9)
    assert data.std == pytest.approx([train.std(unbiased=False).item()], rel=1e-9)
    assert data.mean != pytest.approx(channel_stats(data.val[0])[0], rel=1e-6)


# ---------------------------------------------------------------------------------------- cache


def counting(monkeypatch, name: str) -> list[int]:
    """Wrap dataset `name`'s loader so the test can count how often it decodes."""
    entry = DATASETS.get(name)
    calls = []

    def fn(params, image_size):
        calls.append(1)
        return entry.fn(params, image_size)

    monkeypatch.setitem(DATASETS._entries, name, Entry(name, fn, entry.params))
    return calls


def test_cache_is_written_once_and_reused(monkeypatch, cache_dir):
    calls = counting(monkeypatch, "digits")
    first = digits()
    files = list(cache_dir.glob("*.pt"))
    assert calls == [1] and len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = digits(split_seed=3)  # another split of the same decoded data: no decode
    assert calls == [1] and files[0].stat().st_mtime_ns == mtime
    everything = [torch.cat([d.train[1], d.val[1], d.test[1]]).sort().values for d in (first, second)]
    assert torch.equal(*everything)
    digits(image_size=12)  # a different key: decoded again, in its own file
    assert calls == [1, 1] and len(list(cache_dir.glob("*.pt"))) == 2


def test_corrupt_cache_file_is_rebuilt(monkeypatch, cache_dir):
    calls = counting(monkeypatch, "digits")
    digits()
    (path,) = cache_dir.glob("*.pt")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="rebuilding"):
        data = digits()
    assert calls == [1, 1] and len(data.train[1]) == 1257
    digits()
    assert calls == [1, 1]


def test_cached_stores_tensors_and_plain_data(tmp_path):
    built = []

    def build():
        built.append(1)
        return {"x": torch.arange(3), "names": ["a", "b"], "none": None}

    key = {"b": 1, "a": [1, 2]}
    assert cached(key, build, tmp_path)["names"] == ["a", "b"]
    again = cached({"a": [1, 2], "b": 1}, build, tmp_path)  # key order does not matter
    assert built == [1] and torch.equal(again["x"], torch.arange(3)) and again["none"] is None
    assert cache_path(key, tmp_path).is_file() and not list(tmp_path.glob(".*tmp"))


# ---------------------------------------------------------------------------------- image folder


def write_png(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_folder(root: Path, classes=("cat", "dog", "fish"), per_class=4, mixed=True) -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            size = (10 + i, 12) if mixed else (10, 10)
            mode = "RGB" if mixed and i % 2 else "L"
            write_png(root / name / f"{i}.png", size, mode, value=10 * c + i)


def folder(root: Path, image_size=None, **options):
    return prepare("imagefolder", {"root": str(root), **options}, image_size, 0.25, 0.25)


def test_imagefolder_mixed_sizes_and_colours_resize(tmp_path):
    make_folder(tmp_path / "pets")
    data = folder(tmp_path / "pets", image_size=12)
    assert data.class_names == ["cat", "dog", "fish"]
    assert (data.in_channels, data.image_size) == (3, 12)
    assert sum(len(p[1]) for p in (data.train, data.val, data.test)) == 12
    assert data.train[0].shape[1:] == (3, 12, 12) and data.train[0].dtype == torch.uint8
    with pytest.raises(EdgekitError, match=f"{tmp_path / 'pets'}.*differ in size.*image_size"):
        folder(tmp_path / "pets")


def test_imagefolder_grayscale_and_forced_channels(tmp_path):
    make_folder(tmp_path / "gray", mixed=False)
    data = folder(tmp_path / "gray")
    assert (data.in_channels, data.image_size) == (1, 10)
    rgb = folder(tmp_path / "gray", channels=3)
    assert rgb.in_channels == 3
    assert torch.equal(rgb.train[0][:, 0], rgb.train[0][:, 2])  # gray repeated into RGB
    decoded = np.array(Image.open(tmp_path / "gray" / "cat" / "0.png"))
    source = DATASETS.get("imagefolder").fn(DATASETS.get("imagefolder").params(root=tmp_path / "gray"), None)
    assert torch.equal(source.images[0, 0], torch.from_numpy(decoded))


def test_imagefolder_train_test_folders(tmp_path):
    make_folder(tmp_path / "d" / "train", per_class=6, mixed=False)
    make_folder(tmp_path / "d" / "test", per_class=2, mixed=False)
    data = prepare("imagefolder", {"root": str(tmp_path / "d")}, None, 0.1, 0.3)
    assert len(data.test[1]) == 6  # from test/, not carved
    assert len(data.val[1]) == 2 and len(data.train[1]) == 16  # 0.1 × 18 carved from train/
    source = DATASETS.get("imagefolder").fn(DATASETS.get("imagefolder").params(root=tmp_path / "d"), None)
    assert source.split.tolist() == [TRAIN] * 18 + [TEST] * 6


def test_imagefolder_train_val_test_folders_used_as_given(tmp_path):
    for part, n in (("train", 3), ("val", 2), ("test", 1)):
        make_folder(tmp_path / "d" / part, per_class=n, mixed=False)
    data = folder(tmp_path / "d")
    assert [len(p[1]) for p in (data.train, data.val, data.test)] == [9, 6, 3]


def test_imagefolder_fingerprint_follows_the_files(tmp_path, monkeypatch):
    make_folder(tmp_path / "d", mixed=False)
    params = DATASETS.get("imagefolder").params(root=tmp_path / "d")
    before = fingerprint("imagefolder", params)
    calls = counting(monkeypatch, "imagefolder")
    folder(tmp_path / "d")
    folder(tmp_path / "d")
    assert calls == [1]
    write_png(tmp_path / "d" / "dog" / "new.png", (10, 10), "L", value=99)
    assert fingerprint("imagefolder", params) != before
    data = folder(tmp_path / "d")
    assert calls == [1, 1] and sum(len(p[1]) for p in (data.train, data.val, data.test)) == 13


def test_imagefolder_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(EdgekitError, match=f"{missing}: no such folder; expected"):
        folder(missing)
    (tmp_path / "bare").mkdir()
    with pytest.raises(EdgekitError, match=f"{tmp_path / 'bare'}: no class folders"):
        folder(tmp_path / "bare")
    make_folder(tmp_path / "d", mixed=False)
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(EdgekitError, match=f"{tmp_path / 'd' / 'empty'}: empty class folder"):
        folder(tmp_path / "d")
    (tmp_path / "d" / "empty").rmdir()
    bad = tmp_path / "d" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(EdgekitError, match=f"{bad}: cannot read image"):
        folder(tmp_path / "d")


def test_imagefolder_split_folders_must_agree(tmp_path):
    make_folder(tmp_path / "d" / "train", mixed=False)
    make_folder(tmp_path / "d" / "test", classes=("cat", "dog"), mixed=False)
    with pytest.raises(EdgekitError, match=f"{tmp_path / 'd' / 'test'}: class folders"):
        folder(tmp_path / "d")


# ------------------------------------------------------------------------------- MNIST and CIFAR


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: zero, zero, type 0x08 (ubyte), rank; big-endian dims; then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, compress: bool, n_train=30, n_test=10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 6, 6)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 6, 6)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("layout", ["debian-gz", "torchvision-raw"])
def test_mnist_idx_files_load(tmp_path, layout):
    where = tmp_path if layout == "debian-gz" else tmp_path / "MNIST" / "raw"
    arrays = write_mnist(where, compress=layout == "debian-gz")
    entry = DATASETS.get("mnist")
    source = entry.fn(entry.params(root=tmp_path), None)
    assert source.images.shape == (40, 1, 6, 6) and source.images.dtype == torch.uint8
    assert torch.equal(source.images[0, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"][0]).byte())
    assert source.labels.dtype == torch.int64 and source.labels[:12].tolist() == [*range(10), 0, 1]
    assert source.split.tolist() == [TRAIN] * 30 + [TEST] * 10
    assert len(source.class_names) == 10
    data = prepare("mnist", {"root": str(tmp_path)}, 8, 0.25, 0.25)
    assert [len(p[1]) for p in (data.train, data.val, data.test)] == [22, 8, 10]  # val: 0.25 × 30 train
    assert data.train[0].shape[1:] == (1, 8, 8)


def test_mnist_missing_files_name_the_root(tmp_path):
    with pytest.raises(EdgekitError, match=f"{tmp_path}: mnist files not found.*download: true"):
        prepare("mnist", {"root": str(tmp_path)}, None, 0.15, 0.15)
    with pytest.raises(EdgekitError, match="train-images-idx3-ubyte"):
        prepare("fashion_mnist", {"root": str(tmp_path)}, None, 0.15, 0.15)


def write_cifar10(root: Path) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (8, 3072), dtype=np.uint8)
        first = data[0] if first is None else first
        with open(folder / name, "wb") as f:  # 4 train images per class: enough to carve val from
            pickle.dump({"data": data, "labels": [(8 * i + k) % 10 for k in range(8)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f)
    return first


def test_cifar10_pickles_load(tmp_path):
    first = write_cifar10(tmp_path)
    entry = DATASETS.get("cifar10")
    source = entry.fn(entry.params(root=tmp_path), None)
    assert source.images.shape == (48, 3, 32, 32) and source.images.dtype == torch.uint8
    # A CIFAR row is the red plane, then green, then blue.
    assert torch.equal(source.images[0], torch.from_numpy(first.reshape(3, 32, 32)))
    assert source.split.tolist() == [TRAIN] * 40 + [TEST] * 8
    assert source.class_names == [f"class{k}" for k in range(10)]
    assert source.labels[:4].tolist() == [0, 1, 2, 3]
    data = prepare("cifar10", {"root": str(tmp_path)}, 16, 0.2, 0.2)
    assert len(data.test[1]) == 8 and len(data.val[1]) == 8  # val: 0.2 × the 40 train images
    assert data.train[0].shape[1:] == (3, 16, 16)


def test_cifar_missing_files_name_the_root(tmp_path):
    with pytest.raises(EdgekitError, match=f"{tmp_path}: cifar10 files not found.*download: true"):
        prepare("cifar10", {"root": str(tmp_path)}, None, 0.15, 0.15)
    with pytest.raises(EdgekitError, match=f"{tmp_path}: cifar100 files not found"):
        prepare("cifar100", {"root": str(tmp_path)}, None, 0.15, 0.15)


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist absent"
)
def test_fashion_mnist_debian_files():
    entry = DATASETS.get("fashion_mnist")
    source = entry.fn(entry.params(), None)
    assert source.images.shape == (70000, 1, 28, 28)
    assert source.split.bincount().tolist() == [60000, 0, 10000]
    assert source.class_names[0] == "T-shirt/top"


# --------------------------------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def batch_images() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images[:64] * 255 / 16).round().astype(np.uint8)).unsqueeze(1)
    return images, torch.from_numpy(bunch.target[:64]).long()


def loader(batch_images, augment=None, seed=0, **kw):
    images, labels = batch_images
    args = {"batch_size": 16, "mean": [0.3], "std": [0.4], "device": "cpu", "num_classes": 10} | kw
    return DeviceLoader(
        images, labels, augment=augment, generator=torch.Generator().manual_seed(seed), **args
    )


def test_loader_batches_and_exact_normalization(batch_images):
    images, labels = batch_images
    batches = list(loader(batch_images, batch_size=24))
    assert len(loader(batch_images, batch_size=24)) == len(batches) == 3
    assert len(loader(batch_images, batch_size=24, drop_last=True)) == 2
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (24, 1, 8, 8) and y.dtype == torch.int64
    expected = (images[:24].float() / 255 - 0.3) / 0.4
    assert torch.equal(x, expected) and torch.equal(y, labels[:24])


def test_loader_shuffle_covers_every_sample(batch_images):
    ys = torch.cat([y for _, y in loader(batch_images, shuffle=True)])
    assert not torch.equal(ys, batch_images[1]) and torch.equal(
        ys.sort().values, batch_images[1].sort().values
    )


AUGMENTS = {
    "crop_padding": {"crop_padding": 2},
    "hflip": {"hflip": True},
    "rotate": {"rotate": 30},
    "translate": {"translate": 0.2},
    "scale": {"scale": (0.7, 1.3)},
    "erasing": {"erasing": 1.0},
}


@pytest.mark.parametrize("name", list(AUGMENTS))
def test_each_augmentation_changes_images_per_sample(batch_images, name):
    same = (batch_images[0][:1].repeat(16, 1, 1, 1), batch_images[1][:16])  # one image, 16 times
    plain, _ = next(iter(loader(same)))
    x, y = next(iter(loader(same, AugmentParams(**AUGMENTS[name]))))
    assert x.shape == plain.shape and x.dtype == torch.float32 and torch.equal(y, same[1])
    assert not torch.equal(x, plain)
    distinct = {tuple(row.flatten().tolist()) for row in x}
    assert len(distinct) > 1  # each image gets its own random parameters


def test_whole_pixel_crop_is_the_window_of_the_padded_image_the_warp_samples():
    x = torch.rand(6, 2, 7, 9)
    pixels = torch.tensor([[-2, 0], [2, 2], [0, -1], [1, -2], [0, 0], [-1, 1]])  # (dx, dy)
    cropped = crop(x, pixels, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for image, (dx, dy) in enumerate(pixels.tolist()):  # out[r, c] = in[r + dy, c + dx], zeros outside
        assert torch.equal(cropped[image], padded[image, :, 2 + dy : 2 + dy + 7, 2 + dx : 2 + dx + 9])
    shift = 2 * pixels / torch.tensor([9, 7])  # the same shifts as the general path's affine warp
    warped = warp(x, torch.zeros(6), torch.ones(6), shift)
    assert torch.allclose(cropped, warped, atol=1e-5)


def test_same_generator_seed_same_batches(batch_images):
    augment = AugmentParams(crop_padding=1, hflip=True, rotate=10, erasing=0.5, mixup=0.4)
    a = list(loader(batch_images, augment, seed=5, shuffle=True))
    b = list(loader(batch_images, augment, seed=5, shuffle=True))
    c = list(loader(batch_images, augment, seed=6, shuffle=True))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])


@pytest.mark.parametrize("mix", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 1.0}])
def test_mixing_gives_soft_labels_and_leaves_global_rng_alone(batch_images, mix):
    state = torch.get_rng_state()
    x, y = next(iter(loader(batch_images, AugmentParams(**mix), shuffle=True)))
    assert torch.equal(torch.get_rng_state(), state)
    assert x.shape == (16, 1, 8, 8) and y.shape == (16, 10) and y.dtype == torch.float32
    assert torch.allclose(y.sum(1), torch.ones(16))


def test_augment_params_are_validated():
    with pytest.raises(ValidationError):
        AugmentParams(rotat=10)
    with pytest.raises(ValidationError):
        AugmentParams(erasing=1.5)
    with pytest.raises(ValidationError):
        AugmentParams(scale=(1.2, 0.8))
    assert not AugmentParams().geometric()


def test_loader_without_generator_follows_global_seed(batch_images):
    images, labels = batch_images
    torch.manual_seed(3)
    a = next(iter(DeviceLoader(images, labels, 8, [0.3], [0.4], shuffle=True)))[1]
    torch.manual_seed(3)
    b = next(iter(DeviceLoader(images, labels, 8, [0.3], [0.4], shuffle=True)))[1]
    assert torch.equal(a, b)


def test_cache_env_var_is_used(cache_dir):
    digits()
    assert len(list(cache_dir.glob("*.pt"))) == 1 and os.environ["EDGEKIT_CACHE"] == str(cache_dir)
