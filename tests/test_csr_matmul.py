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
    indptr = np.concatenate([[0], cuts, [stored]] if rows else [[0]]).astype(np.int32)
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


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 12),
    dense_rows=st.integers(1, 10),
    stored=st.integers(0, 40),
    padding=st.integers(0, 5),
    width=st.sampled_from([1, 3, 7, 8, 9, 16, 23, 64, 70]),
    unit=st.booleans(),
    dtype=st.sampled_from([np.float32, jnp.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_every_path_matches_the_dense_matrix(rows, dense_rows, stored, padding, width, unit, dtype, seed):
    """Edge sizes (0 rows, 0 stored entries, width 1, odd widths), float32 and bfloat16."""
    rng = np.random.default_rng(seed)
    indptr, indices, values = random_csr(rng, rows, dense_rows, stored, padding)
    values = None if unit else values.astype(dtype)
    dense = rng.standard_normal((dense_rows, width)).astype(dtype)
    expected = dense_product(indptr, indices, None if unit else values.astype(np.float64), dense.astype(np.float64))
    impls = ["reference", "xla", "auto"] + (["native"] if native_available() and dtype == np.float32 else [])
    tol = 1e-5 if dtype == np.float32 else 5e-2
    for impl in impls:
        out = jitted(impl)(indptr, indices, values, dense)
        assert out.shape == (rows, width) and out.dtype == dense.dtype
        np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=tol, atol=tol, err_msg=impl)


@pytest.mark.parametrize(
    "indptr, message",
    [
        ([0, 2, 9], "points past the 3 stored entries"),  # used to crash the process on the XLA path
        ([1, 2, 3], "must start at 0"),
        ([0, 2, 1, 3], "non-decreasing, but indptr\\[2\\]=1 < indptr\\[1\\]=2"),
    ],
)
def test_broken_pointers_give_the_same_error_on_every_path(indptr, message):
    impls = ["reference", "xla", "auto"] + (["native"] if native_available() else [])
    for impl in impls:
        with pytest.raises(ValueError, match=message):
            csr_matmul(np.array(indptr), np.array([0, 1, 2]), None, np.ones((3, 4), np.float32), impl=impl)


def test_traced_broken_pointers_never_read_out_of_bounds_on_the_xla_path():
    """Under jit the pointers are unknown at trace time; the XLA path clamps them (no crash)."""
    run = jax.jit(lambda p: csr_matmul(p, jnp.array([0, 1, 2]), None, jnp.ones((3, 4), jnp.float32), impl="xla"))
    out = np.asarray(run(jnp.array([0, 2, 9])))
    np.testing.assert_array_equal(out, [[2.0] * 4, [1.0] * 4])  # read as [0, 2, 3]


def test_nan_stays_in_its_row_on_every_path():
    indptr, indices = np.array([0, 1, 2, 3]), np.array([0, 1, 2])
    dense = np.ones((3, 2), np.float32)
    dense[1, 0] = np.nan
    impls = ["reference", "xla"] + (["native"] if native_available() else [])
    for impl in impls:
        out = np.asarray(csr_matmul(indptr, indices, None, dense, impl=impl))
        np.testing.assert_array_equal(np.isnan(out), [[False, False], [True, False], [False, False]], err_msg=impl)


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


def test_bf16_products_accumulate_in_float32_and_round_once():
    """The XLA path multiplies bf16 inputs in float32 (the sparse product has no bf16 lowering) and
    rounds the row sums once: each output is the bf16 rounding of the exact sum of the bf16 inputs."""
    rng = np.random.default_rng(6)
    indptr, indices, values = random_csr(rng, 64, 32, 900, out_of_range=False)
    values = values.astype(jnp.bfloat16)
    dense = rng.standard_normal((32, 24)).astype(jnp.bfloat16)
    out = csr_matmul(indptr, indices, values, dense, impl="xla")
    exact = dense_product(indptr, indices, np.asarray(values, np.float64), np.asarray(dense, np.float64))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(exact.astype(np.float32)).astype(jnp.bfloat16))
    jaxpr = jax.make_jaxpr(lambda *a: csr_matmul(*a, impl="xla"))(indptr, indices, values, dense).jaxpr

    def products(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "bcsr_dot_general":
                yield eqn
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    yield from products(inner)

    (product,) = products(jaxpr)
    assert [v.aval.dtype for v in product.outvars] == [jnp.float32]


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
    with pytest.raises(Exception, match="non-decreasing"):  # traced: the kernel's own run-time check
        jax.block_until_ready(
            jax.jit(functools.partial(csr_matmul, impl="native"))(
                np.array([0, 2, 1, 2], np.int32),
                np.zeros(2, np.int32),
                None,
                np.ones((1, 2), np.float32),
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


def test_loader_falls_back_with_one_warning_when_the_cache_is_unusable(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_reasons", {})
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FRUGAL_NATIVE_CACHE", str(blocker / "cache"))  # under a file: cannot be made
    with pytest.warns(RuntimeWarning, match="using the XLA path") as caught:
        assert native._build("csr_matmul") is None
    assert len(caught) == 1 and "cache failed" in native._reasons["csr_matmul"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by anyone: never trusted
    monkeypatch.setenv("FRUGAL_NATIVE_CACHE", str(shared))
    with pytest.warns(RuntimeWarning, match="writable by group or others"):
        assert native._build("csr_matmul") is None


@needs_native
def test_loader_rebuilds_a_library_that_does_not_match_its_digest(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_reasons", {})
    monkeypatch.setenv("FRUGAL_NATIVE_CACHE", str(tmp_path))
    assert native._build("csr_matmul") is not None
    (library,) = tmp_path.glob("libcsr_matmul-*.so")
    recorded = native._digest_path(library).read_text().strip()
    assert recorded == native._sha256(library)
    library.write_bytes(library.read_bytes() + b"tampered")
    assert native._verified(library) == f"{library.name} does not match its build-time digest"
    compiled = []
    real_compile = native._compile
    monkeypatch.setattr(native, "_compile", lambda *a: compiled.append(a) or real_compile(*a))
    assert native._build("csr_matmul") is not None
    assert len(compiled) == 1 and native._verified(library) is None
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temp files left


def test_compiler_version_is_part_of_the_cache_key(monkeypatch):
    monkeypatch.setattr(native, "compiler_version", lambda compiler: "g++ 12.2.0")
    first = native._library_path("csr_matmul", b"source", "/usr/bin/g++", ("-O3",))
    monkeypatch.setattr(native, "compiler_version", lambda compiler: "g++ 13.1.0")
    assert native._library_path("csr_matmul", b"source", "/usr/bin/g++", ("-O3",)) != first
