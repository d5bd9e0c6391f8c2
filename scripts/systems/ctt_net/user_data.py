"""A user's real OCT data for CTT-Net: one CSV row per B-scan, two rows (H and V) per eye.

The CSV (any extra columns are ignored; header names are matched case-insensitively)::

    eye_id,view,image,pre_va,post_va,fold
    p001_OD,H,p001/od_h.png,20/200,0.5,0
    p001_OD,V,p001/od_v.png,20/200,0.5,0

Acuities may be decimal ("0.5"), Snellen fractions ("20/40", "6/12") or the grades CF / HM / LP,
which map to 0.01 as in the CTT-Net reference code (github.com/wjh892521292/Cataract_OCT, which
also reads the Chinese grades 指数 / 手动 / 眼前 / 光感). Images are read with Pillow as grayscale,
optionally cropped (the reference crops Heidelberg exports to (496, 0, 1264, 496)), resized with
bilinear interpolation (torchvision's default, which the reference uses) and scaled to [0, 1].
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from frugal.scripts.systems.ctt_net.eye_data import MAX_DECIMAL_VA, MIN_DECIMAL_VA, EyeSet

REQUIRED_COLUMNS = ("eye_id", "view", "image", "pre_va", "post_va")
OPTIONAL_COLUMNS = ("fold",)
EXPECTED_HEADER = ",".join(REQUIRED_COLUMNS) + "[,fold]"
HEIDELBERG_CROP = (496, 0, 1264, 496)  # the reference's crop of Heidelberg exports (left, top, right, bottom)

VIEWS = {"h": "H", "horizontal": "H", "v": "V", "vertical": "V"}

# Non-numeric grades, lower case. A grade may be followed by a qualifier ("CF 1m", "HM@30cm", "LP+").
_LOW_GRADES = (
    "counting fingers",
    "count fingers",
    "finger counting",
    "finger count",
    "hand motions",
    "hand motion",
    "hand movements",
    "hand movement",
    "light perception",
    "perception of light",
    "cf",
    "fc",
    "hm",
    "lp",
    "pl",
)
_LIGHT_GRADES = ("light perception", "perception of light", "lp", "pl")  # "LP-" reads as no light perception
_NO_LIGHT = ("no light perception", "no perception of light", "no lp", "no pl", "nlp", "npl")
_CHINESE_LOW = ("指数", "手动", "眼前", "光感")  # counting fingers, hand motion, before the eye, light perception
_CHINESE_NO_LIGHT = "无光感"
_NUMBER = r"\d+(?:[.,]\d+)?|[.,]\d+"
_DECIMAL = re.compile(rf"^(?:{_NUMBER})$")
# A Snellen fraction, optionally with letters read beyond / missed on the line ("20/40-2", "6/9+1"),
# which are ignored: the value is the line's.
_SNELLEN = re.compile(rf"^({_NUMBER})\s*/\s*({_NUMBER})\s*(?:[+-]\s*\d+)?$")


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def _grade(low: str, grades) -> str | None:
    """The grade `low` starts with, when followed by nothing or by a non-letter qualifier."""
    for grade in grades:
        if low.startswith(grade) and not low[len(grade) : len(grade) + 1].isalpha():
            return grade
    return None


def parse_va(text: str, *, where: str = "") -> float:
    """Decimal VA from what clinics write: a decimal ("0.5", "1.2"; a decimal comma is accepted), a
    Snellen fraction ("20/40", "6/12"; trailing letter counts like "20/40-2" are ignored), or the
    non-numeric grades CF / HM / LP (any case, also "counting fingers", "hand motion", "light
    perception", optionally qualified as in "CF 1m" or "LP+"), which map to 0.01 as the reference
    does. NLP ("no light perception", also "LP-") and zero are refused: there is no meaningful
    acuity. Values are clipped to [0.01, 1.5]. Errors name `where` (e.g. "labels.csv row 7, column
    pre_va") and the value."""
    prefix = f"{where}: " if where else ""
    raw = "" if text is None else str(text)
    low = " ".join(raw.strip().lower().split())
    if not low:
        raise ValueError(f"{prefix}visual acuity is empty")
    if _CHINESE_NO_LIGHT in low or _grade(low, _NO_LIGHT):
        raise ValueError(
            f"{prefix}visual acuity {raw!r} is no light perception (NLP): there is no meaningful acuity; "
            "leave this eye out"
        )
    grade = _grade(low, _LOW_GRADES)
    if grade is not None:
        if grade in _LIGHT_GRADES and low[len(grade) :].lstrip().startswith(("-", "\u2212")):
            raise ValueError(
                f"{prefix}visual acuity {raw!r} reads as no light perception (LP-): there is no meaningful "
                "acuity; leave this eye out"
            )
        return MIN_DECIMAL_VA
    if any(word in low for word in _CHINESE_LOW):
        return MIN_DECIMAL_VA
    expected = "a decimal (0.5), a Snellen fraction (20/40, 6/12) or CF / HM / LP"
    if _DECIMAL.match(low):
        value = _number(low)
    elif match := _SNELLEN.match(low):
        numerator, denominator = _number(match.group(1)), _number(match.group(2))
        if numerator <= 0 or denominator <= 0:
            raise ValueError(f"{prefix}visual acuity {raw!r}: a Snellen fraction needs positive numbers")
        value = numerator / denominator
    elif re.match(rf"^-\s*(?:{_NUMBER})$", low):
        raise ValueError(
            f"{prefix}visual acuity {raw!r} is negative: decimal VA is > 0 (is this logMAR? convert it with "
            "10 ** -logMAR)"
        )
    else:
        raise ValueError(f"{prefix}cannot parse visual acuity {raw!r}: expected {expected}")
    if value <= 0:
        raise ValueError(f"{prefix}visual acuity {raw!r} is zero: decimal VA must be > 0 (use LP, HM or CF)")
    return float(np.clip(value, MIN_DECIMAL_VA, MAX_DECIMAL_VA))


def _check_shape(image_shape) -> tuple[int, int]:
    shape = tuple(image_shape)
    if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ValueError(f"image_shape must be (height, width) of two positive ints, got {image_shape!r}")
    return int(shape[0]), int(shape[1])


def _check_crop(crop) -> tuple[int, int, int, int] | None:
    if crop is None:
        return None
    box = tuple(crop)
    if len(box) != 4 or not all(isinstance(c, (int, np.integer)) for c in box):
        raise ValueError(f"crop must be (left, top, right, bottom) of four ints, got {crop!r}")
    left, top, right, bottom = (int(c) for c in box)
    if left < 0 or top < 0 or right <= left or bottom <= top:
        raise ValueError(f"crop={box} must satisfy 0 <= left < right and 0 <= top < bottom")
    return left, top, right, bottom


def _grayscale(image: Image.Image) -> np.ndarray:
    """A 2-D float32 array in [0, 1]: 8-bit modes (L, RGB, P, ...) over 255, 16-bit ones over 65535."""
    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.ndim != 2 or pixels.min() < 0 or pixels.max() > 65535:
            raise ValueError(f"{image.mode} values outside 0..65535")
        return (pixels / 65535.0).astype(np.float32)
    if image.mode == "F":
        raise ValueError("floating-point images are not supported; export 8- or 16-bit grayscale or RGB")
    return np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255.0)


def read_scan(path, *, image_shape=(64, 128), crop=None, where: str = "") -> np.ndarray:
    """One B-scan as an (height, width) float32 array in [0, 1]: grayscale, cropped to crop=(left,
    top, right, bottom) when given, resized bilinearly to image_shape. Errors name `where`."""
    height, width = _check_shape(image_shape)
    crop = _check_crop(crop)
    prefix = f"{where}: " if where else ""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{prefix}image {str(path)!r} not found")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()  # the first frame of a multi-page TIFF
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{prefix}unreadable image {str(path)!r}: {error}") from error
    if crop is not None and (crop[2] > image.width or crop[3] > image.height):
        raise ValueError(
            f"{prefix}crop={crop} falls outside image {str(path)!r} of width x height {image.width} x {image.height}"
        )
    if crop is not None:
        image = image.crop(crop)
    try:
        pixels = _grayscale(image)
    except ValueError as error:
        raise ValueError(f"{prefix}unreadable image {str(path)!r}: {error}") from error
    resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


class _Row:
    __slots__ = ("number", "line", "values")

    def __init__(self, number: int, line: int, values: dict):
        self.number, self.line, self.values = number, line, values


def load_eye_csv(csv_path, image_root=None, *, image_shape=(64, 128), crop=None) -> EyeSet:
    """One CSV row per image: columns eye_id, view, image, pre_va, post_va, and optional fold.
    view: H/V (also horizontal/vertical, any case). image: a path relative to image_root (default:
    the CSV's folder); absolute paths are used as they are. Each eye needs exactly one H and one V
    row with the same pre_va/post_va (and fold). Images are read with Pillow as grayscale, optionally
    cropped to crop=(left, top, right, bottom) (Heidelberg exports: HEIDELBERG_CROP = (496, 0, 1264,
    496) in the reference), resized to image_shape (height, width) and scaled to [0, 1] float32.
    Returns an EyeSet with source=str(csv_path), eyes sorted by eye_id (so the result does not depend
    on the CSV's row order), folds (int) when the column is present, empty truth.

    Errors (ValueError, or FileNotFoundError for missing files) name the CSV, the 1-based data row,
    its file line and the column. Rows whose cells are all blank are skipped."""
    height, width = _check_shape(image_shape)
    crop = _check_crop(crop)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"eye CSV {str(csv_path)!r} not found")
    root = csv_path.parent if image_root is None else Path(image_root)
    name = csv_path.name

    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise ValueError(f"{name}: the CSV is empty; expected the header {EXPECTED_HEADER} and one row per image")
        columns = [cell.strip().lower() for cell in header]
        for column in set(columns):
            if column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and columns.count(column) > 1:
                raise ValueError(f"{name} line {reader.line_num}: column {column} appears twice in the header")
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"{name} line {reader.line_num}: missing column(s) {', '.join(missing)}; expected the header "
                f"{EXPECTED_HEADER} (found {','.join(columns)})"
            )
        index = {c: columns.index(c) for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in columns}
        has_fold = "fold" in index
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            number = len(rows) + 1
            if len(cells) > len(columns) and any(cell.strip() for cell in cells[len(columns) :]):
                raise ValueError(
                    f"{name} row {number} (line {reader.line_num}): {len(cells)} fields but the header has "
                    f"{len(columns)}"
                )
            values = {c: (cells[i].strip() if i < len(cells) else "") for c, i in index.items()}
            rows.append(_Row(number, reader.line_num, values))
    if not rows:
        raise ValueError(f"{name}: the CSV has a header but no data rows")

    def where(row: _Row, column: str) -> str:
        return f"{name} row {row.number} (line {row.line}), column {column}"

    eyes: dict[str, dict] = {}
    for row in rows:
        for column in ("eye_id", "image"):
            if not row.values[column]:
                raise ValueError(f"{where(row, column)}: empty {column}")
        view = VIEWS.get(row.values["view"].lower())
        if view is None:
            raise ValueError(
                f"{where(row, 'view')}: unknown view {row.values['view']!r}; expected H or V "
                "(horizontal / vertical, any case)"
            )
        record = {
            "pre_va": parse_va(row.values["pre_va"], where=where(row, "pre_va")),
            "post_va": parse_va(row.values["post_va"], where=where(row, "post_va")),
        }
        if has_fold:
            fold = row.values["fold"]
            if not re.fullmatch(r"[+-]?\d+", fold):
                raise ValueError(f"{where(row, 'fold')}: fold {fold!r} is not an integer")
            record["fold"] = int(fold)
        path = Path(os.path.expanduser(row.values["image"]))
        path = path if path.is_absolute() else root / path
        eye_id = row.values["eye_id"]
        eye = eyes.setdefault(eye_id, {"first": row, **record})
        if view in eye:
            first = eye[view][0]
            raise ValueError(
                f"{where(row, 'view')}: eye {eye_id!r} has a second {view} view (the first is row {first.number}, "
                f"line {first.line}); each eye needs exactly one H and one V row"
            )
        for key, value in record.items():
            if abs(eye[key] - value) > 1e-9:
                first = eye["first"]
                raise ValueError(
                    f"{where(row, key)}: eye {eye_id!r} has {key} {row.values[key]!r} here but "
                    f"{first.values[key]!r} in row {first.number} (line {first.line}); an eye's H and V rows must agree"
                )
        eye[view] = (row, path)

    for eye_id, eye in eyes.items():
        for view, other in (("H", "V"), ("V", "H")):
            if view not in eye:
                row = eye[other][0]
                raise ValueError(
                    f"{name} row {row.number} (line {row.line}), column view: eye {eye_id!r} has only a {other} view; "
                    f"add its {view} row"
                )

    for eye in eyes.values():
        for view in ("H", "V"):
            row, path = eye[view]
            if not path.is_file():
                raise FileNotFoundError(f"{where(row, 'image')}: image {str(path)!r} not found")

    order = sorted(eyes)
    scans = {
        view: np.stack(
            [
                read_scan(path, image_shape=(height, width), crop=crop, where=where(row, "image"))
                for row, path in (eyes[eye_id][view] for eye_id in order)
            ]
        )
        for view in ("H", "V")
    }
    return EyeSet(
        horizontal=scans["H"],
        vertical=scans["V"],
        pre_va=np.asarray([eyes[e]["pre_va"] for e in order], np.float32),
        post_va=np.asarray([eyes[e]["post_va"] for e in order], np.float32),
        eye_ids=np.asarray(order),
        folds=np.asarray([eyes[e]["fold"] for e in order], np.int32) if has_fold else None,
        truth={},
        source=str(csv_path),
    )
