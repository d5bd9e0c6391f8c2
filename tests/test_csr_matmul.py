"""CSR x dense product: the native CPU kernel and the XLA path against the plain-jnp reference,
gradients, lowering per platform, bad input, and the build-on-first-use loader."""

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import export

from frugal.jaxlib_ext import native
from frugal.jaxlib_ext.csr_matmul import csr_matmul, csr_matmul_reference, native_available

needs_native = pytest.mark.skipif(not native_available(), reason=f"native kernel: {native.status('csr_matmul')}")


def random_csr(rng, rows, dense_rows, stored, padding=0, out_of_range=True):
    """Row pointers over `stored` entries plus `padding` unused ones; some column ids out of range."""
    cuts = np.sort(rng.integers(0, stored + 1, rows - 1)) if rows > 1 else np.zeros(0, np.int64)
    indptr = np.concatenate([[0], cuts, [stored]]).astype(np.int32)
    low, high = (-2, dense_rows + 2) if out_of_range else (0, dense_rows)
    indices = rng.integers(low, high, stored + padding).astype(np.int32)
    values = rng.standard_normal(stored + padding).astype(np.float32)
    return indptr, indices, values


def dense_product(indptr, indices, values, dense):
    """Independent check: the CSR written out as a dense matrix (numpy, float64)."""
    rows, dense_rows = len(indptr) - 1, dense.shape[0]
    matrix = np.zeros((rows, dense_rows))
    for r in range(rows):
        for e in range(indptr[r], indptr[r + 1]):
            if 0 <= indices[e] < dense_rows:
                matrix[r, indices[e]] += 1.0 if values is None else values[e]
    return matrix @ dense.astype(np.float64)


@functools.cache
def jitted(impl):
    return jax.jit(functools.partial(csr_matmul, impl=impl))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 12),
    dense_rows=st.integers(1, 10),
    stored=st.integers(0, 40),
    padding=st.integers(0, 5),
    width=st.sampled_from([1, 3, 7, 8, 9, 16, 23, 64, 70]),
    unit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_path_matches_the_dense_matrix(rows, dense_rows, stored, padding, width, unit, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, values = random_csr(rng, rows, dense_rows, stored, padding)
    values = None if unit else values
    dense = rng.standard_normal((dense_rows, width)).astype(np.float32)
    expected = dense_product(indptr, indices, values, dense)
    impls = ["reference", "xla", "auto"] + (["native"] if native_available() else [])
    for impl in impls:
        out = jitted(impl)(indptr, indices, values, dense)
        assert out.shape == (rows, width)
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5, err_msg=impl)


@needs_native
def test_native_kernel_splits_a_large_product_over_threads_exactly():
    # Large enough for several row chunks (work >> the per-chunk minimum), skewed row lengths.
    rng = np.random.default_rng(0)
    rows, dense_rows, width = 3000, 2500, 16
    lengths = np.minimum(rng.zipf(1.8, rows), 400)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    indices = rng.integers(0, dense_rows, indptr[-1]).astype(np.int32)
    values = rng.standard_normal(indptr[-1]).astype(np.float32)
    dense = rng.standard_normal((dense_rows, width)).astype(np.float32)
    for vals in (values, None):
        native_out = jitted("native")(indptr, indices, vals, dense)
        reference = csr_matmul_reference(indptr, indices, vals, dense)
        np.testing.assert_allclose(np.asarray(native_out), np.asarray(reference), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", ["auto", "xla"])
def test_gradients_match_the_reference(impl):
    rng = np.random.default_rng(1)
    indptr, indices, values = random_csr(rng, 9, 7, 30, padding=3)
    dense = rng.standard_normal((7, 5)).astype(np.float32)
    weights = jnp.asarray(rng.standard_normal((9, 5)).astype(np.float32))

    def loss(values, dense, impl):
        return jnp.sum(jnp.tanh(csr_matmul(indptr, indices, values, dense, impl=impl)) * weights)

    got = jax.grad(loss, argnums=(0, 1))(values, dense, impl)
    want = jax.grad(loss, argnums=(0, 1))(values, dense, "reference")
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    # Entries that are padding or point out of range get exactly zero gradient.
    rows_of = np.searchsorted(indptr, np.arange(len(indices)), side="right") - 1
    unused = (rows_of >= 9) | (indices < 0) | (indices >= 7)
    assert np.all(np.asarray(got[0])[unused] == 0)
    unit_grad = jax.grad(lambda d: jnp.sum(csr_matmul(indptr, indices, None, d, impl=impl) * weights))(dense)
    unit_ref = jax.grad(lambda d: jnp.sum(csr_matmul_reference(indptr, indices, None, d) * weights))(dense)
    np.testing.assert_allclose(np.asarray(unit_grad), np.asarray(unit_ref), rtol=1e-5, atol=1e-5)


def test_vmap_over_dense_inputs():
    rng = np.random.default_rng(2)
    indptr, indices, values = random_csr(rng, 6, 5, 14)
    batch = rng.standard_normal((3, 5, 4)).astype(np.float32)
    out = jax.vmap(lambda d: csr_matmul(indptr, indices, values, d))(batch)
    for i in range(3):
        np.testing.assert_allclose(
            np.asarray(out[i]), dense_product(indptr, indices, values, batch[i]), rtol=1e-5, atol=1e-5
        )


def test_other_dtypes_take_the_xla_path():
    rng = np.random.default_rng(3)
    indptr, indices, values = random_csr(rng, 5, 4, 10, out_of_range=False)
    dense = rng.standard_normal((4, 3)).astype(np.float32)
    out = csr_matmul(indptr, indices, values.astype(jnp.bfloat16), dense.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float32), dense_product(indptr, indices, values, dense), rtol=5e-2, atol=5e-2
    )


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_auto_lowers_to_the_xla_path_off_cpu(platform):
    rng = np.random.default_rng(4)
    indptr, indices, values = random_csr(rng, 8, 8, 20, out_of_range=False)
    dense = np.zeros((8, 16), np.float32)
    exported = export.export(jax.jit(csr_matmul), platforms=[platform])(indptr, indices, values, dense)
    assert "frugal_csr_matmul" not in exported.mlir_module()


@needs_native
def test_auto_lowers_to_the_native_kernel_on_cpu():
    rng = np.random.default_rng(5)
    indptr, indices, values = random_csr(rng, 8, 8, 20, out_of_range=False)
    text = jax.jit(csr_matmul).lower(indptr, indices, values, np.zeros((8, 16), np.float32)).as_text()
    assert "frugal_csr_matmul" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(indptr=np.zeros(3, np.float32)), "indptr"),
        (dict(indices=np.zeros((2, 2), np.int32)), "indices"),
        (dict(values=np.zeros(5, np.float32)), "values"),
        (dict(dense=np.zeros(4, np.float32)), "dense"),
        (dict(impl="cusparse"), "impl"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    args = dict(
        indptr=np.array([0, 1, 2], np.int32),
        indices=np.array([0, 1], np.int32),
        values=np.ones(2, np.float32),
        dense=np.ones((2, 3), np.float32),
    )
    impl = kwargs.pop("impl", "auto")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        csr_matmul(**args, impl=impl)


@needs_native
def test_native_rejects_unsupported_dtypes_and_broken_pointers():
    with pytest.raises(ValueError, match="float32"):
        csr_matmul(np.array([0, 1]), np.array([0]), None, np.ones((1, 2), jnp.bfloat16), impl="native")
    with pytest.raises(Exception, match="non-decreasing"):
        jax.block_until_ready(
            csr_matmul(
                np.array([0, 2, 1, 2], np.int32),
                np.zeros(2, np.int32),
                None,
                np.ones((1, 2), np.float32),
                impl="native",
            )
        )


def test_loader_reports_why_the_kernel_is_off(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_reasons", {})  # the process-wide state stays as it was
    monkeypatch.setenv("FRUGAL_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("FRUGAL_NATIVE", "0")
    assert native._build("csr_matmul") is None
    assert "FRUGAL_NATIVE=0" in native._reasons["csr_matmul"]
    monkeypatch.setenv("FRUGAL_NATIVE", "1")
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    assert native._build("csr_matmul") is None
    assert "no C++ compiler" in native._reasons["csr_matmul"]
    assert not list(tmp_path.iterdir())


def test_loader_warns_and_falls_back_when_compiling_fails(monkeypatch, tmp_path):
    if native.find_compiler() is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setattr(native, "_reasons", {})
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    (source_dir / "broken.cc").write_text("this is not C++\n")
    monkeypatch.setattr(native, "_SOURCE_DIR", source_dir)
    monkeypatch.setenv("FRUGAL_NATIVE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="could not build the native kernel 'broken'"):
        assert native._build("broken") is None
    # Nothing half-written is left in the cache.
    assert not any(p.suffix == ".so" for p in (tmp_path / "cache").iterdir())


@needs_native
def test_loader_reuses_a_built_library_without_compiling(monkeypatch):
    def no_compiling(*args):
        raise AssertionError("the cached library should have been reused")

    monkeypatch.setattr(native, "_compile", no_compiling)
    monkeypatch.setattr(native, "_reasons", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native._build("csr_matmul") is not None
    assert os.path.exists(native._reasons["csr_matmul"].rsplit(" at ", 1)[1])
