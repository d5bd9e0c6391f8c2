"""Quantization transforms: ANT adaptive numeric types (MICRO'22) and friends.

Number formats and their bit-level codecs live in :mod:`frugal.transforms.quant.numerics`, the
fake-quantizer with straight-through / LSQ-like gradients in :mod:`frugal.transforms.quant.quantizer`,
and per-tensor type selection in :mod:`frugal.transforms.quant.selection`. Beyond the ANT paper, the
OliVe outlier-victim pair types (``"olive"``, ``"olive-int"``) share the same interfaces.
"""

from frugal.transforms.quant.numerics import (
    ALL_KINDS,
    KINDS,
    OLIVE_KINDS,
    NumericType,
    as_numeric_type,
    decode,
    decode_parts,
    encode,
    pack_int4,
    unpack_int4,
    value_grid,
    victimize,
)
from frugal.transforms.quant.quantizer import (
    nearest_grid_index,
    normalized_grid,
    quantize,
    quantize_to_codes,
    round_to_grid,
)
from frugal.transforms.quant.selection import (
    DEFAULT_CANDIDATES,
    TypeChoice,
    alpha_ratios,
    mse_sweep,
    select_numeric_type,
)

__all__ = [
    "ALL_KINDS",
    "DEFAULT_CANDIDATES",
    "KINDS",
    "OLIVE_KINDS",
    "NumericType",
    "TypeChoice",
    "alpha_ratios",
    "as_numeric_type",
    "decode",
    "decode_parts",
    "encode",
    "mse_sweep",
    "nearest_grid_index",
    "normalized_grid",
    "pack_int4",
    "quantize",
    "quantize_to_codes",
    "round_to_grid",
    "select_numeric_type",
    "unpack_int4",
    "value_grid",
    "victimize",
]
