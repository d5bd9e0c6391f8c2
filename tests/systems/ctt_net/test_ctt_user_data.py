"""The CTT-Net loader for a user's own OCT data: acuity parsing, image reading, eye pairing, errors."""

import csv

import numpy as np
import pytest
from PIL import Image

from frugal.scripts.systems.ctt_net.eye_data import EyeSet, assign_folds
from frugal.scripts.systems.ctt_net.user_data import load_eye_csv, parse_va, read_scan

HEADER = ["eye_id", "view", "image", "pre_va", "post_va", "fold"]


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _scan(seed, shape=(20, 30)):
    """A distinct 8-bit image per eye and view, so a mix-up shows in the pixels."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def _folder(tmp_path, eyes=(("a", "0.1", "20/40", 0), ("b", "CF", "6/12", 1), ("c", "0.3", "1.0", 0))):
    """Images and rows (H and V per eye) for the eyes given as (eye_id, pre_va, post_va, fold)."""
    rows = []
    for k, (eye, pre, post, fold) in enumerate(eyes):
        for j, view in enumerate("HV"):
            _png(tmp_path / "img" / f"{eye}_{view}.png", _scan(10 * k + j))
            rows.append([eye, view, f"img/{eye}_{view}.png", pre, post, fold])
    return rows


# ---------------------------------------------------------------- parse_va


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5", 0.5),
        ("1.2", 1.2),
        ("0,8", 0.8),
        (".4", 0.4),
        ("20/40", 0.5),
        ("6/12", 0.5),
        ("20 / 200", 0.1),
        ("6/9", 6 / 9),
        ("20/40-2", 0.5),
        ("20/25+1", 0.8),
        ("CF", 0.01),
        ("cf", 0.01),
        ("Counting Fingers", 0.01),
        ("CF 1m", 0.01),
        ("FC", 0.01),
        ("HM", 0.01),
        ("hand motion", 0.01),
        ("HM@30cm", 0.01),
        ("LP", 0.01),
        ("LP+", 0.01),
        ("light perception", 0.01),
        ("指数/30cm", 0.01),
        ("眼前手动", 0.01),
        ("光感", 0.01),
        ("2.0", 1.5),
        ("20/10", 1.5),
        ("0.001", 0.01),
        ("1/200", 0.01),
        ("  0.5  ", 0.5),
    ],
)
def test_parse_va_values(text, expected):
    assert parse_va(text) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "text, message",
    [
        ("NLP", "no light perception"),
        ("no light perception", "no light perception"),
        ("LP-", "no light perception"),
        ("无光感", "no light perception"),
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "cannot parse"),
        ("20/", "cannot parse"),
        ("CFX", "cannot parse"),
        ("nan", "cannot parse"),
        ("inf", "cannot parse"),
        ("0", "zero"),
        ("0/20", "positive"),
        ("20/0", "positive"),
        ("-0.2", "logMAR"),
    ],
)
def test_parse_va_refusals_name_where_and_value(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_va(text, where="labels.csv row 7, column pre_va")
    assert str(info.value).startswith("labels.csv row 7, column pre_va: ")
    if text.strip():
        assert repr(text) in str(info.value)


# ---------------------------------------------------------------- images


def test_read_scan_matches_pil_resize_of_a_gradient(tmp_path):
    depth, lateral = np.meshgrid(np.arange(40) / 39, np.arange(60) / 59, indexing="ij")
    ramp = np.round(150 * depth**2 + 100 * lateral**3).astype(np.uint8)  # 0..250, depth x lateral
    path = _png(tmp_path / "g.png", ramp)
    got = read_scan(path, image_shape=(16, 24))
    assert got.shape == (16, 24) and got.dtype == np.float32
    want = Image.fromarray(ramp.astype(np.float32) / 255).resize((24, 16), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-6)
    want_8bit = np.asarray(Image.fromarray(ramp).resize((24, 16), Image.Resampling.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(got, want_8bit, atol=1 / 255 + 1e-6)  # L-mode rounds to 8 bits
    assert got[0, 0] < got[0, -1] < got[-1, -1]  # orientation kept: rows are depth, columns lateral
    # the same size is an identity, and RGB exports read as their grayscale
    np.testing.assert_allclose(read_scan(path, image_shape=(40, 60)), ramp / 255, atol=1e-6)
    rgb = _png(tmp_path / "rgb.png", np.repeat(ramp[..., None], 3, axis=2))
    np.testing.assert_allclose(read_scan(rgb, image_shape=(40, 60)), ramp / 255, atol=1e-6)


def test_read_scan_crop_and_16_bit(tmp_path):
    image = _scan(1, (30, 50))
    path = _png(tmp_path / "c.png", image)
    got = read_scan(path, image_shape=(10, 20), crop=(5, 3, 25, 13))
    np.testing.assert_allclose(got, image[3:13, 5:25] / 255, atol=1e-6)
    deep = (np.arange(12 * 20).reshape(12, 20) * 250).astype(np.uint16)
    path16 = _png(tmp_path / "d16.png", deep)
    np.testing.assert_allclose(read_scan(path16, image_shape=(12, 20)), deep / 65535, atol=1e-6)


# ---------------------------------------------------------------- load_eye_csv


def test_load_eye_csv_values_images_and_folds(tmp_path):
    rows = _folder(tmp_path)
    eyes = load_eye_csv(_write_csv(tmp_path / "labels.csv", rows), image_shape=(20, 30))
    assert isinstance(eyes, EyeSet) and len(eyes) == 3
    assert eyes.eye_ids.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(eyes.pre_va, [0.1, 0.01, 0.3], rtol=1e-6)
    np.testing.assert_allclose(eyes.post_va, [0.5, 0.5, 1.0], rtol=1e-6)
    assert eyes.folds.tolist() == [0, 1, 0] and eyes.folds.dtype.kind == "i"
    assert eyes.truth == {} and eyes.source == str(tmp_path / "labels.csv")
    assert eyes.horizontal.dtype == np.float32 and eyes.image_shape == (20, 30)
    for k in range(3):
        np.testing.assert_allclose(eyes.horizontal[k], _scan(10 * k) / 255, atol=1e-6)
        np.testing.assert_allclose(eyes.vertical[k], _scan(10 * k + 1) / 255, atol=1e-6)
    np.testing.assert_array_equal(assign_folds(eyes, 2, seed=0), [0, 1, 0])  # the CSV's folds are used


def test_load_eye_csv_is_independent_of_row_order(tmp_path):
    rows = _folder(tmp_path)
    reference = load_eye_csv(_write_csv(tmp_path / "labels.csv", rows), image_shape=(10, 15))
    # views given as words and in any case, rows shuffled so an eye's V comes before its H
    shuffled = [rows[i] for i in (5, 1, 2, 4, 3, 0)]
    for row in shuffled:
        row[1] = {"H": "Horizontal", "V": "vertical"}[row[1]]
    other = load_eye_csv(_write_csv(tmp_path / "shuffled.csv", shuffled), image_shape=(10, 15))
    assert other.eye_ids.tolist() == reference.eye_ids.tolist()
    for name in ("horizontal", "vertical", "pre_va", "post_va", "folds"):
        np.testing.assert_array_equal(getattr(other, name), getattr(reference, name), err_msg=name)
    assert not np.allclose(other.horizontal, other.vertical)


def test_load_eye_csv_image_root_absolute_paths_and_optional_fold(tmp_path):
    rows = [r[:5] for r in _folder(tmp_path / "data")]
    rows[0][2] = str(tmp_path / "data" / rows[0][2])  # an absolute path is used as it is
    sub = tmp_path / "csvs"
    sub.mkdir()
    header = [" Eye_ID ", "VIEW", "image", "pre_va", "post_va", "notes"]  # case, spaces, extra column
    eyes = load_eye_csv(
        _write_csv(sub / "l.csv", [r + ["x"] for r in rows], header), tmp_path / "data", image_shape=(20, 30)
    )
    assert eyes.folds is None and len(eyes) == 3
    np.testing.assert_allclose(eyes.horizontal[0], _scan(0) / 255, atol=1e-6)
    with pytest.raises(FileNotFoundError, match=r"row 2 \(line 3\), column image"):
        load_eye_csv(_write_csv(sub / "l.csv", rows, HEADER[:5]), image_shape=(20, 30))  # root: the CSV's folder


def test_load_eye_csv_crop(tmp_path):
    rows = _folder(tmp_path)
    eyes = load_eye_csv(_write_csv(tmp_path / "l.csv", rows), image_shape=(10, 20), crop=(4, 2, 24, 12))
    np.testing.assert_allclose(eyes.vertical[2], _scan(21)[2:12, 4:24] / 255, atol=1e-6)
    with pytest.raises(ValueError, match=r"l.csv row 1 \(line 2\), column image: crop=\(4, 2, 40, 12\) falls outside"):
        load_eye_csv(tmp_path / "l.csv", image_shape=(10, 20), crop=(4, 2, 40, 12))
    with pytest.raises(ValueError, match="crop"):
        load_eye_csv(tmp_path / "l.csv", crop=(10, 0, 5, 8))


def _error(tmp_path, rows, header=HEADER, exc=ValueError, match=""):
    path = _write_csv(tmp_path / "labels.csv", rows, header)
    with pytest.raises(exc, match=match):
        load_eye_csv(path, image_shape=(8, 8))


def test_errors_for_the_csv_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        load_eye_csv(tmp_path / "nothing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv: the CSV is empty; expected the header eye_id,view,image"):
        load_eye_csv(tmp_path / "empty.csv")
    _error(tmp_path, [], match="header but no data rows")
    _error(
        tmp_path,
        [["a", "H", "x.png", "0.1"]],
        header=["eye_id", "view", "image", "pre_va"],
        match=r"missing column\(s\) post_va; expected the header eye_id,view,image,pre_va,post_va",
    )
    _error(
        tmp_path,
        [],
        header=["id", "view", "img", "pre_va", "post_va"],
        match=r"missing column\(s\) eye_id, image;",
    )


def test_errors_name_row_and_column(tmp_path):
    rows = _folder(tmp_path)

    def broken(row, column, value):
        copy = [list(r) for r in rows]
        copy[row][HEADER.index(column)] = value
        return copy

    # rows are 1-based data rows; the header is line 1
    _error(tmp_path, broken(3, "pre_va", "better"), match=r"labels.csv row 4 \(line 5\), column pre_va: cannot parse")
    _error(tmp_path, broken(4, "post_va", "NLP"), match=r"row 5 \(line 6\), column post_va: .*no light perception")
    _error(tmp_path, broken(2, "view", "oblique"), match=r"row 3 \(line 4\), column view: unknown view 'oblique'")
    _error(tmp_path, broken(1, "fold", "1.5"), match=r"row 2 \(line 3\), column fold: fold '1.5' is not an integer")
    _error(tmp_path, broken(0, "fold", ""), match=r"row 1 \(line 2\), column fold: fold '' is not an integer")
    _error(tmp_path, broken(5, "eye_id", ""), match=r"row 6 \(line 7\), column eye_id: empty eye_id")
    _error(
        tmp_path,
        broken(3, "image", "img/missing.png"),
        exc=FileNotFoundError,
        match=r"row 4 \(line 5\), column image: image .*missing.png.* not found",
    )
    (tmp_path / "img" / "junk.png").write_bytes(b"not a png at all")
    _error(
        tmp_path, broken(1, "image", "img/junk.png"), match=r"row 2 \(line 3\), column image: unreadable image .*junk"
    )


def test_errors_for_pairing(tmp_path):
    rows = _folder(tmp_path)
    _error(tmp_path, rows[:3], match=r"row 3 \(line 4\), column view: eye 'b' has only a H view; add its V row")
    _error(tmp_path, rows[1:], match=r"row 1 \(line 2\), column view: eye 'a' has only a V view; add its H row")
    duplicate = rows[:2] + [rows[0]] + rows[2:]
    second = r"row 3 \(line 4\), column view: eye 'a' has a second H view \(the first is row 1, line 2\)"
    _error(tmp_path, duplicate, match=second)
    for column, value in (("pre_va", "0.2"), ("post_va", "20/30"), ("fold", "2")):
        conflicting = [list(r) for r in rows]
        conflicting[3][HEADER.index(column)] = value
        _error(
            tmp_path,
            conflicting,
            match=rf"row 4 \(line 5\), column {column}: eye 'b' has {column} '{value}' here but .* in row 3 \(line 4\)",
        )
    # the same acuity written two ways is no conflict
    same = [list(r) for r in rows]
    same[1][3] = "2/20"
    assert load_eye_csv(_write_csv(tmp_path / "same.csv", same), image_shape=(8, 8)).pre_va[0] == pytest.approx(0.1)


def test_blank_rows_are_skipped_and_row_numbers_follow_data_rows(tmp_path):
    rows = _folder(tmp_path)
    path = tmp_path / "labels.csv"
    _write_csv(path, rows[:2] + [["", "", "", "", "", ""]] + rows[2:])
    assert len(load_eye_csv(path, image_shape=(8, 8))) == 3
    broken = [list(r) for r in rows]
    broken[2][3] = "??"
    _write_csv(path, broken[:2] + [[""] * 6] + broken[2:])
    with pytest.raises(ValueError, match=r"row 3 \(line 5\), column pre_va"):
        load_eye_csv(path, image_shape=(8, 8))
