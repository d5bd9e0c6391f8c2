"""The built-in real photographs: the table, the photo-disjoint split, patch cutting, the texture filter, the cache."""

import numpy as np
import pytest

from frugal.scripts.systems.gan_fingerprint import photos
from frugal.scripts.systems.gan_fingerprint.photos import (
    BUNDLED_PHOTOS,
    DEBIAN_PHOTOS,
    DEFAULT_PHOTOS,
    PHOTOS,
    SPLITS,
    TEXTURE_THRESHOLD,
    cut_patches,
    expand_photo_names,
    load_photo,
    load_photo_patches,
    split_photos,
    texture_score,
)

THREE = ("chelsea", "coffee", "rocket")


def _check_record(p):
    native = photos._native_photo(p.name)
    assert native.shape == (p.height, p.width, 3) and native.dtype == np.uint8, p.name
    # grey photos have three equal channels (replicated, or so stored); colour ones do not
    assert np.array_equal(native[..., 0], native[..., 2]) == p.grey, p.name
    assert p.licence and p.credit


def test_table_matches_what_the_packages_ship():
    assert len({p.name for p in PHOTOS}) == len(PHOTOS)
    assert DEFAULT_PHOTOS == BUNDLED_PHOTOS
    assert set(BUNDLED_PHOTOS) == {p.name for p in PHOTOS if not p.grey and p.file is None}
    assert len(BUNDLED_PHOTOS) == 7 and len(DEBIAN_PHOTOS) == 21
    for p in PHOTOS:
        if p.file is None:
            assert p.package in ("scikit-image", "scikit-learn")
            _check_record(p)
        else:
            assert p.package in ("mate-backgrounds", "plasma-workspace-wallpapers")


@pytest.mark.parametrize("package", ["mate-backgrounds", "plasma-workspace-wallpapers"])
def test_debian_records_match_the_installed_files(package):
    records = [p for p in PHOTOS if p.package == package]
    if not (photos.DEBIAN_ROOT / records[0].file).is_file():
        pytest.skip(f"the Debian package {package} is not installed (apt install {package})")
    for p in records:
        _check_record(p)


def test_groups_expand_in_order_without_repeats():
    assert expand_photo_names(["bundled"]) == BUNDLED_PHOTOS
    both = expand_photo_names(["chelsea", "bundled", "debian", "aqua"])
    assert both[0] == "chelsea" and both[1:] == tuple(n for n in BUNDLED_PHOTOS if n != "chelsea") + DEBIAN_PHOTOS
    assert expand_photo_names(["grey", "camera"]) == ("grey", "camera")  # grey photos only by name
    with pytest.raises(ValueError, match=r"photo name 'lena' is not known.*groups \['bundled', 'debian'\]"):
        expand_photo_names(["bundled", "lena"])
    with pytest.raises(ValueError, match="non-empty"):
        expand_photo_names([])


def _fake_debian_root(tmp_path, monkeypatch, names):
    """Writes a textured JPEG where each Debian photo's package would install it; DEBIAN_ROOT points there."""
    from PIL import Image

    monkeypatch.setattr(photos, "DEBIAN_ROOT", tmp_path)
    for k, name in enumerate(names):
        path = tmp_path / photos.photo_record(name).file
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(k).integers(0, 256, (120, 180, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=95)
    return tmp_path


def test_a_missing_debian_photo_names_the_apt_package(tmp_path, monkeypatch):
    monkeypatch.setattr(photos, "DEBIAN_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Debian package mate-backgrounds.*apt install mate-backgrounds"):
        load_photo_patches(32, names=("chelsea", "coffee", "aqua"))
    with pytest.raises(FileNotFoundError, match="apt install plasma-workspace-wallpapers"):
        load_photo("path")
    assert load_photo("chelsea").shape == (288, 433, 3)  # wheel photos need no Debian package
    damaged = tmp_path / photos.photo_record("kite").file
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a JPEG")
    with pytest.raises(ValueError, match=r"photo 'kite': cannot read .*apt install --reinstall plasma-workspace"):
        load_photo("kite")


def test_debian_photos_are_read_from_their_files_and_keyed_by_them(tmp_path, monkeypatch):
    root = _fake_debian_root(tmp_path / "root", monkeypatch, ["aqua", "kite"])
    from PIL import Image

    with Image.open(root / photos.photo_record("kite").file) as im:
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(load_photo("kite", short_side=None), expected)
    names = ("chelsea", "aqua", "kite")
    cache = tmp_path / "cache"
    first = load_photo_patches(32, names=names, short_side=None, fractions=(1 / 3, 1 / 3, 1 / 3), cache_dir=cache)
    assert sorted(n for s in SPLITS for n in first.split_table[s]) == sorted(names)
    split = next(s for s in SPLITS if first.split_table[s] == ("kite",))
    top, left = first.origins[split][0]
    np.testing.assert_array_equal(first.split(split)[0], expected[top : top + 32, left : left + 32] / np.float32(255))
    assert set(first.settings["files"]) == {"aqua", "kite"}
    # A package upgrade that replaces a file changes the cache key: the patches are rebuilt, not reused.
    path = root / photos.photo_record("kite").file
    Image.fromarray(expected[::-1].copy()).save(path, quality=90)
    second = load_photo_patches(32, names=names, short_side=None, fractions=(1 / 3, 1 / 3, 1 / 3), cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    assert not np.array_equal(second.split(split), first.split(split))


def test_shrink_sets_the_short_side_and_never_upscales():
    assert load_photo("chelsea", short_side=None).shape == (300, 451, 3)
    assert load_photo("chelsea", short_side=400).shape == (300, 451, 3)  # smaller than asked: kept native
    assert load_photo("coffee", short_side=288).shape == (288, 432, 3)
    with pytest.raises(ValueError, match="short_side"):
        load_photo("coffee", short_side=0)
    with pytest.raises(ValueError, match="photo name 'lena' is not known"):
        load_photo("lena")


def test_split_is_by_photo_seeded_and_sized_by_largest_remainder():
    table = split_photos(DEFAULT_PHOTOS, (0.6, 0.2, 0.2), seed=0)
    assigned = [n for s in SPLITS for n in table[s]]
    assert sorted(assigned) == sorted(DEFAULT_PHOTOS)  # every photo once, none in two splits
    # 7 photos x (0.6, 0.2, 0.2) = (4.2, 1.4, 1.4): floors (4, 1, 1), the spare one to the first .4
    assert [len(table[s]) for s in SPLITS] == [4, 2, 1]
    assert split_photos(list(reversed(DEFAULT_PHOTOS)), (0.6, 0.2, 0.2), seed=0) == table
    assert split_photos(DEFAULT_PHOTOS, (0.6, 0.2, 0.2), seed=1) != table
    assert split_photos(THREE, (0.5, 0.5, 0.0), seed=0)["test"] == ()
    with pytest.raises(ValueError, match="cannot fill 3 non-empty splits"):
        split_photos(THREE[:2], (0.6, 0.2, 0.2), seed=0)
    with pytest.raises(ValueError, match="fractions"):
        split_photos(THREE, (0.5, 0.2, 0.2), seed=0)


def test_patches_are_the_textured_crops_of_the_shrunk_photos():
    got = load_photo_patches(32, names=THREE, stride=24, fractions=(1 / 3, 1 / 3, 1 / 3))
    assert sorted(n for s in SPLITS for n in got.split_table[s]) == sorted(THREE)
    for split in SPLITS:
        (name,) = got.split_table[split]
        x, ids, origins = got.split(split), got.photo_ids[split], got.origins[split]
        assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3) and x.min() >= 0.0 and x.max() <= 1.0
        assert set(ids) == {name}
        photo = load_photo(name)
        # Independent reference: every window on the 24-px grid, by slicing, kept if textured.
        expected = []
        for top in range(0, photo.shape[0] - 32 + 1, 24):
            for left in range(0, photo.shape[1] - 32 + 1, 24):
                crop = photo[top : top + 32, left : left + 32]
                luma = crop.astype(np.float64) @ [0.299, 0.587, 0.114] / 255.0
                rms = np.sqrt((np.diff(luma, axis=1).var() + np.diff(luma, axis=0).var()) / 2)
                if rms >= TEXTURE_THRESHOLD:
                    expected.append((top, left))
        assert [tuple(o) for o in origins] == expected
        k = len(x) // 2
        top, left = origins[k]
        np.testing.assert_array_equal(x[k], photo[top : top + 32, left : left + 32] / np.float32(255.0))
    assert 0.5 < got.kept_fraction < 1.0


def test_max_per_split_is_a_seeded_sample():
    a = load_photo_patches(32, names=THREE, max_per_split=10)
    b = load_photo_patches(32, names=THREE, max_per_split=10)
    assert [len(a.split(s)) for s in SPLITS] == [10, 10, 10]
    for s in SPLITS:
        np.testing.assert_array_equal(a.split(s), b.split(s))
        assert len(set(map(tuple, a.origins[s]))) == 10  # no window twice


def test_texture_filter_drops_flat_and_ramps_keeps_texture():
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    flat = np.full((32, 32, 3), 0.4)
    ramp = np.repeat((0.2 + 0.6 * (0.5 * yy + 0.5 * xx))[..., None], 3, -1)  # a smooth sky gradient
    textured = np.random.default_rng(0).uniform(0.3, 0.7, (32, 32, 3))
    scores = texture_score(np.stack([flat, ramp, textured]).astype(np.float32))
    np.testing.assert_allclose(scores[:2], 0.0, atol=1e-6)
    assert scores[2] > 10 * TEXTURE_THRESHOLD
    # uint8 input is scaled to [0, 1] first
    np.testing.assert_allclose(texture_score((textured[None] * 255).round().astype(np.uint8)), scores[2], rtol=0.02)
    # An image half flat, half textured: only windows wholly in the textured half survive the filter.
    image = np.zeros((32, 96, 3), np.uint8)
    image[:, 48:] = np.random.default_rng(1).integers(0, 256, (32, 48, 3))
    patches, origins = cut_patches(image, 32, 16)
    assert origins[:, 1].tolist() == [0, 16, 32, 48, 64]
    kept = origins[texture_score(patches) >= TEXTURE_THRESHOLD][:, 1].tolist()
    assert kept == [32, 48, 64] and texture_score(patches[:1])[0] == 0.0


def test_cache_round_trip_and_a_changed_setting_misses(tmp_path, monkeypatch):
    fresh = load_photo_patches(32, names=THREE, max_per_split=40)
    first = load_photo_patches(32, names=THREE, max_per_split=40, cache_dir=tmp_path)
    (written,) = tmp_path.glob("*.npz")

    def no_build(settings):
        raise AssertionError("the cached arrays should have been read")

    monkeypatch.setattr(photos, "_build", no_build)
    cached = load_photo_patches(32, names=THREE, max_per_split=40, cache_dir=tmp_path)
    monkeypatch.undo()
    for got in (first, cached):
        assert got.split_table == fresh.split_table and got.kept_fraction == fresh.kept_fraction
        for s in SPLITS:
            np.testing.assert_array_equal(got.split(s), fresh.split(s))
            np.testing.assert_array_equal(got.photo_ids[s], fresh.photo_ids[s])
            np.testing.assert_array_equal(got.origins[s], fresh.origins[s])
    other = load_photo_patches(32, names=THREE, max_per_split=40, stride=32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    expected = load_photo_patches(32, names=THREE, max_per_split=40, stride=32)
    np.testing.assert_array_equal(other.train, expected.train)
    assert other.settings["stride"] == 32 and not np.array_equal(other.origins["train"], first.origins["train"])
    written.write_bytes(b"not an npz")  # a damaged cache file is rebuilt, not trusted
    rebuilt = load_photo_patches(32, names=THREE, max_per_split=40, cache_dir=tmp_path)
    np.testing.assert_array_equal(rebuilt.val, fresh.val)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 48}, "size=48 must be 32 or 64"),
        ({"names": ("chelsea", "lena", "coffee")}, "photo name 'lena' is not known"),
        ({"names": "chelsea"}, "names="),
        ({"stride": 0}, "stride=0"),
        ({"short_side": 16}, "short_side=16 is smaller than the patch size 32"),
        ({"max_per_split": 0}, "max_per_split=0"),
        ({"fractions": (0.0, 0.5, 0.5)}, "positive train share"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_photo_patches(**kwargs)
