"""The cuda backend's own tests: its kernels through cuda-emu (every CI run), the same kernels on
a GPU against the emulator and the float64 oracle (``cuda`` marker), the CUDA-graph logic with a
fake CuPy, and the CPU-side logic of tools/gpu_check.py.

The general conformance suite (test_conformance.py) covers the contract on every backend; here
are the things specific to our kernels: vector and scalar paths, grid-stride and multi-block
reductions, label variants, exact scalar types at the kernel ABI, graph capture and fallback.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import mlpaccel
from mlpaccel.backends import reference as ref
from mlpaccel.backends import unavailable_reason
from mlpaccel.errors import DeviceOutOfMemoryError

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
import gpu_check  # noqa: E402
import sanitize_run as sr  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}  # max_rel_err bounds


@pytest.fixture(scope="module")
def oracle():
    return mlpaccel.get_backend("numpy")


def _record_launches(backend, monkeypatch) -> list:
    """Replace the driver's launch by a spy that records (kernel, grid, block, args)."""
    calls = []
    real = backend.driver.launch

    def spy(module, kernel, grid, block, args, shared_mem=0):
        calls.append((kernel, grid, block, tuple(args)))
        return real(module, kernel, grid, block, args, shared_mem)

    monkeypatch.setattr(backend.driver, "launch", spy)
    return calls


# ====================================================================== cuda-emu: every kernel
@pytest.mark.emu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(sr.CASES))
def test_every_case_matches_the_oracle(emu, oracle, case, dtype):
    inp = sr.make_inputs(np.random.default_rng(7))
    want = sr.run_case(oracle, case, inp, np.float64)
    got = sr.run_case(emu, case, inp, dtype)
    tol = TOL[np.dtype(dtype)] * (10 if case.startswith(("matmul", "linear")) else 1)
    for key, r in want.items():
        assert got[key].dtype == np.dtype(dtype), key
        assert sr.max_rel_err(got[key], r) <= tol, (case, key)


@pytest.mark.emu
def test_fit_runs_small_mlps_through_the_fused_step_and_matches_numpy(emu, rng, monkeypatch):
    """Plain SGD on an MLP with every width <= 128: each step of fit (the short last batch
    too) is the fused pair of launches, with the numpy backend's losses and weights; a
    momentum fit, a wide layer or fused_mlp=False take the layer-by-layer step."""
    from mlpaccel.backends.cuda import CudaEmuBackend

    X = rng.standard_normal((203, 2)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(int) + (X[:, 0] > 1)
    kw = dict(loss="cross_entropy", random_state=0)
    fit = dict(epochs=3, batch_size=32, learning_rate=0.1, verbose=0, metrics=())
    ref = mlpaccel.MLP([2, 16, 16, 3], backend="numpy", **kw).fit(X, y, optimizer="sgd", **fit)

    def launches(backend, layers, optimizer):
        calls = _record_launches(backend, monkeypatch)
        m = mlpaccel.MLP(layers, backend=backend, **kw)
        m.fit(X, y, optimizer=optimizer, **fit)
        monkeypatch.undo()
        return m, [c[0] for c in calls]

    m, names = launches(emu, [2, 16, 16, 3], "sgd")
    fused = [n for n in names if n.startswith("fused_mlp_fwdbwd")]
    assert len(fused) == 3 * 7 and not any(n.startswith("gemm") for n in names)
    np.testing.assert_allclose(m.history["loss"], ref.history["loss"], rtol=1e-5)
    for (W, b), (Wr, br) in zip(m.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b, br, rtol=1e-4, atol=1e-6)
    for backend, layers, optimizer in ((emu, [2, 16, 16, 3], "momentum"),
                                       (emu, [2, 130, 3], "sgd"),
                                       (CudaEmuBackend(fused_mlp=False), [2, 16, 16, 3], "sgd")):
        _, names = launches(backend, layers, optimizer)
        assert not any(n.startswith("fused_mlp") for n in names), (layers, optimizer)
    assert emu.info()["fused_mlp"].startswith("on")


@pytest.mark.emu
@pytest.mark.parametrize("below", ["relu", "sigmoid", "elu"])
def test_backward_applies_the_lower_layers_derivative_in_the_gemm_epilogue(emu, rng,
                                                                           monkeypatch, below):
    """With ``below``, the derivative of the layer below rides in the dX GEMM's epilogue
    (no act_grad launch) for the activations gemm.cu has; others take one act_grad launch."""
    x = emu.asarray(rng.standard_normal((70, 33)), np.float32)
    W = emu.asarray(rng.standard_normal((33, 17)) * 0.3, np.float32)
    z, a = emu.linear_forward(x, W, None, "relu")
    g = emu.asarray(rng.standard_normal((70, 17)), np.float32)
    zb = emu.asarray(rng.standard_normal((70, 33)), np.float32)
    ab = emu.activation(below, zb)
    calls = _record_launches(emu, monkeypatch)
    gx, _, _ = emu.linear_backward(x, W, z, a, g, "relu", has_bias=False,
                                   below=(below, zb, ab))
    names = [c[0] for c in calls]
    grads = [n for n in names if n.startswith("act_grad")]
    assert grads == (["act_grad_relu_f32"] if below in ("relu", "sigmoid")
                     else ["act_grad_relu_f32", f"act_grad_{below}_f32"]), names
    h = {k: emu.to_numpy(v).astype(np.float64) for k, v in
         dict(x=x, W=W, z=z, g=g, zb=zb, ab=ab).items()}
    delta = h["g"] * (h["z"] > 0)
    want = ref.activation_grad(below, h["zb"], h["ab"], delta @ h["W"].T)
    assert sr.max_rel_err(emu.to_numpy(gx), want) <= 1e-4


@pytest.mark.emu
@pytest.mark.parametrize("need_grad_x", [True, False])
def test_weight_gradient_runs_in_its_own_lane_with_its_own_scratch(emu, rng, monkeypatch,
                                                                   need_grad_x):
    """linear_backward issues grad_W (a split-K GEMM here: 16x16 outputs over K = 2048 rows)
    in the side lane, which a GPU runs on a second stream beside grad_x's GEMM (or grad_b):
    its split-K partials and tickets must be the side lane's own buffers, never the ones the
    other stream's GEMMs use at the same time. Results equal the one-stream backend's."""
    x = emu.asarray(rng.standard_normal((2048, 16)), np.float32)
    W = emu.asarray(rng.standard_normal((16, 24)) * 0.3, np.float32)
    g = emu.asarray(rng.standard_normal((2048, 24)), np.float32)
    zb = emu.asarray(rng.standard_normal((2048, 16)), np.float32)
    lanes = []
    real = emu._scratch_buf

    def spy(key, n, dtype, zero=False):
        lanes.append((key, emu._lane))
        return real(key, n, dtype, zero)

    monkeypatch.setattr(emu, "_scratch_buf", spy)
    calls = _record_launches(emu, monkeypatch)
    gx, gW, gb = emu.linear_backward(x, W, None, None, g, "linear", need_grad_x=need_grad_x,
                                     below=("relu", zb, zb) if need_grad_x else None)
    gemms = [c for c in calls if c[0].startswith("gemm_")]
    assert any(c[1][2] > 1 for c in gemms), "expected a split-K grad_W GEMM"
    assert ("splitk", "side") in lanes and ("tiles", "side") in lanes, lanes
    assert emu._lane == "main"
    h = {k: emu.to_numpy(v).astype(np.float64) for k, v in dict(x=x, W=W, g=g, zb=zb).items()}
    assert sr.max_rel_err(emu.to_numpy(gW), h["x"].T @ h["g"]) <= 1e-4
    assert sr.max_rel_err(emu.to_numpy(gb), h["g"].sum(0)) <= 1e-4
    if need_grad_x:
        assert sr.max_rel_err(emu.to_numpy(gx), (h["g"] @ h["W"].T) * (h["zb"] > 0)) <= 1e-4
    else:
        assert gx is None
    one = mlpaccel.get_backend("cuda-emu", concurrent_backward=False)
    assert one.info()["concurrent_backward"] == "off"
    gx1, gW1, gb1 = one.linear_backward(x, W, None, None, g, "linear",
                                        need_grad_x=need_grad_x,
                                        below=("relu", zb, zb) if need_grad_x else None)
    for a, b in ((gW, gW1), (gb, gb1)) + (((gx, gx1),) if need_grad_x else ()):
        np.testing.assert_array_equal(emu.to_numpy(a), one.to_numpy(b))


@pytest.mark.emu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1029])
def test_activation_vector_and_scalar_paths(emu, rng, dtype, offset, n):
    """Views at offset 0 take the 16-byte path (+ tail), at offset 1 the scalar loop."""
    flat = emu.asarray(rng.standard_normal(n + 8) * 4, dtype)
    z = emu.view(flat, offset, (n,))
    g = emu.asarray(rng.standard_normal(n), dtype)
    z64 = emu.to_numpy(z).astype(np.float64)
    for name in ("gelu", "elu", "sigmoid"):
        a = emu.activation(name, z)
        d = emu.activation_grad(name, z, a, g)
        ra = ref.activation(name, z64)
        rd = ref.activation_grad(name, z64, ra, emu.to_numpy(g).astype(np.float64))
        assert sr.max_rel_err(emu.to_numpy(a), ra) <= TOL[np.dtype(dtype)]
        assert sr.max_rel_err(emu.to_numpy(d), rd) <= TOL[np.dtype(dtype)]
    before = emu.to_numpy(flat)
    emu.scale(2.0, z)  # in place through the view; neighbours untouched
    after = emu.to_numpy(flat)
    np.testing.assert_array_equal(after[offset:offset + n], before[offset:offset + n] * 2)
    np.testing.assert_array_equal(np.delete(after, np.s_[offset:offset + n]),
                                  np.delete(before, np.s_[offset:offset + n]))


@pytest.mark.emu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_activations_stable_at_1e4(emu, dtype):
    z = np.array([-1e4, -1e3, -88.0, -1.0, 0.0, 1.0, 88.0, 1e3, 1e4])
    g = np.linspace(-1, 1, z.size)
    for name in sr.ACTIVATIONS:
        a = emu.activation(name, emu.asarray(z, dtype))
        d = emu.activation_grad(name, emu.asarray(z, dtype), a, emu.asarray(g, dtype))
        ha, hd = emu.to_numpy(a), emu.to_numpy(d)
        assert np.all(np.isfinite(ha)) and np.all(np.isfinite(hd)), name
        ra = ref.activation(name, z)
        assert sr.max_rel_err(ha, ra) <= TOL[np.dtype(dtype)], name
        assert sr.max_rel_err(hd, ref.activation_grad(name, z, ra, g)) <= TOL[np.dtype(dtype)]


@pytest.mark.emu
@pytest.mark.parametrize("m,c", [(1, 1), (1, 33), (9, 31), (70, 65), (3, 100)])
def test_row_kernels_at_edge_shapes(emu, rng, m, c):
    """Warp-per-row kernels: one column, partial warps, more rows than one grid pass."""
    z = rng.standard_normal((m, c)) * 5
    g = rng.standard_normal((m, c))
    ids = rng.integers(0, c, m)
    a = emu.activation("softmax", emu.asarray(z, np.float64))
    np.testing.assert_allclose(emu.to_numpy(a), ref.softmax(z), rtol=1e-12, atol=1e-15)
    d = emu.activation_grad("softmax", None, a, emu.asarray(g, np.float64))
    np.testing.assert_allclose(emu.to_numpy(d), ref.activation_grad("softmax", z, ref.softmax(z),
                                                                    g), rtol=1e-10, atol=1e-14)
    loss, grad = emu.softmax_cross_entropy(emu.asarray(z, np.float64), ids)
    rl, rg = ref.softmax_cross_entropy(z, ids)
    assert float(emu.to_numpy(loss)) == pytest.approx(rl, rel=1e-12)
    np.testing.assert_allclose(emu.to_numpy(grad), rg, rtol=1e-10, atol=1e-15)


@pytest.mark.emu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cross_entropy_label_forms(emu, rng, dtype):
    z = rng.standard_normal((13, 7))
    ids = rng.integers(0, 7, 13)
    rl, rg = ref.softmax_cross_entropy(z, ids)
    zd = emu.asarray(z, dtype)
    forms = {
        "host int64": ids, "host int32": ids.astype(np.int32), "host uint8": ids.astype(np.uint8),
        "device float ids": emu.asarray(ids, dtype), "device int64": ids.astype(np.int64).copy(),
        "one-hot": np.eye(7)[ids], "device one-hot": emu.asarray(np.eye(7)[ids], dtype),
    }
    for form, labels in forms.items():
        loss, grad = emu.softmax_cross_entropy(zd, labels)
        assert loss.shape == () and loss.dtype == np.dtype(dtype), form
        assert float(emu.to_numpy(loss)) == pytest.approx(rl, rel=50 * TOL[np.dtype(dtype)])
        assert sr.max_rel_err(emu.to_numpy(grad), rg) <= TOL[np.dtype(dtype)], form
    with pytest.raises(ValueError, match="class ids"):
        emu.softmax_cross_entropy(zd, np.full(13, 7))
    # on the device the ids are not checked (that would need a host sync): the loss is NaN
    loss, _ = emu.softmax_cross_entropy(zd, emu.asarray(np.full(13, 9.0), dtype))
    assert np.isnan(emu.to_numpy(loss))


@pytest.mark.emu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_loss_reduction_is_multi_block_and_repeatable(emu, rng, dtype, monkeypatch):
    """The last-block reduction: many blocks, the ticket counter resets, results identical."""
    o = rng.uniform(0.01, 0.99, (300, 37))
    t = rng.uniform(0, 1, (300, 37))
    calls = _record_launches(emu, monkeypatch)
    od, td = emu.asarray(o, dtype), emu.asarray(t, dtype)
    first = [emu.to_numpy(x) for x in (*emu.mse(od, td), *emu.binary_cross_entropy(od, td))]
    second = [emu.to_numpy(x) for x in (*emu.mse(od, td), *emu.binary_cross_entropy(od, td))]
    assert all(c[1] > 1 for c in calls)  # grids of several blocks
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    rl, _ = ref.mse(o, t)
    bl, _ = ref.binary_cross_entropy(o, t)
    assert float(first[0]) == pytest.approx(rl, rel=10 * TOL[np.dtype(dtype)])
    assert float(first[2]) == pytest.approx(bl, rel=10 * TOL[np.dtype(dtype)])


@pytest.mark.emu
@pytest.mark.parametrize("shape", [(1, 1), (5, 70), (1000, 3), (257, 33), (0, 4)])
def test_sum_rows_one_and_two_pass(emu, rng, shape, monkeypatch):
    x = rng.standard_normal(shape)
    calls = _record_launches(emu, monkeypatch)
    got = emu.to_numpy(emu.sum_rows(emu.asarray(x, np.float64)))
    np.testing.assert_allclose(got, x.sum(axis=0), rtol=1e-12, atol=1e-12)
    if shape == (1000, 3):
        assert len(calls) == 2  # partial sums per row chunk, then their sum


@pytest.mark.emu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_scalars_have_the_exact_c_type(emu, dtype, monkeypatch):
    """The ABI: arrays contiguous, scalars NumPy scalars matching the kernel's C types."""
    calls = _record_launches(emu, monkeypatch)
    inp = sr.make_inputs(np.random.default_rng(3))
    for case in sr.CASES:
        if not case.startswith("matmul"):
            sr.run_case(emu, case, inp, dtype)
    assert calls
    real = np.float32 if dtype == np.float32 else np.float64
    for kernel, _grid, _block, args in calls:
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, kernel
            else:
                assert type(a) in (np.float32, np.float64, np.int32, np.int64, np.uint32), \
                    (kernel, type(a))
                if isinstance(a, np.floating):
                    assert type(a) is real, (kernel, type(a))


@pytest.mark.emu
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_with_the_step_count_on_the_device(emu, rng, decoupled):
    p0, g0 = rng.standard_normal(37), rng.standard_normal(37)
    p, g, m, v = emu.asarray(p0), emu.asarray(g0), emu.zeros(37, np.float64), \
        emu.zeros(37, np.float64)
    step = emu.zeros(1, np.float64)
    one = emu.asarray(np.ones(1))
    rp, rm, rv = p0, np.zeros(37), np.zeros(37)
    for t in (1, 2, 3):
        emu.axpy(1.0, one, step)  # the trainer advances the counter on the device
        emu.adam_update(p, g, m, v, step, 1e-2, weight_decay=0.1, decoupled=decoupled)
        rp, rm, rv = ref.adam(rp, g0, rm, rv, t, 1e-2, weight_decay=0.1, decoupled=decoupled)
    np.testing.assert_allclose(emu.to_numpy(p), rp, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="one float64 element"):
        emu.adam_update(p, g, m, v, emu.zeros(2, np.float64))
    emu._capture_keep = []  # as while recording a graph: a host step would be frozen
    try:
        with pytest.raises(ValueError, match="CUDA graph"):
            emu.adam_update(p, g, m, v, 4)
    finally:
        emu._capture_keep = None


@pytest.mark.emu
def test_linear_forward_fuses_bias_and_activation(emu, rng, monkeypatch):
    x = emu.asarray(rng.standard_normal((9, 5)))
    W = emu.asarray(rng.standard_normal((5, 7)))
    b = emu.asarray(rng.standard_normal(7))
    calls = _record_launches(emu, monkeypatch)
    z, a = emu.linear_forward(x, W, b, "relu")
    assert len(calls) == 1 and calls[0][0].startswith("gemm")  # GEMM + bias + relu + store z
    calls.clear()
    z2, a2 = emu.linear_forward(x, W, b, "elu")
    assert [c[0].split("_")[0] for c in calls] == ["gemm", "act"]
    np.testing.assert_allclose(emu.to_numpy(z2), emu.to_numpy(z), rtol=1e-6)


@pytest.mark.emu
def test_tf32_precision_on_the_emulator(rng):
    if unavailable_reason("cuda-emu"):
        pytest.skip("cuda-emu unavailable")
    B = mlpaccel.get_backend("cuda-emu", precision="tf32")
    a, b = rng.standard_normal((33, 70)), rng.standard_normal((70, 19))
    got = B.to_numpy(B.matmul(B.asarray(a, np.float32), B.asarray(b, np.float32)))
    err = np.abs(got - a @ b).max() / np.abs(a @ b).max()
    assert 1e-5 < err < 5e-3  # rounded to a 10-bit mantissa: visibly less exact than fp32
    assert "tf32" in B.info()["gemm"]


@pytest.mark.emu
def test_emulator_identity_options_and_errors(emu, rng):
    info = emu.info()
    assert info["emulator"] is True and "emulator" in info["note"]
    fn = lambda: None  # noqa: E731
    assert emu.capture(fn) is fn
    assert emu.info()["graph"].startswith("eager")
    with pytest.raises(ValueError, match="gemm"):
        mlpaccel.get_backend("cuda-emu", gemm="mkl")
    with pytest.raises(ValueError, match="precision"):
        mlpaccel.get_backend("cuda-emu", precision="fp16")
    with pytest.raises(DeviceOutOfMemoryError, match=str(4 * 2**45)):
        emu.zeros((2**45,), np.float32)
    z = emu.asarray(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match="out"):
        emu.activation("relu", z, out=emu.zeros((4, 3), np.float64))
    with pytest.raises(ValueError, match="step"):
        p = emu.zeros(4)
        emu.adam_update(p, p, emu.zeros(4), emu.zeros(4), step=0)
    with pytest.raises(ValueError):
        emu.axpy(1.0, emu.zeros(3), emu.zeros(4))


@pytest.mark.emu
def test_cublas_option_on_the_emulator(rng):
    """gemm="cublas" is the vendor library for comparison (NumPy's BLAS on the emulator)."""
    if unavailable_reason("cuda-emu"):
        pytest.skip("cuda-emu unavailable")
    B = mlpaccel.get_backend("cuda-emu", gemm="cublas")
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 5))
    np.testing.assert_allclose(B.to_numpy(B.matmul(B.asarray(a), B.asarray(b),
                                                   transpose_a=True)), a.T @ b, rtol=1e-6)


def test_probe_names_the_extra_when_cupy_is_missing(monkeypatch):
    from mlpaccel.backends import cuda

    real = cuda.importlib.util.find_spec
    monkeypatch.setattr(cuda.importlib.util, "find_spec",
                        lambda name, *a: None if name == "cupy" else real(name, *a))
    reason = cuda.CudaBackend._probe()
    assert "mlpaccel[cuda13]" in reason and "mlpaccel[cuda]" in reason
    monkeypatch.setattr(cuda.shutil, "which", lambda name: None)
    assert "g++" in cuda.CudaEmuBackend._probe()


# ====================================================================== graph logic (fake CuPy)
class _FakeStream:
    def __init__(self, log, fail_capture=None):
        self.log, self.fail_capture, self.capturing = log, fail_capture, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self, event=None):
        return event

    def wait_event(self, ev):
        self.log.append("wait")

    def begin_capture(self, mode=None):
        self.capturing, self.mode = True, mode
        self.log.append("begin")

    def end_capture(self):
        self.capturing = False
        self.log.append("end")
        log = self.log

        class Graph:
            def launch(self, stream):
                log.append("launch")

        return Graph()


def _fake_backend(log):
    stream = _FakeStream(log)
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        get_current_stream=lambda: stream, Event=lambda disable_timing=False: object(),
        runtime=types.SimpleNamespace(streamCaptureModeRelaxed=2)))
    be = types.SimpleNamespace(driver=types.SimpleNamespace(cupy=cupy), _capture_keep=None,
                               _graph_state="not used yet")
    be._capture_stream = lambda: stream
    return be, stream


def test_graph_step_records_once_and_replays():
    from mlpaccel.backends.cuda import _GraphStep

    log = []
    be, stream = _fake_backend(log)
    result = object()

    def step():
        log.append("fn-capturing" if stream.capturing else "fn-eager")
        assert (be._capture_keep is not None) == stream.capturing
        return result

    g = _GraphStep(be, step)
    outs = [g() for _ in range(4)]
    assert all(o is result for o in outs)
    body = [e for e in log if e != "wait"]
    assert body == ["fn-eager", "begin", "fn-capturing", "end", "launch", "launch", "launch"]
    assert stream.mode == 2  # relaxed: a recorded epoch may allocate its temporaries
    assert be._graph_state.startswith("captured") and be._capture_keep is None


def test_graph_step_falls_back_to_eager_and_says_why():
    from mlpaccel.backends.cuda import _GraphStep

    log = []
    be, stream = _fake_backend(log)
    runs = []

    def step():
        runs.append(stream.capturing)
        if stream.capturing:
            raise NotImplementedError("calling cuBLAS API during stream capture")
        return len(runs)

    g = _GraphStep(be, step)
    assert [g(), g(), g()] == [1, 3, 4]  # call 2: the failed recording, then an eager run
    assert runs == [False, True, False, False]
    assert "end" in log and "launch" not in log  # the capture was ended, nothing replayed
    assert be._graph_state.startswith("eager") and "cuBLAS" in be._graph_state


def test_graph_step_records_on_one_stream_when_the_second_stream_breaks_it():
    """If a recording with the backward's second stream fails, the step is recorded again on
    one stream (concurrent_backward switched off) before falling back to eager launches, and
    info()'s graph line says why."""
    from mlpaccel.backends.cuda import _GraphStep

    log = []
    be, stream = _fake_backend(log)
    be.concurrent_backward, be._side = True, object()

    def step():
        if stream.capturing and be.concurrent_backward:
            raise RuntimeError("operation not permitted when stream is capturing")
        return "out"

    g = _GraphStep(be, step)
    assert [g(), g(), g()] == ["out"] * 3
    assert log.count("begin") == 2 and log.count("launch") == 2  # recorded once, replayed
    assert be.concurrent_backward is False and be._side is None
    assert be._graph_state.startswith("captured") and "one stream" in be._graph_state
    assert g.eager_reason is None


def test_beside_forks_and_joins_the_side_stream():
    """``_beside`` with a fake CuPy: the side stream waits for what the current stream was
    given before the block, work in ``side()`` is issued on it (in the side lane), and the
    current stream waits for the side stream when the block ends - errors included."""
    from mlpaccel.backends.cuda import CudaBackend

    log = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            log.append(f"enter {self.name}")

        def __exit__(self, *exc):
            log.append(f"exit {self.name}")
            return False

        def record(self, ev):
            log.append(f"record {ev} on {self.name}")
            return ev

        def wait_event(self, ev):
            log.append(f"{self.name} waits {ev}")

    main = Stream("main")
    made = iter([Stream("side")])
    names = iter(["fork", "join"])
    cuda = types.SimpleNamespace(get_current_stream=lambda: main,
                                 Stream=lambda non_blocking=False: next(made),
                                 Event=lambda disable_timing=False: next(names))
    be = CudaBackend.__new__(CudaBackend)
    be.driver = types.SimpleNamespace(cupy=types.SimpleNamespace(cuda=cuda))
    be.concurrent_backward, be._side, be._lane = True, None, "main"
    for fail in (False, True):
        log.clear()
        try:
            with be._beside() as side:
                with side():
                    log.append(f"dW in {be._lane}")
                log.append(f"dX in {be._lane}")
                if fail:
                    raise RuntimeError("boom")
        except RuntimeError:
            assert fail
        assert log == ["record fork on main", "side waits fork", "enter side", "dW in side",
                       "exit side", "dX in main", "record join on side", "main waits join"]
    be.concurrent_backward = False
    log.clear()
    with be._beside() as side:
        with side():
            log.append(f"dW in {be._lane}")
    assert log == ["dW in side"]


# ====================================================================== tools/gpu_check.py logic
def test_gpu_check_arguments():
    args = gpu_check.parse_args(["--out", "x"])
    assert args.steps == [s.name for s in gpu_check.STEPS] and args.budget < 540
    assert gpu_check.parse_args(["--steps", "tests, compare"]).steps == ["tests", "compare"]
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "tests,nope"])


def test_gpu_check_steps_run_in_order_and_survive_failures(tmp_path):
    ran = []

    def make(name, status=None, exc=None, sleep=0.0):
        def run(ctx, limit):
            ran.append((name, limit))
            if exc:
                raise exc
            return gpu_check.StepResult(name, status, numbers={"n": 1})
        return gpu_check.Step(name, 100, run)

    steps = [make("a", "ok"), make("b", exc=RuntimeError("boom")), make("c", "fail"),
             make("d", "ok")]
    ctx = gpu_check.Context(out=tmp_path, env={})
    now = [0.0]

    def clock():
        now[0] += 20.0  # every clock read: 20 s pass
        return now[0]

    res = gpu_check.run_steps(steps, ctx, budget_s=150, clock=clock)
    assert [r.status for r in res] == ["ok", "error", "fail", "skip"]
    assert "boom" in res[1].note
    assert ran[0][1] == 100 and ran[2][1] < 100  # limits shrink to the budget that is left


def test_gpu_check_main_writes_json_and_summary(tmp_path, capsys):
    def ok(ctx, limit):
        return gpu_check.StepResult("x", "ok", numbers={"passed": 3, "worst": 1.5e-7})

    def bad(ctx, limit):
        return gpu_check.StepResult("y", "timeout", note="killed")

    steps = [gpu_check.Step("x", 10, ok), gpu_check.Step("y", 10, bad)]
    rc = gpu_check.main(["--out", str(tmp_path)], steps=steps)
    assert rc == 1
    doc = __import__("json").loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in doc["steps"]] == ["ok", "timeout"] and doc["ok"] is False
    md = (tmp_path / "summary.md").read_text()
    assert "| x | ok |" in md and "passed=3" in md and "| y | timeout |" in md
    assert capsys.readouterr().out.rstrip().endswith(md.rstrip().splitlines()[-1])
    assert gpu_check.main(["--out", str(tmp_path), "--steps", "x"], steps=steps) == 0


def test_gpu_check_run_cmd_kills_on_timeout(tmp_path):
    t0 = time.monotonic()
    rc, tail, secs = gpu_check.run_cmd(
        [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"],
        1.5, tmp_path / "log.txt")
    assert rc is None and "started" in tail and time.monotonic() - t0 < 20
    rc, tail, _ = gpu_check.run_cmd([sys.executable, "-c", "raise SystemExit(3)"], 30,
                                    tmp_path / "log2.txt")
    assert rc == 3
    rc, tail, _ = gpu_check.run_cmd(["/nonexistent/tool"], 5, tmp_path / "log3.txt")
    assert rc == 127


def test_gpu_check_parsers():
    assert gpu_check.parse_pytest_summary("x\n== 12 passed, 2 failed, 3 skipped in 4.0s ==") == \
        {"passed": 12, "failed": 2, "skipped": 3}
    assert gpu_check.parse_pytest_summary("1 error in 0.1s") == {"error": 1}
    assert gpu_check.parse_sanitizer("...\n========= ERROR SUMMARY: 0 errors\n") == 0
    assert gpu_check.parse_sanitizer("========= ERROR SUMMARY: 7 errors") == 7
    assert gpu_check.parse_sanitizer("no summary") is None
    shapes = gpu_check.tuning_shapes()
    assert (8192, 256, 784, "nn") in shapes and (784, 256, 8192, "tn") in shapes
    assert (64, 784, 256, "nt") in shapes


# ====================================================================== on a GPU
@pytest.fixture(scope="module")
def gpu():
    reason = unavailable_reason("cuda")
    if reason is not None:
        pytest.skip(f"cuda unavailable: {reason}")
    return mlpaccel.get_backend("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(sr.CASES))
def test_cuda_matches_the_emulator_and_the_oracle(gpu, oracle, case, dtype):
    inp = sr.make_inputs(np.random.default_rng(11))
    want = sr.run_case(oracle, case, inp, np.float64)
    got = sr.run_case(gpu, case, inp, dtype)
    tol = TOL[np.dtype(dtype)] * (10 if case.startswith(("matmul", "linear")) else 1)
    emu_out = None
    if unavailable_reason("cuda-emu") is None:
        emu_out = sr.run_case(mlpaccel.get_backend("cuda-emu"), case, inp, dtype)
    for key, r in want.items():
        assert sr.max_rel_err(got[key], r) <= tol, (case, key)
        if emu_out is not None:
            assert sr.max_rel_err(got[key], emu_out[key]) <= tol, (case, key, "vs emu")


@pytest.mark.cuda
def test_cuda_step_replays_as_a_graph(gpu, rng):
    p0 = rng.standard_normal(1000).astype(np.float32)
    g0 = rng.standard_normal(1000).astype(np.float32)
    p, g = gpu.asarray(p0), gpu.asarray(g0)
    x = gpu.asarray(rng.standard_normal((64, 32)).astype(np.float32))

    def step():
        a = gpu.activation("relu", x)
        gpu.sgd_update(p, g, 0.1)
        return gpu.sum_rows(a)

    replay = gpu.capture(step)
    outs = [replay() for _ in range(3)]
    gpu.synchronize()
    want = p0.astype(np.float64)
    for _ in range(3):
        want = want - 0.1 * g0
    np.testing.assert_allclose(gpu.to_numpy(p), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu.to_numpy(outs[-1]), np.maximum(gpu.to_numpy(x), 0).sum(0),
                               rtol=1e-5)
    assert gpu.info()["graph"].startswith("captured"), gpu.info()["graph"]


@pytest.mark.cuda
def test_cuda_adam_graph_with_a_device_step(gpu, rng):
    p0, g0 = rng.standard_normal(300), rng.standard_normal(300)
    p, g = gpu.asarray(p0, np.float32), gpu.asarray(g0, np.float32)
    m, v = gpu.zeros(300, np.float32), gpu.zeros(300, np.float32)
    step, one = gpu.zeros(1, np.float32), gpu.asarray(np.ones(1), np.float32)

    def train_step():
        gpu.axpy(1.0, one, step)
        gpu.adam_update(p, g, m, v, step, 1e-2)

    replay = gpu.capture(train_step)
    rp, rm, rv = p0, np.zeros(300), np.zeros(300)
    for t in (1, 2, 3, 4):
        replay()
        rp, rm, rv = ref.adam(rp, g0, rm, rv, t, 1e-2)
    np.testing.assert_allclose(gpu.to_numpy(p), rp, rtol=1e-4, atol=1e-5)
    assert gpu.info()["graph"].startswith("captured")


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_fit_replays_whole_epochs_and_memory_stays_flat(gpu, rng, optimizer):
    """10,560 steps of MLP.fit (320 epochs of 32 batches of 64 and a short one of 17) on device
    data: from the second epoch on, each epoch is one recorded graph (the short batch
    included); the device memory in use does not grow, and the loss matches a float64 numpy
    run of the same epochs."""
    import cupy

    X = rng.random((32 * 64 + 17, 784)).astype(np.float32)
    y = rng.integers(0, 10, 32 * 64 + 17)
    kw = dict(loss="cross_entropy", random_state=0)
    m = mlpaccel.MLP([784, 64, 10], backend=gpu, **kw)
    ref = mlpaccel.MLP([784, 64, 10], backend="numpy", dtype="float64", **kw)
    lr = 0.01 if optimizer == "sgd" else 1e-3
    Xd, Td = m.device_data(X, y)
    for model, data in ((m, (Xd, Td)), (ref, (X, y))):
        model.fit(*data, epochs=3, batch_size=64, optimizer=optimizer, learning_rate=lr,
                  verbose=0, metrics=())
    np.testing.assert_allclose(m.history["loss"], ref.history["loss"], rtol=2e-3)
    assert gpu.info()["graph"].startswith("captured"), gpu.info()["graph"]
    pool = cupy.get_default_memory_pool()
    gpu.synchronize()
    before = pool.used_bytes()
    m.fit(Xd, Td, epochs=317, batch_size=64, optimizer=optimizer, learning_rate=lr,
          verbose=0, metrics=())
    gpu.synchronize()
    assert pool.used_bytes() == before
    assert m.optimizer.iterations == 320 * 33
    assert np.isfinite(m.history["loss"][-1]) and m.history["loss"][-1] < m.history["loss"][0]


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [64, 1000])
def test_cuda_concurrent_backward_is_bit_identical_to_one_stream(gpu, rng, batch):
    """The weight gradients on a second stream (default) change when kernels run, not what
    they compute: eager train_step and recorded fit epochs give the same bits as
    ``concurrent_backward=False`` (split-K at batch 1000 included), and the epoch is still
    one CUDA graph (the side stream joins the recording as a branch)."""
    X = rng.random((4 * batch + 7, 784)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    weights = []
    for concurrent in (True, False):
        be = mlpaccel.get_backend("cuda", concurrent_backward=concurrent)
        m = mlpaccel.MLP([784, 256, 256, 10], loss="cross_entropy", backend=be, random_state=0)
        m.train_step(X[:batch], y[:batch], optimizer="sgd", learning_rate=0.05)
        Xd, Td = m.device_data(X, y)
        m.fit(Xd, Td, epochs=3, batch_size=batch, optimizer="sgd", learning_rate=0.05,
              verbose=0, metrics=())
        assert be.info()["graph"].startswith("captured"), be.info()["graph"]
        weights.append([m.backend.to_numpy(m._params), np.array(m.history["loss"])])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
def test_cuda_arrays_out_of_memory_and_info(gpu, rng):
    import cupy

    c = cupy.arange(10, dtype=cupy.float32)
    d = gpu.asarray(c)  # a device array in: no host round trip, a device copy out
    assert isinstance(d, cupy.ndarray) and d.data.ptr != c.data.ptr
    with pytest.raises(DeviceOutOfMemoryError, match="bytes"):
        gpu.zeros((2**46,), np.float32)
    info = gpu.info()
    for key in ("device", "compute_capability", "multiprocessors", "cuda_runtime", "cupy"):
        assert info[key], key


# ====================================================================== emulator checking modes
@pytest.mark.emu
@pytest.mark.parametrize("case", [c for c in sr.CASES if not c.startswith("matmul")])
def test_kernels_are_race_free_and_in_bounds(checked_emu, oracle, case):
    """Every non-GEMM kernel under both thread orders and bounds checks (the GEMM's own tests
    cover its configurations); a race or an out-of-bounds access raises KernelError."""
    info = checked_emu.driver.info()
    assert info["check_bounds"] is True and "reverse" in info["schedules"]
    inp = sr.make_inputs(np.random.default_rng(5))
    want = sr.run_case(oracle, case, inp, np.float64)
    got = sr.run_case(checked_emu, case, inp, np.float32)
    for key, r in want.items():
        assert sr.max_rel_err(got[key], r) <= 10 * TOL[np.dtype(np.float32)], (case, key)


@pytest.mark.cuda
def test_cuda_fit_of_a_small_mlp_records_the_fused_step(gpu, rng, monkeypatch):
    """On the GPU the fused step is recorded into the epoch graph (the short batch too) and
    trains as the numpy backend does."""
    X = rng.standard_normal((203, 2)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(int) + (X[:, 0] > 1)
    kw = dict(loss="cross_entropy", random_state=0)
    fit = dict(epochs=4, batch_size=32, learning_rate=0.1, verbose=0, metrics=())
    ref = mlpaccel.MLP([2, 16, 16, 3], backend="numpy", **kw).fit(X, y, optimizer="sgd", **fit)
    calls = _record_launches(gpu, monkeypatch)
    m = mlpaccel.MLP([2, 16, 16, 3], backend=gpu, **kw)
    Xd, Td = m.device_data(X, y)
    m.fit(Xd, Td, optimizer="sgd", **fit)
    assert any(c[0].startswith("fused_mlp_fwdbwd") for c in calls)
    assert gpu.info()["graph"].startswith("captured"), gpu.info()["graph"]
    np.testing.assert_allclose(m.history["loss"], ref.history["loss"], rtol=1e-5)
    for got, want in zip(m.get_weights(), ref.get_weights()):
        for a, r in zip(got, want):
            np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6)
