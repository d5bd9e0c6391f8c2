"""Loaders for a user's real/fake images: the CNNDetection layout, a real-photo folder, CIFAR-10, the validator."""

import numpy as np
import pytest
from PIL import Image

from frugal.scripts.systems.gan_fingerprint.user_data import (
    LabelledImages,
    check_images,
    load_cifar10_real,
    load_cnndetection,
    load_real_folder,
)

# A distinct grey level per (generator, class, label), so every image shows where it was read from.
CODES = {
    ("progan", "horse", 0): 10,
    ("progan", "horse", 1): 30,
    ("progan", "car", 0): 50,
    ("progan", "car", 1): 70,
    ("progan", "cat", 0): 90,
    ("progan", "cat", 1): 110,
    ("stargan", "", 0): 130,
    ("stargan", "", 1): 150,
}


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _tree(root, per_folder=2):
    """progan with a class level (horse, car, cat), stargan without one; flat 20 x 24 images."""
    for (gan, cls, label), code in CODES.items():
        folder = root / gan / cls / ("0_real", "1_fake")[label]
        for i in range(per_folder):
            _png(folder / f"{i:03d}.png", np.full((20, 24, 3), code, np.uint8))
    return root


def test_cnndetection_labels_sources_and_classes(tmp_path):
    sets = load_cnndetection(_tree(tmp_path), size=8)
    assert sorted(sets) == ["progan", "stargan"]
    for gan, data in sets.items():
        assert data.images.shape[1:] == (8, 8, 3) and data.images.dtype == np.float32
        assert set(data.sources) == {gan}
        for image, label, cls in zip(data.images, data.labels, data.categories):
            np.testing.assert_allclose(image, CODES[(gan, str(cls), int(label))] / 255.0, atol=1e-6)
    assert sets["progan"].labels.tolist() == [0, 0, 1, 1] * 3 and sorted(set(sets["progan"].categories)) == [
        "car",
        "cat",
        "horse",
    ]
    assert sets["stargan"].labels.tolist() == [0, 0, 1, 1] and set(sets["stargan"].categories) == {""}
    two = load_cnndetection(tmp_path, size=8, generators=["progan"], classes="horse,car", max_per_folder=1)
    assert list(two) == ["progan"] and sorted(two["progan"].categories) == ["car", "car", "horse", "horse"]
    # the class filter leaves generators without a class level whole
    assert len(load_cnndetection(tmp_path, size=8, classes=("cat",))["stargan"]) == 4


def test_cnndetection_centre_crops_then_resizes(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    for sub in ("0_real", "1_fake"):
        _png(tmp_path / "g" / sub / "a.png", image)
    (same_side,) = load_cnndetection(tmp_path, size=20).values()
    np.testing.assert_array_equal(same_side.images[0], image[:, 4:24] / np.float32(255.0))
    (small,) = load_cnndetection(tmp_path, size=10).values()
    reference = np.asarray(Image.fromarray(image[:, 4:24]).resize((10, 10), Image.Resampling.BICUBIC)) / 255.0
    np.testing.assert_allclose(small.images[0], reference, atol=1e-6)


def test_cnndetection_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="root="):
        load_cnndetection(tmp_path / "missing", size=8)
    with pytest.raises(ValueError, match="has no generator folders"):
        load_cnndetection(tmp_path, size=8)
    _tree(tmp_path / "ok")
    with pytest.raises(ValueError, match=r"generators=\['biggan'\]"):
        load_cnndetection(tmp_path / "ok", size=8, generators="biggan")
    with pytest.raises(ValueError, match=r"classes=\['dog'\]: none found"):
        load_cnndetection(tmp_path / "ok", size=8, classes="dog")
    with pytest.raises(ValueError, match="size=0"):
        load_cnndetection(tmp_path / "ok", size=0)
    (tmp_path / "flat" / "gan" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="neither 0_real/ and 1_fake/"):
        load_cnndetection(tmp_path / "flat", size=8)
    _png(tmp_path / "half" / "gan" / "horse" / "0_real" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="has no 1_fake/ folder"):
        load_cnndetection(tmp_path / "half", size=8)
    (tmp_path / "half" / "gan" / "horse" / "1_fake").mkdir()
    with pytest.raises(ValueError, match=r"1_fake holds no images"):
        load_cnndetection(tmp_path / "half", size=8)
    (tmp_path / "half" / "gan" / "horse" / "1_fake" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*broken\.png"):
        load_cnndetection(tmp_path / "half", size=8)


def test_real_folder_resize_and_patches(tmp_path):
    rng = np.random.default_rng(1)
    _png(tmp_path / "photos" / "a.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    half = np.zeros((32, 64, 3), np.uint8)  # left half flat, right half textured
    half[:, 32:] = rng.integers(0, 256, (32, 32, 3))
    _png(tmp_path / "photos" / "nested" / "b.jpg", half)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    whole = load_real_folder(tmp_path / "photos", size=8)
    assert whole.images.shape == (2, 8, 8, 3) and whole.labels.tolist() == [0, 0]
    assert set(whole.sources) == {"photos"}
    patches = load_real_folder(tmp_path / "photos", size=16, mode="patches", stride=16, source="mine")
    # a.png: 0 windows at 16 px; b.jpg: 2 x 4 windows, only the 2 x 2 in the textured half are kept
    assert patches.images.shape == (4, 16, 16, 3) and set(patches.sources) == {"mine"}
    assert (patches.images.std(axis=(1, 2, 3)) > 0.1).all()
    with pytest.raises(ValueError, match="mode='tiles'"):
        load_real_folder(tmp_path / "photos", size=8, mode="tiles")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_real_folder(tmp_path / "empty", size=8)


def _cifar_file(path, images, labels):
    records = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)
    records.astype(np.uint8).tofile(path)


def test_cifar10_real_is_unstandardized(tmp_path):
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(6)]
    for i, batch in enumerate(batches[:5], start=1):
        _cifar_file(tmp_path / f"data_batch_{i}.bin", batch, np.arange(3) % 10)
    _cifar_file(tmp_path / "test_batch.bin", batches[5], np.zeros(3, np.int64))
    train = load_cifar10_real(tmp_path, max_images=4)
    np.testing.assert_array_equal(train.images, np.concatenate(batches[:2])[:4] / np.float32(255.0))
    assert train.labels.tolist() == [0] * 4 and set(train.sources) == {"cifar10"}
    test = load_cifar10_real(tmp_path, split="test", size=16)
    assert test.images.shape == (3, 16, 16, 3) and test.images.min() >= 0.0 and test.images.max() <= 1.0
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(ValueError, match=r"lacks \['data_batch_3.bin'\]"):
        load_cifar10_real(tmp_path)
    with pytest.raises(ValueError, match="split='val'"):
        load_cifar10_real(tmp_path, split="val")


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((2, 8, 8), np.float32), "4-D"),
        (np.zeros((2, 3, 8, 8), np.float32), "channels first"),
        (np.zeros((2, 8, 8, 1), np.float32), "3 colour channels"),
        (np.zeros((2, 16, 16, 3), np.float32), "must be 8x8 images, got 16x16"),
        (np.zeros((0, 8, 8, 3), np.float32), "is empty"),
        (np.zeros((2, 8, 8, 3), np.uint8), "float images in \\[0, 1\\], got dtype uint8"),
        (np.full((2, 8, 8, 3), 1.5, np.float32), "must lie in \\[0, 1\\]"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_check_images_rejects(images, match):
    with pytest.raises(ValueError, match=match) as err:
        check_images(images, size=8, name="fakes")
    assert str(err.value).startswith("fakes ")


def test_check_images_passes_good_batches_unchanged_and_under_jit():
    import jax
    import jax.numpy as jnp

    good = np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 3))
    assert check_images(good, size=8, name="x") is good
    step = jax.jit(lambda x: check_images(x, size=8, name="batch") * 2)
    np.testing.assert_allclose(step(jnp.asarray(good, jnp.float32)), 2 * good, rtol=1e-6)
    with pytest.raises(ValueError, match="batch must be 8x8"):
        step(jnp.zeros((2, 4, 4, 3)))


def test_labelled_images_from_arrays_and_concatenate():
    real, fake = np.zeros((2, 4, 4, 3)), np.ones((3, 4, 4, 3))
    a = LabelledImages.from_arrays(real=real, fake=fake, size=4, source="dcgan")
    assert a.labels.tolist() == [0, 0, 1, 1, 1] and set(a.sources) == {"dcgan"} and a.images.dtype == np.float32
    b = LabelledImages.from_arrays(fake=fake, size=4, source="shuffle")
    both = LabelledImages.concatenate([a, b])
    assert len(both) == 8 and both.sources.tolist()[-3:] == ["shuffle"] * 3
    with pytest.raises(ValueError, match="real must be 4x4"):
        LabelledImages.from_arrays(real=np.zeros((1, 8, 8, 3)), size=4, source="x")
    with pytest.raises(ValueError, match="labels must be 0"):
        LabelledImages(a.images, a.labels + 1, a.sources, a.categories)
