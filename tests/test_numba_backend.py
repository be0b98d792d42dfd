"""Tests specific to the numba backend's own kernels (the shared suite covers the contract).

The blocked GEMM is checked where blocking goes wrong: sizes of 1, primes, one more than a
multiple of every block size (MR = 6 rows, NR = 64/32 columns, KC = 1024), empty K, every
transpose form, both dtypes. The fused layer ops are checked against the base class's
composed defaults run on the same backend, and against the float64 reference.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import mlpaccel
from mlpaccel import activations as acts
from mlpaccel.backends import reference as ref
from mlpaccel.backends.base import Backend

pytestmark = pytest.mark.skipif(
    mlpaccel.backends.unavailable_reason("numba") is not None, reason="numba not installed")

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}  # norm-wise, per sqrt(K) (K-term sums)


@pytest.fixture(scope="module")
def nb():
    return mlpaccel.get_backend("numba")


def _gemm_case(nb, rng, m, k, n, ta, tb, dtype, out=False):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    expected = ref.matmul(a.astype(np.float64), b.astype(np.float64), ta, tb)
    dst = np.full((m, n), np.nan, dtype) if out else None
    c = nb.matmul(a, b, transpose_a=ta, transpose_b=tb, out=dst)
    assert c.shape == (m, n) and c.dtype == dtype
    if out:
        assert c is dst
    err = np.linalg.norm(c - expected)
    assert err <= RTOL[dtype] * np.sqrt(max(k, 1)) * max(np.linalg.norm(expected), 1e-300)


# MR = 6, NR = 64 (float32) / 32 (float64), KC = 1024: every size below is 1, a prime, or one
# past / short of a block boundary, and K = 1025 / 1100 spans two K blocks. Shapes under
# 2^20 multiply-adds run the serial twin, the larger ones the parallel kernel.
GEMM_SHAPES = [(1, 1, 1), (1, 300, 1), (7, 13, 5), (5, 2, 3), (6, 256, 64), (7, 257, 65),
               (13, 1025, 65), (97, 1100, 33), (131, 300, 67), (1, 37, 200), (200, 37, 1),
               (13, 1100, 300), (64, 256, 257)]  # NT with few rows: tasks pack their panels


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_blocked_gemm_edge_shapes(nb, rng, shape, ta, tb, dtype):
    _gemm_case(nb, rng, *shape, ta, tb, dtype, out=shape[0] % 2 == 1)


def test_gemm_empty_dimensions(nb):
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32)
    assert np.array_equal(nb.matmul(a, b), np.zeros((3, 4), np.float32))
    bias = np.arange(4, dtype=np.float32) - 1
    z, act = nb.linear_forward(a, b, bias, "relu")
    assert np.array_equal(z, np.broadcast_to(bias, (3, 4)))
    assert np.array_equal(act, np.maximum(z, 0))
    assert nb.matmul(np.zeros((0, 3)), np.zeros((3, 4))).shape == (0, 4)
    assert nb.matmul(np.zeros((2, 3)), np.zeros((3, 0))).shape == (2, 0)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m", [100, 1000, 5000])  # serial, parallel (>= 2^18 MACs) kernels
def test_narrow_output_kernel(nb, rng, m, ta, tb):
    # N = 10 <= NARROW_N: 12 x 16 tiles (gemm_narrow), a partial last row block, then the
    # fused epilogue
    _gemm_case(nb, rng, m, 33, 10, ta, tb, np.float64)
    x, W, b = rng.standard_normal((m, 33)), rng.standard_normal((33, 10)), rng.standard_normal(10)
    z, a = nb.linear_forward(x, W, b, "leaky_relu", alpha=0.3)
    np.testing.assert_allclose(z, x @ W + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a, np.where(z > 0, z, 0.3 * z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("ta", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("m", [64, 128, 256])
def test_narrow_mlp_output_layer_shapes(nb, rng, m, ta, dtype):
    """The 10-class layer at batch 64-256: forward (m x 256 x 10) and x^T delta (256 x m x 10)
    around the serial / parallel switch of gemm_narrow (2^18 multiply-adds)."""
    _gemm_case(nb, rng, m, 256, 10, False, False, dtype)
    _gemm_case(nb, rng, 256, m, 10, True, False, dtype)
    _gemm_case(nb, rng, m, 10, 256, False, True, dtype)  # delta W^T, K = 10 (< one vector)
    if ta:
        _gemm_case(nb, rng, 256, m, 10, True, True, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n,k,j0,pc,kc", [
    (256, 256, 0, 0, 256),  # whole L x L blocks only
    (257, 259, 192, 3, 250),  # offset rows and columns, k leftover (250 = 15 * 16 + 10)
    (70, 37, 64, 0, 37),  # partial panel (6 rows of op(B)^T), zero padded
    (100, 1100, 64, 550, 550),  # the second K block of a two-block product
    (33, 17, 32, 1, 16),  # one row: every column leftover
    (5, 3, 0, 0, 3),  # smaller than one block both ways
    (48, 40, 0, 8, 24),  # f64: 8 x 8 blocks fit, f32: 16 x 16 blocks partly
])
def test_pack_b_transposed_blocks(n, k, j0, pc, kc, dtype):
    """B^T panel packing (the transposition in L x L register blocks plus scalar edges):
    Bp[base + kk*NR + j] = B[j0 + j, pc + kk], zero padded past N, nothing written outside."""
    from mlpaccel.backends import _numba_kernels as K

    nr_full = K.NV * (16 if dtype == np.float32 else 8)
    rng = np.random.default_rng(n * 31 + k)
    B = rng.standard_normal((n, k)).astype(dtype)
    base = 3
    Bp = np.full(base + kc * nr_full + 5, np.nan, dtype)
    K._pack_b(B, True, Bp, base, j0, pc, kc, n, nr_full)
    nr = min(nr_full, n - j0)
    expected = np.zeros((kc, nr_full))
    expected[:, :nr] = B[j0:j0 + nr, pc:pc + kc].astype(np.float64).T
    assert np.array_equal(Bp[base:base + kc * nr_full].reshape(kc, nr_full), expected)
    assert np.isnan(Bp[:base]).all() and np.isnan(Bp[base + kc * nr_full:]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("m,k,n", [(64, 256, 256), (256, 256, 256), (64, 784, 256),
                                   (256, 784, 256), (300, 1001, 100), (64, 259, 784)])
def test_gemm_nt_mlp_shapes(nb, rng, m, k, n, dtype):
    """delta W^T (A B^T) at the MLP's shapes: B^T packed per task (small A) or up front
    (large A), with K and N both multiples of the transposition block and not."""
    _gemm_case(nb, rng, m, k, n, False, True, dtype, out=True)


def test_gemm_reads_non_contiguous_operands(nb, rng):
    big = rng.standard_normal((40, 50))
    a, b = big[::2, 1:30], big[:29, ::3]  # strided views
    np.testing.assert_allclose(nb.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)


def test_gemm_errors_are_typed(nb):
    with pytest.raises(ValueError, match="shapes"):
        nb.matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(TypeError, match="dtype"):
        nb.matmul(np.ones((2, 3), np.float32), np.ones((3, 2)))
    with pytest.raises(ValueError, match="out"):
        nb.matmul(np.ones((2, 3)), np.ones((3, 2)), out=np.empty((3, 2)))
    with pytest.raises(ValueError, match="bias"):
        nb.linear_forward(np.ones((2, 3)), np.ones((3, 2)), np.ones(3), "relu")


ACT_CASES = [(n, {}) for n in acts.ACTIVATIONS] + [("leaky_relu", {"alpha": 0.2}),
                                                   ("elu", {"alpha": 0.5})]


# the small shape runs the serial twins of the kernels, the larger one the parallel ones
@pytest.mark.parametrize("size", [(37, 70, 67), (300, 70, 131)], ids=["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,params", ACT_CASES,
                         ids=[f"{n}{p.get('alpha', '')}" for n, p in ACT_CASES])
def test_fused_linear_matches_composed_default(nb, rng, name, params, bias, dtype, size):
    m, k, n = size  # not multiples of MR / NR
    x = rng.standard_normal((m, k)).astype(dtype)
    W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)

    z, a = nb.linear_forward(x, W, b, name, **params)
    z0, a0 = Backend.linear_forward(nb, x, W, b, name, **params)
    np.testing.assert_allclose(z, z0, **tol)
    np.testing.assert_allclose(a, a0, **tol)
    z64 = x.astype(np.float64) @ W + (0 if b is None else b)
    np.testing.assert_allclose(z, z64, **tol)

    g = rng.standard_normal((m, n)).astype(dtype)
    fused = nb.linear_backward(x, W, z, a, g, name, has_bias=bias, **params)
    composed = Backend.linear_backward(nb, x, W, z, a, g, name, has_bias=bias, **params)
    for got, want in zip(fused, composed):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, **tol)


def test_linear_backward_writes_into_flat_gradient_views(nb, rng):
    """The trainer's path: gradients land in views of one flat buffer, first layer skips
    grad_x, and one SGD update covers every parameter."""
    x = rng.standard_normal((9, 5))
    P, G = nb.zeros(5 * 4 + 4, np.float64), nb.zeros(5 * 4 + 4, np.float64)
    W, b = nb.view(P, 0, (5, 4)), nb.view(P, 20, (4,))
    gW, gb = nb.view(G, 0, (5, 4)), nb.view(G, 20, (4,))
    nb.assign(W, rng.standard_normal((5, 4)))
    z, a = nb.linear_forward(x, W, b, "tanh")
    g = rng.standard_normal((9, 4))
    gx, rW, rb = nb.linear_backward(x, W, z, a, g, "tanh", need_grad_x=False,
                                    out_grad_W=gW, out_grad_b=gb)
    assert gx is None and rW is gW and rb is gb
    delta = g * (1 - np.tanh(x @ W) ** 2)
    np.testing.assert_allclose(G[:20].reshape(5, 4), x.T @ delta, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(G[20:], delta.sum(0), rtol=1e-12, atol=1e-13)
    before = P.copy()
    nb.sgd_update(P, G, 0.5)
    np.testing.assert_allclose(P, before - 0.5 * G, rtol=1e-15)


def test_optimizer_updates_work_on_2d_views(nb, rng):
    p = rng.standard_normal((6, 7)).astype(np.float32)
    g = rng.standard_normal((6, 7)).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    want_p, want_m, want_v = ref.adam(p, g, m, v, 1, lr=0.01)
    nb.adam_update(p, g, m, v, 1, lr=0.01)
    for got, want in ((p, want_p), (m, want_m), (v, want_v)):  # float32 rounding only
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        nb.sgd_update(p[:, ::2], g[:, ::2], 0.1)


def test_take_rows_checks_indices(nb, rng):
    x = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(nb.take_rows(x, np.array([4, -1, 0])), x[[4, -1, 0]])
    with pytest.raises(IndexError):
        nb.take_rows(x, np.array([5]))
    with pytest.raises(TypeError):
        nb.take_rows(x, np.array([0.5]))


def test_info_reports_versions_threads_and_jit_time(nb):
    seconds = nb.warm_up()
    info = nb.info()
    assert info["jit_seconds"] == seconds > 0
    assert info["threads"] >= 1 and info["numba"] and info["llvmlite"]
    assert info["threading_layer"]
    assert "micro-kernel" in info["gemm"]


def test_probe_names_the_extra_when_numba_is_missing(monkeypatch):
    import importlib.util

    from mlpaccel.backends.numba import NumbaBackend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba" else real(name, *a))
    reason = NumbaBackend._probe()
    assert reason and "mlpaccel[numba]" in reason
    monkeypatch.undo()
    assert NumbaBackend._probe() is None


def test_backend_module_imports_without_numba():
    code = ("import sys; import mlpaccel.backends.numba as m; "
            "assert 'numba' not in sys.modules, 'numba imported at module import'; "
            "print(m.NumbaBackend.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numba"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "linear"])
def test_fused_epilogue_across_k_blocks(nb, rng, name, dtype):
    # K = 1100 is two K blocks: full tiles accumulate in C (bias first, activation after the
    # last block); 130 = 2 * 64 + 2 and 50 = 8 * 6 + 2 also leave partial edge tiles
    x = rng.standard_normal((50, 1100)).astype(dtype)
    W = (rng.standard_normal((1100, 130)) / 33).astype(dtype)
    b = rng.standard_normal(130).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    z, a = nb.linear_forward(x, W, b, name)
    z64 = x.astype(np.float64) @ W + b
    np.testing.assert_allclose(z, z64, **tol)
    np.testing.assert_allclose(a, ref.activation(name, z64), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", [(1, 100_003, 1), (3, 16_389, 5), (1, 20_000, 16)])
def test_tiny_output_long_k_splits_k(m, k, n, ta, tb, dtype):
    """Inner-product-like shapes (M*N <= 16, long K) take the split-K kernel."""
    if mlpaccel.unavailable_reason("numba"):
        pytest.skip(mlpaccel.unavailable_reason("numba"))
    B = mlpaccel.get_backend("numba")
    rng = np.random.default_rng(m * 7 + n)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = (a64.T if ta else a64) @ (b64.T if tb else b64)
    out = np.full((m, n), np.nan, dtype)
    got = B.matmul(a, b, transpose_a=ta, transpose_b=tb, out=out)
    assert got is out
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert err < (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)],
                         ids=["NN", "TN", "NT"])
def test_parallel_gemm_task_queue_runs_each_tile_once(nb, rng, threads, ta, tb):
    """The parallel GEMM hands its tasks out through an atomic counter, one prange step per
    thread: every tile must be computed exactly once, also when full tiles accumulate in C
    over two K blocks (a tile run twice would add its product twice) and with fewer or more
    tasks than threads (64 x 784 x 256: 8 tasks; 7 x 1100 x 600 with 2 K blocks)."""
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for m, k, n in ((64, 784, 256), (7, 1100, 600), (256, 256, 256)):
            for _ in range(3):
                _gemm_case(nb, rng, m, k, n, ta, tb, np.float32, out=True)
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "tanh", "elu"])
def test_backward_epilogue_on_the_parallel_gemm(nb, rng, name, dtype):
    """grad_x of linear_backward(below=...) at a size that runs the parallel GEMM (f' applied
    tile by tile by the core that computed it) equals the float64 reference."""
    m, k, n = 256, 200, 130
    x = rng.standard_normal((m, k)).astype(dtype)
    W = (0.1 * rng.standard_normal((k, n))).astype(dtype)
    g = rng.standard_normal((m, n)).astype(dtype)
    zb = rng.standard_normal((m, k)).astype(dtype)
    ab = ref.activation(name, zb.astype(np.float64)).astype(dtype)
    gx, gW, gb = nb.linear_backward(x, W, None, None, g, "linear", below=(name, zb, ab))
    want = ref.activation_grad(name, zb.astype(np.float64), ab.astype(np.float64),
                               g.astype(np.float64) @ W.astype(np.float64).T)
    err = np.linalg.norm(gx - want) / np.linalg.norm(want)
    assert err < RTOL[dtype] * np.sqrt(n)
    with pytest.raises(ValueError, match="below's z and a"):
        nb.linear_backward(x, W, None, None, g, "linear", below=(name, zb[1:], ab[1:]))


def test_backward_below_without_z_uses_a(nb, rng):
    """below=(f, None, a) for an activation whose derivative needs only a (sigmoid): no
    epilogue (it reads z), the pass over grad_x instead - same result."""
    m, k, n = 64, 40, 30
    x = rng.standard_normal((m, k)).astype(np.float32)
    W = (0.1 * rng.standard_normal((k, n))).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    zb = rng.standard_normal((m, k))
    ab = ref.activation("sigmoid", zb)
    gx, _, _ = nb.linear_backward(x, W, None, None, g, "linear",
                                  below=("sigmoid", None, ab.astype(np.float32)))
    want = ref.activation_grad("sigmoid", zb, ab, g.astype(np.float64) @ W.astype(np.float64).T)
    assert np.linalg.norm(gx - want) / np.linalg.norm(want) < RTOL[np.float32] * np.sqrt(n)
