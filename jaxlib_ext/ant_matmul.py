"""ANT matmul: packed 4-bit codes of any ANT type, decoded inside the kernel, times scales.

ANT stores each tensor as 4-bit codes of its chosen type (int, PoT, float or flint) plus a scale.
Every value of those types is ``integer * 2**shift`` with a small integer, so a processing element
needs only an integer multiply and a shift. This module computes

    out[m, n] = a_scale[m] * w_scale[n] * sum_k A[m, k] * W[k, n]

where ``A`` and ``W`` are the integer-scale values of the codes (see ``frugal.transforms.quant.numerics``
for the layouts; this module re-implements the 4-bit decoders because ``jaxlib_ext`` imports
nothing from the rest of the repo).

Layout: ``a_packed`` is ``(M, ceil(K/2))`` uint8, packed along K (code ``2j`` in the low nibble,
``2j+1`` in the high nibble); ``w_packed`` is ``(ceil(K/2), N)`` uint8, packed along K the same
way. Because both operands pair the same K indices, the kernel never interleaves nibbles: it
computes ``low(A) @ low(W) + high(A) @ high(W)``.

Three pieces, side by side:
* :func:`ant_matmul_reference`: plain jax.numpy (unpack, decode to float32, matmul at HIGHEST
  precision). Obviously correct, used by tests and as the CPU path.
* :func:`_ant_matmul_pallas`: the Pallas kernel. Codes are decoded in registers as
  ``integer << shift``; each K block is multiplied exactly (int8 operands with int32
  accumulation when the values allow it, else bfloat16 operands, exact for 4-bit types, with
  float32 accumulation) and K blocks are summed in float32, scales applied once. Two schedules:
  ``loop`` (GPU and CPU: one program per output tile, the K reduction a loop inside the kernel,
  because Pallas-Triton runs every grid axis in parallel) and ``grid`` (TPU: K as the last grid
  axis, marked "arbitrary" so Mosaic runs it in order, accumulating into the resident tile).
* :func:`ant_matmul`: the public entry; validates, pads odd shapes to the block grid and picks an
  implementation, tiles and schedule for the target. Codes are integers, so there is no gradient;
  use the fake-quantizer for QAT. ``frugal.transforms.quant.apply_plan(..., impl="pallas")`` runs a
  quantized model's dense layers through it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

_KINDS = ("int", "pot", "float", "flint")
CODE_BITS = 4


@dataclasses.dataclass(frozen=True)
class CodeFormat:
    """A 4-bit ANT code format: kind, signedness and (float only) exponent bits.

    ``frugal.transforms.quant.NumericType`` objects with ``bits == 4`` are accepted wherever a
    CodeFormat is, and converted with :meth:`of`.
    """

    kind: str
    signed: bool
    exponent_bits: int | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if not isinstance(self.signed, (bool, np.bool_)):
            raise TypeError(f"signed must be a bool, got {self.signed!r}")
        object.__setattr__(self, "signed", bool(self.signed))
        value_bits = CODE_BITS - 1 if self.signed else CODE_BITS
        if self.kind == "float":
            eb = min(3, value_bits) if self.exponent_bits is None else self.exponent_bits
            if not (isinstance(eb, (int, np.integer)) and 1 <= eb <= value_bits):
                raise ValueError(f"exponent_bits must be in 1..{value_bits}, got {self.exponent_bits!r}")
            object.__setattr__(self, "exponent_bits", int(eb))
        elif self.exponent_bits is not None:
            raise ValueError(f"exponent_bits applies only to kind 'float', got {self.exponent_bits!r}")

    @classmethod
    def of(cls, spec: Any, name: str = "format") -> CodeFormat:
        if isinstance(spec, CodeFormat):
            return spec
        if all(hasattr(spec, attr) for attr in ("kind", "bits", "signed")):
            if spec.bits != CODE_BITS:
                raise ValueError(f"{name} must be a {CODE_BITS}-bit type, got {spec.bits} bits")
            return cls(spec.kind, spec.signed, getattr(spec, "exponent_bits", None))
        raise TypeError(f"{name} must be a CodeFormat or a 4-bit NumericType, got {spec!r}")

    @property
    def value_bits(self) -> int:
        return CODE_BITS - 1 if self.signed else CODE_BITS

    @property
    def max_abs_value(self) -> int:
        """Largest |value| at the integer scale, for overflow and operand-width decisions."""
        codes = np.arange(1 << CODE_BITS)
        integer, shift = _decode_parts(codes, self, np)
        return int(np.max(np.abs(integer) << shift))


def _decode_parts(codes, fmt: CodeFormat, xp=jnp):
    """4-bit codes (int32) -> (signed integer, shift), value = integer << shift. Integer ops only."""
    if fmt.kind == "int":
        if fmt.signed:
            return xp.where(codes >= 8, codes - 16, codes), xp.zeros_like(codes)
        return codes, xp.zeros_like(codes)
    b = fmt.value_bits
    mag = codes & ((1 << b) - 1)
    zero = xp.zeros_like(mag)
    if fmt.kind == "pot":
        integer, shift = xp.where(mag > 0, 1, 0) + zero, xp.maximum(mag - 1, 0)
    elif fmt.kind == "float":
        m_bits = b - fmt.exponent_bits
        exponent, mantissa = mag >> m_bits, mag & ((1 << m_bits) - 1)
        integer = xp.where(exponent > 0, mantissa + (1 << m_bits), mantissa)
        shift = xp.where(exponent > 0, exponent - 1, 0)
    else:  # flint: leading-one detection gives the exponent; b <= 4, so unroll the run lengths
        integer, shift = mag, zero  # MSB 0: a plain integer
        # A code with a run of r leading ones matches every shorter run too; going from short to
        # long lets the longest run win.
        for ones in range(1, b + 1):
            is_run = (mag >> (b - ones)) == (1 << ones) - 1
            if ones == b:
                run_integer, run_shift = 1, 2 * b - 2
            else:
                m_bits = b - 1 - ones
                run_integer = (1 << m_bits) + (mag & ((1 << m_bits) - 1))
                run_shift = 2 * ones - 1
            integer = xp.where(is_run, run_integer, integer)
            shift = xp.where(is_run, run_shift, shift)
    if fmt.signed:
        integer = xp.where((codes >> b) & 1, -integer, integer)
    return integer, shift


def _decode_values(codes, fmt: CodeFormat) -> jax.Array:
    """4-bit codes -> float32 values at the integer scale (for the reference)."""
    integer, shift = _decode_parts(codes.astype(jnp.int32), fmt)
    return integer.astype(jnp.float32) * (jnp.ones_like(shift) << shift).astype(jnp.float32)


def _unpack(packed: jax.Array, axis: int) -> jax.Array:
    """uint8 -> int32 codes, twice as long along `axis` (low nibble first)."""
    packed = jnp.moveaxis(packed.astype(jnp.int32), axis, -1)
    codes = jnp.stack([packed & 0xF, packed >> 4], axis=-1)
    return jnp.moveaxis(codes.reshape(packed.shape[:-1] + (2 * packed.shape[-1],)), -1, axis)


def _scales(a_scale, w_scale, m: int, n: int):
    a_scale = jnp.asarray(a_scale, jnp.float32)
    w_scale = jnp.asarray(w_scale, jnp.float32)
    if a_scale.size == 1:
        a_scale = jnp.broadcast_to(a_scale.reshape(()), (m,))
    if w_scale.size == 1:
        w_scale = jnp.broadcast_to(w_scale.reshape(()), (n,))
    if a_scale.shape != (m,):
        raise ValueError(f"a_scale must be a scalar or have shape ({m},) (one per row), got {a_scale.shape}")
    if w_scale.shape != (n,):
        raise ValueError(f"w_scale must be a scalar or have shape ({n},) (one per column), got {w_scale.shape}")
    return a_scale, w_scale


def ant_matmul_reference(a_packed, a_scale, w_packed, w_scale, *, a_format, w_format) -> jax.Array:
    """Plain-jnp ANT matmul: unpack, decode to float32, multiply at HIGHEST precision, scale."""
    a_format, w_format = CodeFormat.of(a_format, "a_format"), CodeFormat.of(w_format, "w_format")
    a_scale, w_scale = _scales(a_scale, w_scale, a_packed.shape[0], w_packed.shape[1])
    a = _decode_values(_unpack(a_packed, axis=1), a_format)
    w = _decode_values(_unpack(w_packed, axis=0), w_format)
    out = jnp.matmul(a, w, precision=jax.lax.Precision.HIGHEST)
    return out * a_scale[:, None] * w_scale[None, :]


def _operand_plan(a_format: CodeFormat, w_format: CodeFormat, block_k: int, accumulate: str):
    """(operand dtype, accumulator dtype) for one K block, chosen so the block product is exact.

    Only operand types every backend's matrix unit takes: int8 x int8 -> int32 (Triton's dot, the
    TPU MXU, XLA:CPU) when every value fits int8 and a block cannot overflow int32, else bfloat16 x
    bfloat16 -> float32 (exact: every 4-bit value has at most 4 significant bits and |shift| <= 14).
    int32 operands are never used: Triton's dot does not take them.
    """
    a_max, w_max = a_format.max_abs_value, w_format.max_abs_value
    fits_int8 = max(a_max, w_max) <= 127
    int32_safe = a_max * w_max * block_k < 2**31
    if accumulate == "auto":
        accumulate = "int32" if int32_safe and fits_int8 else "float32"
    if accumulate == "int32":
        if not fits_int8:
            raise ValueError(
                f"accumulate='int32' needs int8 operands, but the formats reach |value| {max(a_max, w_max)} > 127 "
                f"({a_format.kind}/{w_format.kind}); use accumulate='float32' (exact bfloat16 products)"
            )
        if not int32_safe:
            raise ValueError(
                f"accumulate='int32' could overflow: max|a|*max|w|*block_k = {a_max}*{w_max}*{block_k} "
                ">= 2**31; use accumulate='float32' or a smaller block_k"
            )
        return jnp.int8, jnp.int32
    if accumulate == "float32":
        return jnp.bfloat16, jnp.float32
    raise ValueError(f"accumulate must be 'auto', 'int32' or 'float32', got {accumulate!r}")


def _block_product(a, w, *, a_format, w_format, operand, acc):
    """low(A) @ low(W) + high(A) @ high(W) for one K block of packed codes, exact, as float32."""

    def decode(codes, fmt):
        integer, shift = _decode_parts(codes, fmt)
        if operand == jnp.bfloat16:
            return (integer.astype(jnp.float32) * (jnp.ones_like(shift) << shift).astype(jnp.float32)).astype(operand)
        return (integer << shift).astype(operand)

    a = a.astype(jnp.int32)
    w = w.astype(jnp.int32)
    partial = jnp.dot(decode(a & 0xF, a_format), decode(w & 0xF, w_format), preferred_element_type=acc)
    partial += jnp.dot(decode(a >> 4, a_format), decode(w >> 4, w_format), preferred_element_type=acc)
    return partial.astype(jnp.float32)


def _loop_kernel(a_ref, w_ref, sa_ref, sw_ref, o_ref, *, bkp, num_k, **formats):
    """One output tile per program; the K reduction is a loop inside the kernel (GPU schedule).

    Pallas-Triton launches every grid axis as parallel CUDA blocks, so an output tile must be
    written by exactly one program: the accumulator lives in registers and is stored once.
    """

    def body(kb, total):
        start = pl.multiple_of(kb * bkp, bkp)
        a = a_ref[:, pl.ds(start, bkp)]
        w = w_ref[pl.ds(start, bkp), :]
        return total + _block_product(a, w, **formats)

    total = jax.lax.fori_loop(0, num_k, body, jnp.zeros(o_ref.shape, jnp.float32))
    o_ref[...] = total * sa_ref[...] * sw_ref[...]


def _grid_kernel(a_ref, w_ref, sa_ref, sw_ref, o_ref, **formats):
    """K as the last grid axis, accumulated into the resident output tile (TPU schedule).

    Correct only where that axis runs in order: Mosaic TPU with dimension_semantics "arbitrary"
    on it (and interpret mode). Never used for GPU.
    """
    contribution = _block_product(a_ref[...], w_ref[...], **formats) * sa_ref[...] * sw_ref[...]

    @pl.when(pl.program_id(2) == 0)
    def _first():
        o_ref[...] = contribution

    @pl.when(pl.program_id(2) > 0)
    def _rest():
        o_ref[...] += contribution


SCHEDULES = ("loop", "grid")


def _ant_matmul_pallas(
    a_packed,
    a_scale,
    w_packed,
    w_scale,
    *,
    a_format,
    w_format,
    block_m,
    block_n,
    block_k,
    accumulate,
    schedule,
    interpret,
    compiler_params,
):
    """pallas_call on shapes already padded to the block grid (block_k counts K values)."""
    m, kp = a_packed.shape
    n = w_packed.shape[1]
    bkp = block_k // 2
    operand, acc = _operand_plan(a_format, w_format, block_k, accumulate)
    formats = dict(a_format=a_format, w_format=w_format, operand=operand, acc=acc)
    scales = (a_scale.reshape(m, 1), w_scale.reshape(1, n))
    out_shape = jax.ShapeDtypeStruct((m, n), jnp.float32)
    if schedule == "loop":
        return pl.pallas_call(
            functools.partial(_loop_kernel, bkp=bkp, num_k=kp // bkp, **formats),
            out_shape=out_shape,
            grid=(m // block_m, n // block_n),
            in_specs=[
                pl.BlockSpec((block_m, kp), lambda i, j: (i, 0)),
                pl.BlockSpec((kp, block_n), lambda i, j: (0, j)),
                pl.BlockSpec((block_m, 1), lambda i, j: (i, 0)),
                pl.BlockSpec((1, block_n), lambda i, j: (0, j)),
            ],
            out_specs=pl.BlockSpec((block_m, block_n), lambda i, j: (i, j)),
            interpret=interpret,
            compiler_params=compiler_params,
        )(a_packed, w_packed, *scales)
    return pl.pallas_call(
        functools.partial(_grid_kernel, **formats),
        out_shape=out_shape,
        grid=(m // block_m, n // block_n, kp // bkp),
        in_specs=[
            pl.BlockSpec((block_m, bkp), lambda i, j, k: (i, k)),
            pl.BlockSpec((bkp, block_n), lambda i, j, k: (k, j)),
            pl.BlockSpec((block_m, 1), lambda i, j, k: (i, 0)),
            pl.BlockSpec((1, block_n), lambda i, j, k: (0, j)),
        ],
        out_specs=pl.BlockSpec((block_m, block_n), lambda i, j, k: (i, j)),
        interpret=interpret,
        compiler_params=compiler_params,
    )(a_packed, w_packed, *scales)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _block(size: int, lowest: int, highest: int) -> int:
    """A power-of-two tile (Triton needs them) between `lowest` and `highest` covering `size`."""
    return min(highest, max(lowest, 1 << max(size - 1, 0).bit_length()))


TARGETS = ("gpu", "tpu", "cpu")

# Per target: (lowest, highest) default tile per axis (block_k counts K values), the multiple a
# user's tile must be, and the schedule. GPU tiles stay small: every tile decodes two int32
# temporaries of (block_m, block_k/2) and (block_k/2, block_n) in registers, and 4 warps hold
# 128 threads' registers (64 x 128 x 64 keeps them near 32 int32 values per thread per operand).
# TPU tiles follow Mosaic's (32, 128) uint8 tiling; K runs as an "arbitrary" grid axis.
_TILES = {
    "gpu": {"m": (16, 64, 16), "n": (32, 128, 16), "k": (64, 128, 32), "schedule": "loop"},
    "tpu": {"m": (32, 256, 32), "n": (128, 256, 128), "k": (256, 1024, 256), "schedule": "grid"},
    "cpu": {"m": (8, 64, 8), "n": (8, 128, 8), "k": (16, 256, 16), "schedule": "loop"},
}


def _target_of(backend: str) -> str:
    return "gpu" if backend in ("gpu", "cuda", "rocm") else ("tpu" if backend == "tpu" else "cpu")


def default_compiler_params(backend: str | None = None):
    """Compiler parameters for the kernel on `backend` (default: the current one).

    GPU: the Triton lowering (the default Mosaic GPU lowering refuses the per-row scale operand,
    whose copies need 16-byte strides), 4 warps. TPU: the K grid axis "arbitrary" (sequential),
    the output-tile axes "parallel". CPU (interpret mode) needs none.
    """
    target = _target_of(backend or jax.default_backend())
    if target == "gpu":
        from jax.experimental.pallas import triton as pl_triton

        return pl_triton.CompilerParams(num_warps=4, num_stages=2)
    if target == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
    return None


def _check_block(value, name: str, multiple: int, target: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0 or value % multiple:
        raise ValueError(f"{name} must be a positive multiple of {multiple} on {target}, got {value!r}")
    if target == "gpu" and value & (value - 1):
        raise ValueError(f"{name} must be a power of two on gpu (Triton tiles), got {value}")
    return int(value)


def ant_matmul_call_name(a_format: CodeFormat, w_format: CodeFormat) -> str:
    """The name an `ant_matmul` call leaves in a jaxpr (a `jit` equation), for cost models:
    `frugal_ant_matmul__a{bits}{kind}{s|u}__w{bits}{kind}{s|u}` (e.g. `..._a4flintu__w4ints`)."""

    def tag(fmt):
        return f"{CODE_BITS}{fmt.kind}{'s' if fmt.signed else 'u'}"

    return f"frugal_ant_matmul__a{tag(a_format)}__w{tag(w_format)}"


def ant_matmul(
    a_packed,
    a_scale,
    w_packed,
    w_scale,
    *,
    a_format,
    w_format,
    impl: str = "auto",
    target: str | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    accumulate: str = "auto",
    schedule: str | None = None,
    interpret: bool | None = None,
    compiler_params: Any = "auto",
) -> jax.Array:
    """``(decode(a) * a_scale) @ (decode(w) * w_scale)`` from packed 4-bit ANT codes.

    Args:
      a_packed: uint8 ``(..., ceil(K/2))``, activations' codes packed along K (leading dims are
        flattened into rows).
      a_scale: scalar (per tensor) or one per row ``(M,)`` (rows after flattening).
      w_packed: uint8 ``(ceil(K/2), N)``, weights' codes packed along K.
      w_scale: scalar or one per output column ``(N,)``.
      a_format, w_format: :class:`CodeFormat` or 4-bit ``NumericType`` of each operand.
      impl: ``"reference"``, ``"pallas"``, or ``"auto"`` (Pallas on GPU/TPU, reference on CPU).
      target: the hardware the kernel is built for, ``"gpu"``, ``"tpu"`` or ``"cpu"`` (default:
        the current backend's). It picks tiles, operand types, the schedule and compiler
        parameters; pass it to lower for another platform (``jax.export``).
      block_m, block_n, block_k: Pallas tile sizes (block_k counts K values, even). Defaults per
        target; operands are zero-padded to the grid (code 0 is zero in every type).
      accumulate: ``"int32"`` (int8 operands, exact per K block), ``"float32"`` (bfloat16 operands,
        exact products) or ``"auto"`` (int32 when values fit int8 and cannot overflow).
      schedule: ``"loop"`` (grid over output tiles, K reduced in a loop inside the kernel: the only
        schedule for GPU) or ``"grid"`` (K as a sequential grid axis: TPU). Default per target.
      interpret: run the Pallas kernel in interpret mode; defaults to True on CPU.
      compiler_params: passed to ``pallas_call``; ``"auto"`` uses :func:`default_compiler_params`.

    Returns float32 ``(..., N)``. The call appears in a jaxpr as a jit named by
    :func:`ant_matmul_call_name`, so cost models can find it.
    """
    a_format, w_format = CodeFormat.of(a_format, "a_format"), CodeFormat.of(w_format, "w_format")
    a_packed, w_packed = jnp.asarray(a_packed), jnp.asarray(w_packed)
    for name, arr in (("a_packed", a_packed), ("w_packed", w_packed)):
        if arr.dtype != jnp.uint8:
            raise TypeError(f"{name} must be uint8 (two 4-bit codes per byte), got {arr.dtype}")
    if a_packed.ndim < 1 or w_packed.ndim != 2:
        raise ValueError(
            f"a_packed must be (..., K/2) and w_packed (K/2, N); got shapes {a_packed.shape}, {w_packed.shape}"
        )
    if a_packed.shape[-1] != w_packed.shape[0]:
        raise ValueError(
            f"packed K must match: a_packed has {a_packed.shape[-1]} bytes per row, w_packed has "
            f"{w_packed.shape[0]} rows"
        )
    if impl not in ("auto", "reference", "pallas"):
        raise ValueError(f"impl must be 'auto', 'reference' or 'pallas', got {impl!r}")
    backend = jax.default_backend()
    target = _target_of(backend) if target is None else target
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} or None (the current backend), got {target!r}")
    tiles = _TILES[target]
    schedule = tiles["schedule"] if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES} or None, got {schedule!r}")
    if target == "gpu" and schedule != "loop":
        raise ValueError("schedule='grid' accumulates across grid steps, which race on GPU; use 'loop'")
    if a_packed.shape[-1] == 0:
        raise ValueError("a_packed and w_packed have K = 0 (no packed bytes); the product needs K >= 1")
    lead = a_packed.shape[:-1]
    a2 = a_packed.reshape(-1, a_packed.shape[-1])
    m, kp, n = a2.shape[0], a2.shape[1], w_packed.shape[1]
    sa, sw = _scales(a_scale, w_scale, m, n)
    # Same checks on every implementation (the reference accumulates in float32 whatever is asked,
    # but a request the kernel would refuse is refused here too); the overflow bound uses the tile.
    _operand_plan(a_format, w_format, 2, accumulate)
    if impl == "auto":
        impl = "reference" if backend == "cpu" else "pallas"
    if m == 0 or n == 0:  # an empty product: the same (empty) answer on every implementation
        return jnp.zeros(lead + (n,), jnp.float32)
    if impl == "pallas":
        lo, hi, mult = tiles["m"]
        block_m = _check_block(block_m, "block_m", mult, target) if block_m is not None else _block(m, lo, hi)
        lo, hi, mult = tiles["n"]
        block_n = _check_block(block_n, "block_n", mult, target) if block_n is not None else _block(n, lo, hi)
        lo, hi, mult = tiles["k"]
        block_k = _check_block(block_k, "block_k", mult, target) if block_k is not None else _block(2 * kp, lo, hi)
        _operand_plan(a_format, w_format, block_k, accumulate)  # validate before tracing
        if interpret is None:
            interpret = backend == "cpu"
        if isinstance(compiler_params, str):
            if compiler_params != "auto":
                raise ValueError(f"compiler_params must be 'auto', None or a CompilerParams, got {compiler_params!r}")
            compiler_params = None if interpret else default_compiler_params(target)
    static = _Static(
        a_format, w_format, impl, block_m, block_n, block_k, accumulate, schedule, interpret, compiler_params
    )
    out = _named_call(static)(a2, sa, w_packed, sw)
    return out.reshape(lead + (n,))


@dataclasses.dataclass(frozen=True)
class _Static:
    a_format: CodeFormat
    w_format: CodeFormat
    impl: str
    block_m: int | None
    block_n: int | None
    block_k: int | None
    accumulate: str
    schedule: str
    interpret: bool | None
    compiler_params: Any


@functools.lru_cache(maxsize=256)
def _named_call(st: _Static):
    """One jitted function per static configuration, named by `ant_matmul_call_name` (inlined under an
    outer jit; compiled once per configuration when called eagerly)."""

    def run(a2, sa, w_packed, sw):
        if st.impl == "reference":
            return ant_matmul_reference(a2, sa, w_packed, sw, a_format=st.a_format, w_format=st.w_format)
        m, kp, n = a2.shape[0], a2.shape[1], w_packed.shape[1]
        mp, np_, kpp = _round_up(m, st.block_m), _round_up(n, st.block_n), _round_up(kp, st.block_k // 2)
        out = _ant_matmul_pallas(
            jnp.pad(a2, ((0, mp - m), (0, kpp - kp))),
            jnp.pad(sa, (0, mp - m)),
            jnp.pad(w_packed, ((0, kpp - kp), (0, np_ - n))),
            jnp.pad(sw, (0, np_ - n)),
            a_format=st.a_format,
            w_format=st.w_format,
            block_m=st.block_m,
            block_n=st.block_n,
            block_k=st.block_k,
            accumulate=st.accumulate,
            schedule=st.schedule,
            interpret=st.interpret,
            compiler_params=st.compiler_params,
        )
        return out[:m, :n]

    run.__name__ = run.__qualname__ = ant_matmul_call_name(st.a_format, st.w_format)
    return jax.jit(run)
