"""Image data: built-in sets, the user-path loaders (on files written here), batching."""

import numpy as np
import pytest

from frugal.scripts.data import (
    CIFAR10_CLASSES,
    BatchSampler,
    eval_batches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_image_folder,
    make_shapes_dataset,
)


def test_digits_is_the_real_bundled_set_split_stratified():
    d = load_digits()
    assert d.train_x.shape[1:] == (8, 8, 1) and len(d.train_x) + len(d.test_x) == 1797
    assert d.train_x.dtype == np.float32
    # Standardized with training statistics.
    assert abs(d.train_x.mean()) < 1e-4 and abs(d.train_x.std() - 1) < 1e-3
    # Every class in both splits, in proportion.
    assert set(np.unique(d.test_y)) == set(range(10))
    assert np.all(np.abs(np.bincount(d.test_y) / len(d.test_y) - 0.1) < 0.02)
    assert load_digits(32).train_x.shape[1:] == (32, 32, 1)


def test_shapes_dataset_is_seeded_balanced_and_varied():
    a = make_shapes_dataset(50, 20, seed=3)
    b = make_shapes_dataset(50, 20, seed=3)
    c = make_shapes_dataset(50, 20, seed=4)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.train_x, c.train_x)
    assert a.train_x.shape == (50, 32, 32, 3) and a.num_classes == 10
    assert np.bincount(np.concatenate([a.train_y, a.test_y]), minlength=10).min() == 7
    # Images of one class differ from each other (random pose, texture and clutter).
    same = a.train_x[a.train_y == a.train_y[0]]
    assert np.abs(same[0] - same[1]).mean() > 0.1


def _write_cifar(folder, n_per_file=7):
    rng = np.random.default_rng(0)
    folder.mkdir()
    expected = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, n_per_file, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n_per_file, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([labels[:, None], pixels.reshape(n_per_file, -1)], axis=1)
        records.tofile(folder / name)
        expected[name] = (labels, pixels)
    return expected


def test_cifar10_binary_loader_reads_the_official_layout(tmp_path):
    expected = _write_cifar(tmp_path / "cifar-10-batches-bin")
    d = load_cifar10(tmp_path)  # finds the cifar-10-batches-bin subfolder
    assert d.train_x.shape == (35, 32, 32, 3) and d.test_x.shape == (7, 32, 32, 3)
    assert d.class_names == CIFAR10_CLASSES
    labels, pixels = expected["test_batch.bin"]
    np.testing.assert_array_equal(d.test_y, labels)
    # Channel-planar CHW bytes become HWC pixels: compare the standardized ordering of one image.
    want = pixels[0].transpose(1, 2, 0).astype(np.float32)
    got = d.test_x[0]
    np.testing.assert_allclose(np.corrcoef(want.ravel(), got.ravel())[0, 1], 1.0, atol=1e-4)


def test_cifar10_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_cifar10(tmp_path / "partial")
    _write_cifar(tmp_path / "bad")
    (tmp_path / "bad" / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a CIFAR-10 binary batch"):
        load_cifar10(tmp_path / "bad")


def test_image_folder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                arr = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    d = load_image_folder(tmp_path, image_size=16)
    assert d.class_names == ("cat", "dog")
    assert d.train_x.shape == (6, 16, 16, 3) and list(d.train_y) == [0, 0, 0, 1, 1, 1]
    (tmp_path / "val" / "dog" / "3.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image_folder(tmp_path, image_size=16)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_image_folder(tmp_path / "missing")


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="needs --data-path"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="dataset='mnist' is not known"):
        load_dataset("mnist")


def test_batch_sampler_is_a_deterministic_function_of_the_step():
    s = BatchSampler(10, 3, seed=1)
    assert s.steps_per_epoch == 3
    epoch0 = np.concatenate([s.indices(i) for i in range(3)])
    assert len(set(epoch0.tolist())) == 9  # no repeats within an epoch
    np.testing.assert_array_equal(s.indices(4), BatchSampler(10, 3, seed=1).indices(4))
    with pytest.raises(ValueError, match="larger than"):
        BatchSampler(2, 3)


def test_eval_batches_cover_every_example_once():
    seen = np.zeros(10)
    for idx, w in eval_batches(10, 4):
        np.add.at(seen, idx, w)
    np.testing.assert_array_equal(seen, np.ones(10))
