"""The data layer against tiny files written here in each real on-disk format (no network)."""
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import kdrepro.data as data
from kdrepro._torchvision import import_torchvision
from kdrepro.data import CorruptDatasetError, DatasetNotFoundError, ImageDataset, load_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED_5K = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-5k.npz"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No KDREPRO_DATA and an empty working directory, so ./data is tmp_path/data."""
    monkeypatch.delenv("KDREPRO_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def write_cifar10(root: Path, n: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A cifar-10-batches-py folder with n images per batch; returns {file: (rows [n, 3072], labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        dump(folder / name, {"batch_label": name, "labels": labels, "data": rows,
                             "filenames": [f"img_{k}.png" for k in range(n)]})
        written[name] = (rows, np.array(labels))
    dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": n, "num_vis": 3072})
    return written


def pixel(row: np.ndarray, c: int, i: int, j: int) -> int:
    """CIFAR's python layout: 1024 red values, then green, then blue, each 32x32 row-major."""
    return int(row[c * 1024 + i * 32 + j])


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def test_cifar10_reads_the_pickled_batches(tmp_path):
    written = write_cifar10(tmp_path, n=4)
    train = load_dataset("cifar10", root=tmp_path)
    assert train.name == "cifar10" and len(train) == 20
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 3, 32, 32)
    assert train.targets.dtype == torch.int64 and train.image_shape == (3, 32, 32)
    assert train.classes == CIFAR10_NAMES and train.num_classes == 10
    assert train.mean == CIFAR10_MEAN and train.std == CIFAR10_STD
    rng = np.random.default_rng(1)
    for k in range(20):  # batch 1 first, then 2, ...
        rows, labels = written[f"data_batch_{k // 4 + 1}"]
        assert int(train.targets[k]) == labels[k % 4]
        for c, i, j in zip(rng.integers(0, 3, 6), rng.integers(0, 32, 6), rng.integers(0, 32, 6)):
            assert int(train.images[k, c, i, j]) == pixel(rows[k % 4], c, i, j)

    test = load_dataset("cifar10", root=tmp_path, train=False)
    rows, labels = written["test_batch"]
    assert len(test) == 4 and test.targets.tolist() == labels.tolist()
    assert int(test.images[2, 2, 31, 0]) == pixel(rows[2], 2, 31, 0)
    assert test.mean == CIFAR10_MEAN  # the test split uses the training statistics

    image, target, index = test[3]
    expected = (rows[3].reshape(3, 32, 32).astype(np.float64) / 255 - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(
        CIFAR10_STD)[:, None, None]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-5)
    assert (target, index) == (int(labels[3]), 3)
    assert test[-1][2] == 3


def test_cifar100_uses_fine_labels_and_meta(tmp_path):
    folder = tmp_path / "cifar-100-python"
    rng = np.random.default_rng(2)
    names = [f"class_{k:02d}" for k in range(100)]
    rows = {s: rng.integers(0, 256, (n, 3072), dtype=np.uint8) for s, n in (("train", 6), ("test", 3))}
    fine = {"train": [0, 99, 5, 42, 7, 13], "test": [99, 1, 50]}
    for split in ("train", "test"):
        dump(folder / split, {"data": rows[split], "fine_labels": fine[split],
                              "coarse_labels": [v // 5 for v in fine[split]], "filenames": []})
    dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{k}" for k in range(20)]})

    train = load_dataset("cifar100", root=tmp_path)
    assert train.targets.tolist() == fine["train"] and train.classes == names
    assert train.mean == (0.5071, 0.4865, 0.4409) and train.std == (0.2673, 0.2564, 0.2762)
    assert int(train.images[1, 1, 0, 5]) == pixel(rows["train"][1], 1, 0, 5)
    test = load_dataset("cifar100", root=tmp_path, train=False)
    assert test.targets.tolist() == fine["test"] and int(test.images[2, 0, 7, 3]) == pixel(rows["test"][2], 0, 7, 3)


def test_search_order_is_root_then_environment_then_cwd_data(tmp_path, monkeypatch):
    for name, seed in (("a", 10), ("b", 20), ("data", 30)):
        write_cifar10(tmp_path / name, n=2, seed=seed)
    first = {name: load_dataset("cifar10", root=tmp_path / name).fingerprint() for name in ("a", "b", "data")}
    assert len(set(first.values())) == 3
    assert load_dataset("cifar10").fingerprint() == first["data"]
    monkeypatch.setenv("KDREPRO_DATA", str(tmp_path / "b"))
    assert load_dataset("cifar10").fingerprint() == first["b"]
    assert load_dataset("cifar10", root=tmp_path / "a").fingerprint() == first["a"]
    # A root without the data set falls through to the next place.
    assert load_dataset("cifar10", root=tmp_path / "empty").fingerprint() == first["b"]


def test_not_found_names_the_data_set_every_path_and_the_download_call(tmp_path, monkeypatch):
    monkeypatch.setenv("KDREPRO_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path / "mine")
    message = str(info.value)
    assert "'cifar10'" in message
    searched = [tmp_path / d / "cifar-10-batches-py" for d in ("mine", "env", "data")]
    positions = [message.index(str(p)) for p in searched]
    assert positions == sorted(positions)
    assert f"load_dataset('cifar10', root='{tmp_path / 'mine'}', download=True)" in message
    assert isinstance(info.value, FileNotFoundError)

    with pytest.raises(DatasetNotFoundError, match=r"(?s)'svhn'.*train_32x32\.mat.*download=True"):
        load_dataset("svhn", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)'cinic10'.*CINIC-10.*download=True"):
        load_dataset("cinic10", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)'cifar10-5k'.*cifar-10-batches-py.*download=True"):
        load_dataset("cifar10-5k", root=tmp_path, per_batch=2)


def test_download_goes_through_torchvision_into_the_first_root(tmp_path, monkeypatch):
    """No network: a stand-in for torchvision.datasets.CIFAR10 writes the files the real one would."""
    tv = import_torchvision()
    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, download))
        write_cifar10(Path(root), n=2, seed=4)

    monkeypatch.setattr(tv.datasets, "CIFAR10", fake_cifar10)
    ds = load_dataset("cifar10", root=tmp_path / "dl", download=True)
    assert calls == [(str(tmp_path / "dl"), True)] and len(ds) == 10
    # An existing copy found elsewhere is checked (and repaired) where it lies.
    monkeypatch.setenv("KDREPRO_DATA", str(tmp_path / "dl"))
    load_dataset("cifar10", root=tmp_path / "empty", download=True)
    assert calls[-1] == (str(tmp_path / "dl"), True) and len(calls) == 2


@pytest.mark.parametrize(
    "damage, complaint",
    [
        ("truncate", "cannot be unpickled"),
        ("label", r"labels must lie in \[0, 10\)"),
        ("width", r"uint8 \[N, 3072\]"),
        ("missing", "missing"),
        ("count", "expected 4 labels"),
    ],
)
def test_corrupt_cifar_files_raise(tmp_path, damage, complaint):
    written = write_cifar10(tmp_path, n=4)
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    rows, labels = written["data_batch_3"]
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: 5000])
    elif damage == "label":
        dump(target, {"data": rows, "labels": [0, 1, 10, 2]})
    elif damage == "width":
        dump(target, {"data": rows[:, :3000], "labels": labels.tolist()})
    elif damage == "missing":
        target.unlink()
    else:
        dump(target, {"data": rows, "labels": labels.tolist()[:3]})
    with pytest.raises(CorruptDatasetError, match=complaint) as info:
        load_dataset("cifar10", root=tmp_path)
    assert str(target) in str(info.value) and "download" in str(info.value)
    assert len(load_dataset("cifar10", root=tmp_path, train=False)) == 4  # other files unaffected


# --------------------------------------------------------------------------------------------------
# SVHN


def write_svhn(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0] = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    x, y = write_svhn(tmp_path / "train_32x32.mat", 7, seed=5)
    x_test, y_test = write_svhn(tmp_path / "svhn" / "test_32x32.mat", 3, seed=6)
    train = load_dataset("svhn", root=tmp_path)
    assert train.images.shape == (7, 3, 32, 32) and train.classes == [str(d) for d in range(10)]
    assert train.targets.tolist() == [int(v) % 10 for v in y[:, 0]] and int(train.targets[0]) == 0
    for k, c, i, j in [(0, 0, 0, 0), (3, 2, 5, 17), (6, 1, 31, 30)]:
        assert int(train.images[k, c, i, j]) == int(x[i, j, c, k])
    assert train.mean == (0.4377, 0.4438, 0.4728)
    test = load_dataset("svhn", root=tmp_path, train=False)
    assert int(test.images[2, 1, 4, 9]) == int(x_test[4, 9, 1, 2]) and test.mean == train.mean


def test_svhn_truncated_or_bad_labels_raise(tmp_path):
    path = tmp_path / "train_32x32.mat"
    write_svhn(path, 6, seed=7)
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(CorruptDatasetError, match="train_32x32.mat") as info:
        load_dataset("svhn", root=tmp_path)
    assert "download" in str(info.value)
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]], np.uint8)})
    with pytest.raises(CorruptDatasetError, match="1..10"):
        load_dataset("svhn", root=tmp_path)


# --------------------------------------------------------------------------------------------------
# CINIC-10 and image folders


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_cinic10_reads_train_and_test_folders_and_ignores_valid(tmp_path):
    folder = tmp_path / "CINIC-10"
    rng = np.random.default_rng(8)
    written = {}
    for split, per_class in (("train", 2), ("valid", 3), ("test", 1)):
        for cls in CIFAR10_NAMES:
            for k in range(per_class):
                array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                # names sort in the opposite order to their creation
                save_png(folder / split / cls / f"{split}_{cls}_{9 - k}.png", array)
                written[(split, cls, 9 - k)] = array
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    save_png(folder / "train" / "bird" / "train_bird_0.png", grey)

    train = load_dataset("cinic10", root=tmp_path)
    assert len(train) == 21 and train.classes == CIFAR10_NAMES
    assert train.mean == (0.47889522, 0.47227842, 0.43047404)
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2, 2] + [c for c in range(3, 10) for _ in range(2)]
    np.testing.assert_array_equal(train.images[0].numpy(), written[("train", "airplane", 8)].transpose(2, 0, 1))
    np.testing.assert_array_equal(train.images[1].numpy(), written[("train", "airplane", 9)].transpose(2, 0, 1))
    np.testing.assert_array_equal(train.images[4].numpy(), np.stack([grey] * 3))  # grey -> RGB
    test = load_dataset("cinic10", root=tmp_path, train=False)
    assert len(test) == 10 and test.targets.tolist() == list(range(10))
    np.testing.assert_array_equal(test.images[7].numpy(), written[("test", "horse", 9)].transpose(2, 0, 1))

    (folder / "test" / "ship" / "test_ship_9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(CorruptDatasetError, match="test_ship_9.png"):
        load_dataset("cinic10", root=tmp_path, train=False)


def test_imagefolder_classes_sizes_and_statistics(tmp_path):
    rng = np.random.default_rng(9)
    images = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("dog", "cat"):
            for k in range(n):
                images[(split, cls, k)] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                save_png(tmp_path / "pets" / split / cls / f"{k}.png", images[(split, cls, k)])
    save_png(tmp_path / "pets" / "test" / "cat" / "extra.jpg", images[("test", "cat", 0)])  # JPEGs are read too
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    train = load_dataset("imagefolder", path=tmp_path / "pets")
    assert train.classes == ["cat", "dog"] and train.image_shape == (3, 6, 5)
    assert train.targets.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(train.images[4].numpy(), images[("train", "dog", 1)].transpose(2, 0, 1))
    pixels = np.stack([images[("train", c, k)] for c in ("cat", "dog") for k in range(3)]).astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(train.std, pixels.std(axis=(0, 1, 2)), rtol=1e-9)
    test = load_dataset("imagefolder", path=tmp_path / "pets", train=False)
    assert len(test) == 5 and test.mean == train.mean and test.std == train.std

    odd = tmp_path / "pets" / "train" / "dog" / "odd.png"
    save_png(odd, rng.integers(0, 256, (7, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"odd\.png.*7x4.*size=\(H, W\)"):
        load_dataset("imagefolder", path=tmp_path / "pets")
    resized = load_dataset("imagefolder", path=tmp_path / "pets", size=(8, 8), channels=1)
    assert resized.image_shape == (1, 8, 8) and len(resized) == 7
    with pytest.raises(ValueError, match="path="):
        load_dataset("imagefolder")


# --------------------------------------------------------------------------------------------------
# npz and digits


def test_npz_nchw_and_nhwc_load_the_same_images(tmp_path):
    rng = np.random.default_rng(11)
    x_train = rng.integers(0, 256, (5, 3, 4, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 3, 4, 6), dtype=np.uint8)
    y_train, y_test = np.array([0, 2, 1, 2, 0]), np.array([1, 2])
    np.savez(tmp_path / "nchw.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             classes=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "nhwc.npz", x_train=x_train.transpose(0, 2, 3, 1), y_train=y_train,
             x_test=x_test.transpose(0, 2, 3, 1), y_test=y_test)
    a = load_dataset("npz", path=tmp_path / "nchw.npz")
    b = load_dataset("npz", path=tmp_path / "nhwc.npz")
    np.testing.assert_array_equal(a.images.numpy(), x_train)
    assert a.fingerprint() == b.fingerprint() and a.classes == ["a", "b", "c"] and b.classes == ["0", "1", "2"]
    np.testing.assert_allclose(a.mean, (x_train / 255.0).mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(a.std, (x_train / 255.0).std(axis=(0, 2, 3)), rtol=1e-9)
    test = load_dataset("npz", path=tmp_path / "nhwc.npz", train=False)
    np.testing.assert_array_equal(test.images.numpy(), x_test)
    assert test.targets.tolist() == [1, 2] and test.mean == b.mean


def test_npz_errors(tmp_path):
    y = np.array([0, 1])
    ambiguous = np.zeros((2, 3, 5, 3), np.uint8)
    np.savez(tmp_path / "amb.npz", x_train=ambiguous, y_train=y, x_test=ambiguous, y_test=y)
    with pytest.raises(ValueError, match="layout="):
        load_dataset("npz", path=tmp_path / "amb.npz")
    assert load_dataset("npz", path=tmp_path / "amb.npz", layout="NHWC").image_shape == (3, 3, 5)

    good = np.zeros((2, 1, 4, 4), np.uint8)
    np.savez(tmp_path / "labels.npz", x_train=good, y_train=np.array([0, 5]), x_test=good, y_test=y,
             classes=np.array(["x", "y"]))
    with pytest.raises(CorruptDatasetError, match=r"labels\.npz.*\[0, 2\)"):
        load_dataset("npz", path=tmp_path / "labels.npz")
    np.savez(tmp_path / "float.npz", x_train=good.astype(np.float32), y_train=y, x_test=good, y_test=y)
    with pytest.raises(CorruptDatasetError, match="uint8"):
        load_dataset("npz", path=tmp_path / "float.npz")
    np.savez(tmp_path / "partial.npz", x_train=good, y_train=y)
    with pytest.raises(CorruptDatasetError, match=r"x_test.*y_test"):
        load_dataset("npz", path=tmp_path / "partial.npz")
    (tmp_path / "broken.npz").write_bytes((tmp_path / "labels.npz").read_bytes()[:200])
    with pytest.raises(CorruptDatasetError, match="broken.npz"):
        load_dataset("npz", path=tmp_path / "broken.npz")
    with pytest.raises(DatasetNotFoundError, match="nowhere.npz"):
        load_dataset("npz", path=tmp_path / "nowhere.npz")


def test_digits_is_a_deterministic_stratified_split_of_sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    scaled = np.rint(bunch.images * 255.0 / 16.0)
    train, test = load_dataset("digits"), load_dataset("digits", train=False)
    assert (len(train), len(test)) == (1438, 359) and train.image_shape == (1, 8, 8)
    assert int(train.images.max()) == 255 and train.classes == [str(d) for d in range(10)]
    per_class = np.bincount(bunch.target, minlength=10)
    assert torch.bincount(test.targets, minlength=10).tolist() == [int(round(0.2 * n)) for n in per_class]
    # The splits interleave back into sklearn's order (each keeps the original order).
    t = s = 0
    for image, label in zip(scaled, bunch.target):
        if t < len(train) and int(train.targets[t]) == label and np.array_equal(train.images[t, 0].numpy(), image):
            t += 1
        else:
            assert int(test.targets[s]) == label and np.array_equal(test.images[s, 0].numpy(), image)
            s += 1
    assert (t, s) == (len(train), len(test))
    pixels = train.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(train.mean[0], pixels.mean(), rtol=1e-9)
    np.testing.assert_allclose(train.std[0], pixels.std(), rtol=1e-9)
    assert test.mean == train.mean
    assert load_dataset("digits").fingerprint() == train.fingerprint()
    assert load_dataset("digits", seed=1).fingerprint() != train.fingerprint()


# --------------------------------------------------------------------------------------------------
# CIFAR-10-5k


def test_cifar10_5k_built_from_cifar_picks_the_first_images_of_each_batch(tmp_path):
    written = write_cifar10(tmp_path, n=5, seed=12)
    train = load_dataset("cifar10-5k", root=tmp_path, per_batch=3)
    test = load_dataset("cifar10-5k", root=tmp_path, per_batch=3, train=False)
    assert (len(train), len(test)) == (15, 3) and train.name == "cifar10-5k"
    for k in range(15):
        rows, labels = written[f"data_batch_{k // 3 + 1}"]
        assert int(train.targets[k]) == labels[k % 3]
        assert int(train.images[k, 1, 2, 3]) == pixel(rows[k % 3], 1, 2, 3)
        assert int(train.images[k, 2, 31, 31]) == pixel(rows[k % 3], 2, 31, 31)
    rows, labels = written["test_batch"]
    assert test.targets.tolist() == labels[:3].tolist() and int(test.images[2, 0, 9, 8]) == pixel(rows[2], 0, 9, 8)
    assert train.mean == CIFAR10_MEAN and test.std == CIFAR10_STD

    out = data.build_cifar10_5k(tmp_path, tmp_path / "out" / "subset.npz", per_batch=3)
    with np.load(out) as arrays:
        assert sorted(arrays.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert arrays["y_train"].dtype == np.int64 and arrays["x_train"].shape == (15, 3, 32, 32)
    from_file = load_dataset("cifar10-5k", path=out, per_batch=3)
    assert from_file.fingerprint() == train.fingerprint()
    with pytest.raises(CorruptDatasetError, match="per_batch=6"):
        load_dataset("cifar10-5k", root=tmp_path, per_batch=6)


def test_cifar10_5k_npz_in_a_search_root_is_preferred(tmp_path):
    marker = np.full((5085, 3, 32, 32), 7, np.uint8)
    labels = np.arange(5085) % 10
    np.savez_compressed(tmp_path / "cifar10-5k.npz", x_train=marker, y_train=labels,
                        x_test=marker[:1017], y_test=labels[:1017])
    ds = load_dataset("cifar10-5k", root=tmp_path)
    assert len(ds) == 5085 and int(ds.images.min()) == int(ds.images.max()) == 7
    np.savez_compressed(tmp_path / "short.npz", x_train=marker[:100], y_train=labels[:100],
                        x_test=marker[:10], y_test=labels[:10])
    with pytest.raises(CorruptDatasetError, match=r"short\.npz.*\(5085, 3, 32, 32\)"):
        load_dataset("cifar10-5k", path=tmp_path / "short.npz")


@pytest.mark.skipif(not SHARED_5K.is_file(), reason=f"{SHARED_5K} is not present")
def test_shared_cifar10_5k_npz_matches_its_readme(tmp_path):
    digest = hashlib.sha256(SHARED_5K.read_bytes()).hexdigest()
    assert digest == "b16b676c44543fcb41b924e32295518898f0dac501a5ea874c293a142d90c245"
    train = load_dataset("cifar10-5k", root=tmp_path / "empty")  # found beside the project
    test = load_dataset("cifar10-5k", root=tmp_path / "empty", train=False)
    assert train.images.shape == (5085, 3, 32, 32) and test.images.shape == (1017, 3, 32, 32)
    train_counts = torch.bincount(train.targets, minlength=10)
    test_counts = torch.bincount(test.targets, minlength=10)
    assert 475 <= int(train_counts.min()) and int(train_counts.max()) <= 537
    assert 87 <= int(test_counts.min()) and int(test_counts.max()) <= 114
    pixels = train.images.to(torch.float64) / 255
    np.testing.assert_allclose(pixels.mean(dim=(0, 2, 3)).numpy(), (0.4936, 0.4846, 0.4483), atol=6e-5)
    np.testing.assert_allclose(pixels.std(dim=(0, 2, 3)).numpy(), (0.2481, 0.2446, 0.2621), atol=6e-5)
    assert train.mean == CIFAR10_MEAN and train.classes == CIFAR10_NAMES


# --------------------------------------------------------------------------------------------------
# ImageDataset and the registry


def tiny_dataset() -> ImageDataset:
    images = torch.arange(2 * 2 * 3 * 3, dtype=torch.uint8).reshape(2, 2, 3, 3) * 7
    return ImageDataset("tiny", images, torch.tensor([1, 0]), ["a", "b"], (0.25, 0.5), (0.5, 0.125))


def test_normalize_and_items_against_float64():
    ds = tiny_dataset()
    batch = ds.images
    expected = (batch.numpy().astype(np.float64) / 255 - np.array([0.25, 0.5])[:, None, None]) / np.array(
        [0.5, 0.125])[:, None, None]
    out = ds.normalize(batch)
    assert out.dtype == torch.float32 and out.device == batch.device
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    image, target, index = ds[-2]
    np.testing.assert_allclose(image.numpy(), expected[0], rtol=1e-6, atol=1e-6)
    assert (target, index) == (1, 0)
    ds.transform = lambda x: x * 0 + 3
    assert torch.all(ds[1][0] == 3)
    with pytest.raises(IndexError, match="index 2"):
        ds[2]
    with pytest.raises(TypeError, match="uint8"):
        ds.normalize(batch.float())


def test_fingerprint_tracks_images_and_targets():
    base = tiny_dataset()
    assert base.fingerprint() == tiny_dataset().fingerprint() and len(base.fingerprint()) == 16
    changed = tiny_dataset()
    changed.images[1, 0, 2, 2] += 1
    relabelled = tiny_dataset()
    relabelled.targets[0] = 0
    assert len({base.fingerprint(), changed.fingerprint(), relabelled.fingerprint()}) == 3


def test_constructor_rejects_inconsistent_inputs():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("x", images.float(), torch.tensor([0, 1]), ["a", "b"], (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="one entry per image"):
        ImageDataset("x", images, torch.tensor([0]), ["a", "b"], (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="3 entries"):
        ImageDataset("x", images, torch.tensor([0, 1]), ["a", "b"], (0,), (1,))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ImageDataset("x", images, torch.tensor([0, 2]), ["a", "b"], (0,) * 3, (1,) * 3)


def test_registry_names_and_bad_requests():
    assert data.list_datasets() == ["cifar10", "cifar100", "svhn", "cinic10", "cifar10-5k", "digits", "npz",
                                    "imagefolder"]
    with pytest.raises(ValueError, match=r"'mnist'.*cifar10.*digits.*imagefolder"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"'digits'.*\['size'\].*test_fraction, seed"):
        load_dataset("digits", size=(8, 8))
