"""The CPU emulator of CUDA kernels (cuda-emu's EmuDriver): features, checks, caching.

Kernels live in tests/emu_kernels/: features.cu exercises each CUDA feature, broken.cu holds
deliberately wrong kernels that the checking modes must catch. Libraries are cached, so only the
first run of a session compiles.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mlpaccel.backends.cuda_emu import EmuDriver, emulator_available
from mlpaccel.errors import KernelError

pytestmark = [pytest.mark.emu,
              pytest.mark.skipif(not emulator_available()[0], reason=emulator_available()[1])]

HERE = Path(__file__).parent / "emu_kernels"
FEATURES = str(HERE / "features.cu")
BROKEN = str(HERE / "broken.cu")
i32, f32 = np.int32, np.float32


@pytest.fixture(scope="module")
def drv():
    return EmuDriver(schedules=("forward",), check_bounds=False, workers=2)


@pytest.fixture(scope="module")
def feat(drv):
    return drv.load(FEATURES)


@pytest.fixture(scope="module")
def broken(drv):
    return drv.load(BROKEN)


@pytest.fixture
def own_cache(monkeypatch, tmp_path):
    """A private cache folder, for tests that build throw-away sources."""
    monkeypatch.setenv("MLPACCEL_CACHE", str(tmp_path / "cache"))


def tf32_model(x: np.ndarray) -> np.ndarray:
    """NumPy model of cvt.rna.tf32.f32: round half away from zero to a 10-bit mantissa."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    special = (u & 0x7F800000) == 0x7F800000
    r = ((u + 0x1000) & ~np.uint64(0x1FFF)) & 0xFFFFFFFF
    nan = special & ((u & 0x7FFFFF) != 0)
    r = np.where(special, u, r)
    r = np.where(nan, 0x7FFFE000, r)
    return r.astype(np.uint32)


# ------------------------------------------------------------------ semantics
@pytest.mark.parametrize("grid,block", [((3, 2, 2), (4, 3, 2)), (5, 33), ((1, 1, 3), (2, 1, 1))])
def test_grid_and_block_coordinates_in_3d(drv, feat, grid, block):
    g = tuple(grid) + (1, 1) if isinstance(grid, tuple) else (grid, 1, 1)
    b = tuple(block) + (1, 1) if isinstance(block, tuple) else (block, 1, 1)
    g, b = g[:3], b[:3]
    n = int(np.prod(g) * np.prod(b))
    out = np.full(10 * n, -1, i32)
    drv.launch(feat, "coords", grid, block, [out])
    o = out.reshape(n, 10)
    expect = []
    for bz in range(g[2]):
        for by in range(g[1]):
            for bx in range(g[0]):
                for tz in range(b[2]):
                    for ty in range(b[1]):
                        for tx in range(b[0]):
                            tl = tx + b[0] * (ty + b[1] * tz)
                            expect.append([bx, by, bz, tx, ty, tz, b[0] * 100 + b[1] * 10 + b[2],
                                           g[0] * 100 + g[1] * 10 + g[2], 32, tl])
    np.testing.assert_array_equal(o, np.array(expect))


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 5, 33), (32, 48, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_gemm_with_static_shared_memory_and_barriers(drv, feat, rng, m, n, k, dtype):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = np.zeros((m, n), dtype)
    name = "tiled_gemm_f32" if dtype == np.float32 else "tiled_gemm_f64"
    drv.launch(feat, name, ((n + 15) // 16, (m + 15) // 16), (16, 16), [a, b, c, i32(m), i32(n),
                                                                        i32(k)])
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, ref, rtol=tol, atol=tol * np.sqrt(k))


def test_dynamic_shared_memory(drv, feat, rng):
    n, bs = 1000, 128
    x = rng.standard_normal(n).astype(f32)
    y = np.zeros(n, f32)
    drv.launch(feat, "dyn_reverse", (n + bs - 1) // bs, bs, [x, y, i32(n)], shared_mem=bs * 4)
    exp = np.empty(n, f32)
    for blk in range((n + bs - 1) // bs):
        idx = np.arange(blk * bs, (blk + 1) * bs)
        src = np.where(idx < n, np.pad(x, (0, bs))[idx], -1.0)
        for t in range(bs):
            j = blk * bs + bs - 1 - t
            if j < n:
                exp[j] = src[t]
    np.testing.assert_array_equal(y, exp)


def test_warp_shuffles_votes_and_masks(drv, feat, rng):
    nthreads = 64
    x = rng.integers(0, 20, nthreads).astype(i32)
    out = np.zeros(12 * nthreads, i32)
    drv.launch(feat, "warp_ops", 1, nthreads, [x, out])
    o = out.reshape(nthreads, 12)
    for t in range(nthreads):
        w, lane = t // 32 * 32, t % 32
        v = x[w:w + 32]
        seg16 = lane // 16 * 16
        assert o[t, 0] == v[3]
        assert o[t, 1] == v[lane // 8 * 8 + (lane + 1) % 8]
        assert o[t, 2] == (v[lane - 2] if lane >= 2 else v[lane])
        assert o[t, 3] == (v[lane + 5] if lane % 16 + 5 < 16 else v[lane])
        assert o[t, 4] == v[lane ^ 1]
        assert np.uint32(o[t, 5]) == sum(1 << j for j in range(32) if v[j] & 1)
        assert o[t, 6] == int(np.any(v == 7))
        assert o[t, 7] == 1
        assert o[t, 8] == v.sum()
        assert o[t, 9] == v[seg16]
        assert np.uint32(o[t, 10]) == sum(1 << j for j in range(seg16, seg16 + 16) if v[j] > 10)
        assert o[t, 11] == (v[lane + 1] if lane < 31 else v[lane])


def test_atomics_across_blocks_and_workers(drv, feat, rng):
    n = 3000
    x = rng.random(n).astype(f32)
    fsum, dsum = np.zeros(1, f32), np.zeros(1, np.float64)
    ints, usum = np.zeros(5, i32), np.zeros(1, np.uint32)
    drv.launch(feat, "atomics", (n + 127) // 128, 128, [x, fsum, dsum, ints, usum, i32(n)])
    np.testing.assert_allclose(fsum[0], x.astype(np.float64).sum(), rtol=1e-5)
    np.testing.assert_allclose(dsum[0], x.astype(np.float64).sum(), rtol=1e-12)
    assert ints[0] == n and ints[1] == n - 1 and ints[3] == 1 and ints[4] == 7
    assert 1 <= ints[2] <= n and usum[0] == 2 * n


def test_vector_loads_and_types(drv, feat, rng):
    n4 = 37
    x = rng.standard_normal(4 * n4).astype(f32)
    y = np.zeros_like(x)
    a = rng.integers(-100, 100, 4 * n4).astype(i32)
    b = np.zeros_like(a)
    c = rng.standard_normal(2 * n4)
    d = np.zeros_like(c)
    drv.launch(feat, "vec_copy", 2, 32, [x, y, a, b, c, d, i32(n4)])
    np.testing.assert_array_equal(y, 2 * x)
    np.testing.assert_array_equal(b.reshape(-1, 4), a.reshape(-1, 4)[:, ::-1])
    np.testing.assert_array_equal(d.reshape(-1, 2), c.reshape(-1, 2)[:, ::-1])


def test_math_functions(drv, feat, rng):
    x = np.concatenate([rng.uniform(-3, 3, 50), [0.0, -0.5, 2.5]]).astype(f32)
    out = np.zeros(24 * x.size, f32)
    drv.launch(feat, "math_f32", 1, 64, [x, out, i32(x.size)])
    o = out.reshape(x.size, 24).astype(np.float64)
    v = x.astype(np.float64)
    from math import erf
    expect = [np.exp(v), np.exp(v), np.log(np.abs(v) + 1), np.log1p(np.abs(v)), np.expm1(v),
              np.tanh(v), np.vectorize(erf)(v), np.maximum(v, 0.5), np.minimum(v, 0.5),
              np.abs(v), np.sqrt(np.abs(v)), 1 / np.sqrt(np.abs(v) + 1), v / 3, 1 / (v + 10),
              2 * v + 1, v, np.minimum(3, np.trunc(v)), np.full_like(v, 5), np.minimum(v, 1),
              np.maximum(v, -1), np.exp(v), np.clip(v, 0, 1), np.full_like(v, 0.5),
              [bin(int(u)).count("1") for u in x.view(np.uint32)]]
    for j, e in enumerate(expect):
        np.testing.assert_allclose(o[:, j], e, rtol=2e-6, atol=1e-6, err_msg=f"column {j}")


def test_syncthreads_count_and_or(drv, feat):
    x = np.array([1, 0, 3, 0, 5, 6, 0, 8] * 4, i32)
    out = np.zeros(3, i32)
    drv.launch(feat, "sync_count", 1, x.size, [x, out])
    assert list(out) == [int((x > 0).sum()), 0, 1]


def test_tf32_rounding_is_bit_exact(drv, feat, rng):
    bits = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**19, 200, dtype=np.uint64).astype(np.uint32) << 13) | 0x1000
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F7FFFFF,
                        0x00000001, 0x00001000, 0x3F800FFF, 0x3F801000], np.uint32)
    x = np.concatenate([bits, ties, special]).view(f32)
    out = np.zeros(x.size, np.uint32)
    drv.launch(feat, "tf32_round", (x.size + 255) // 256, 256, [x, out, i32(x.size)])
    np.testing.assert_array_equal(out, tf32_model(x))
    assert np.all(out & 0x1FFF == 0)


def test_mma_m16n8k8_tf32_matches_fragment_model(drv, feat, rng):
    warps = 4
    a = rng.standard_normal((warps, 16, 8)).astype(f32)
    b = rng.standard_normal((warps, 8, 8)).astype(f32)
    c = rng.standard_normal((warps, 16, 8)).astype(f32)
    d = np.zeros_like(c)
    drv.launch(feat, "mma_tile", 2, 64, [a, b, c, d])
    at = tf32_model(a).view(f32).astype(np.float64)
    bt = tf32_model(b).view(f32).astype(np.float64)
    ref = at @ bt + c
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-5)
    # and it differs from the un-rounded fp32 product: TF32 rounding really happened
    assert np.max(np.abs(d - (a.astype(np.float64) @ b + c))) > 1e-4


@pytest.mark.parametrize("n", [128, 130, 253])
def test_cp_async_copy_and_zero_fill(drv, feat, rng, n):
    x = rng.standard_normal(n).astype(f32)
    y = np.zeros(n, f32)
    drv.launch(feat, "cp_async_copy", (n + 127) // 128, 32, [x, y, i32(n)])
    np.testing.assert_array_equal(y, 2 * x)


# ------------------------------------------------------------------ argument checks
def test_python_scalars_and_wrong_dtypes_are_rejected(drv, feat):
    x, y = np.zeros(4, f32), np.zeros(4, f32)
    with pytest.raises(TypeError, match="Python float/int"):
        drv.launch(feat, "dyn_reverse", 1, 4, [x, y, 4], shared_mem=16)
    with pytest.raises(TypeError, match="int32"):
        drv.launch(feat, "dyn_reverse", 1, 4, [x, y, np.int64(4)], shared_mem=16)
    with pytest.raises(TypeError, match="float32 but the array has dtype float64"):
        drv.launch(feat, "dyn_reverse", 1, 4, [x.astype(np.float64), y, i32(4)], shared_mem=16)
    with pytest.raises(TypeError, match="C-contiguous"):
        drv.launch(feat, "dyn_reverse", 1, 4, [np.zeros(8, f32)[::2], y, i32(4)], shared_mem=16)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        drv.launch(feat, "dyn_reverse", 1, 4, [x, y], shared_mem=16)
    with pytest.raises(KernelError, match="not an extern"):
        drv.launch(feat, "no_such_kernel", 1, 4, [x])
    with pytest.raises(KernelError, match="exceeds the CUDA limits"):
        drv.launch(feat, "dyn_reverse", 1, 2048, [x, y, i32(4)])


def test_compile_error_raises_kernel_error_with_gcc_message(drv, tmp_path, own_cache):
    src = tmp_path / "bad.cu"
    src.write_text('extern "C" __global__ void k(float* y) { y[0] = undefined_name; }\n')
    with pytest.raises(KernelError, match="undefined_name"):
        drv.load(str(src))


def test_cache_rebuilds_an_edited_kernel(tmp_path, own_cache):
    src = tmp_path / "edit.cu"
    body = 'extern "C" __global__ void k(float* y) {{ y[threadIdx.x] = {}.0f; }}\n'
    src.write_text(body.format(1))
    y = np.zeros(4, f32)
    EmuDriver().launch(EmuDriver().load(str(src)), "k", 1, 4, [y])
    assert np.all(y == 1)
    src.write_text(body.format(2))
    t0 = time.perf_counter()
    d = EmuDriver()
    d.launch(d.load(str(src)), "k", 1, 4, [y])
    assert np.all(y == 2)
    # the first version is still cached: loading it again does not compile
    src.write_text(body.format(1))
    t0 = time.perf_counter()
    d = EmuDriver()
    d.launch(d.load(str(src)), "k", 1, 4, [y])
    assert np.all(y == 1) and time.perf_counter() - t0 < 0.5


def test_extern_c_block_macro_kernels_and_partial_warps(tmp_path, own_cache):
    src = tmp_path / "forms.cu"
    src.write_text(
        "#define DEF(T, S) extern \"C\" __global__ void __launch_bounds__(64) fill_##S(T* y) "
        "{ y[threadIdx.x] = (T)threadIdx.x; }\n"
        "DEF(float, f32)\nDEF(double, f64)\n"
        "template <class T> __global__ void hidden(T* y) { y[0] = 1; }\n"
        "extern \"C\" {\n"
        "__global__ void shift(const int* __restrict__ x, int* y) {\n"
        "    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, x[threadIdx.x], 1);\n}\n}\n")
    d = EmuDriver()
    mod = d.load(str(src))
    assert mod.kernels == ["fill_f32", "fill_f64", "shift"]
    y = np.zeros(8, np.float64)
    d.launch(mod, "fill_f64", 1, 8, [y])
    np.testing.assert_array_equal(y, np.arange(8))
    # 40 threads: the second warp has 8 lanes; a full mask means "the lanes that exist"
    x = np.arange(40, dtype=i32)
    out = np.zeros(40, i32)
    d.launch(mod, "shift", 1, 40, [x, out])
    expect = np.concatenate([np.r_[1:32, 31], np.r_[33:40, 39]])
    np.testing.assert_array_equal(out, expect)


def test_checking_modes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLPACCEL_EMU_CHECK", "1")
    d = EmuDriver()
    assert d.schedules == ("forward", "reverse") and d.check_bounds
    monkeypatch.setenv("MLPACCEL_EMU_SCHEDULES", "reverse,shuffle")
    monkeypatch.setenv("MLPACCEL_EMU_WORKERS", "3")
    d = EmuDriver(check_bounds=False)
    assert d.schedules == ("reverse", "shuffle") and not d.check_bounds and d.workers == 3
    with pytest.raises(ValueError, match="unknown schedule"):
        EmuDriver(schedules=("backwards",))


def test_zero_dim_arrays_in_checked_mode(rng):
    d = EmuDriver(schedules=("forward", "reverse"), check_bounds=True)
    mod = d.load(FEATURES)
    y = np.array(2.0, f32)  # 0-d output, as a scalar loss would be
    d.launch(mod, "axpy_f32", 1, 32, [np.array(3.0, f32), y, f32(2), i32(1)])
    assert float(y) == 8.0


def test_info_says_emulator(drv):
    info = drv.info()
    assert info["emulator"] is True and "slow by design" in info["note"]
    assert info["compiler"] and info["driver"] == "emu"


# ------------------------------------------------------------------ the three bug classes
def test_a_missing_syncthreads_is_caught_by_two_schedules(rng):
    d = EmuDriver(schedules=("forward", "reverse"))
    mod = d.load(BROKEN)
    m = n = k = 32
    a = rng.standard_normal((m, k)).astype(f32)
    b = rng.standard_normal((k, n)).astype(f32)
    c = np.zeros((m, n), f32)
    with pytest.raises(KernelError, match=r"gemm_missing_sync.*differ between thread schedules"):
        d.launch(mod, "gemm_missing_sync", (2, 2), (16, 16), [a, b, c, i32(m), i32(n), i32(k)])
    x = rng.standard_normal(512).astype(f32)
    with pytest.raises(KernelError, match="reduce_missing_sync.*data race"):
        d.launch(mod, "reduce_missing_sync", 2, 256, [x, np.zeros(2, f32)])
    # the correct kernel passes the same check, under a shuffled schedule too
    ok = EmuDriver(schedules=("forward", "reverse", "shuffle"))
    d2 = ok.load(FEATURES)
    ok.launch(d2, "tiled_gemm_f32", (2, 2), (16, 16), [a, b, c, i32(m), i32(n), i32(k)])
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_b_out_of_bounds_edge_tile_is_caught_with_guard_pages(rng):
    d = EmuDriver(check_bounds=True)
    mod = d.load(BROKEN)
    n = 100  # two tiles of 64: the second runs 28 elements past the end
    x = rng.standard_normal(n).astype(f32)
    y = np.zeros(n, f32)
    with pytest.raises(KernelError, match=r"copy_no_edge_check.*out-of-bounds read of argument "
                                          r"0 \('x'"):
        d.launch(mod, "copy_no_edge_check", 2, 64, [x, y, i32(n)])
    with pytest.raises(KernelError, match=r"write_one_past.*out-of-bounds write.*argument 0 "
                                          r"\('y'\)"):
        d.launch(mod, "write_one_past", 1, 32, [np.zeros(5, f32), i32(5)])
    # the unchecked driver does not see it (that is why the checked mode exists) ...
    EmuDriver().launch(mod, "write_one_past", 1, 32, [np.zeros(8, f32), i32(5)])
    # ... and a correct kernel passes the checked mode with the right result
    good = d.load(FEATURES)
    y2 = np.zeros(n, f32)
    d.launch(good, "dyn_reverse", 1, 128, [x, y2, i32(n)], shared_mem=512)
    src = 127 - np.arange(n)
    np.testing.assert_array_equal(y2, np.where(src < n, x[np.minimum(src, n - 1)], -1.0))


@pytest.mark.parametrize("bounds,schedules", [(True, ("forward",)), (False, ("forward", "reverse")),
                                              (True, ("forward", "shuffle"))])
def test_checked_modes_keep_in_place_aliasing_and_read_only_inputs(rng, bounds, schedules):
    d = EmuDriver(schedules=schedules, check_bounds=bounds)
    mod = d.load(FEATURES)
    y = rng.standard_normal(300).astype(f32)
    expect = 3 * y
    d.launch(mod, "axpy_f32", 2, 256, [y, y, f32(2), i32(y.size)])  # in place: x is y
    np.testing.assert_allclose(y, expect, rtol=1e-6)
    x = rng.standard_normal(300).astype(f32)
    x.setflags(write=False)
    z = np.ones(300, f32)
    d.launch(mod, "axpy_f32", 2, 256, [x, z, f32(1), i32(300)])
    np.testing.assert_allclose(z, x + 1, rtol=1e-6)


def test_c_barrier_divergence_is_an_error_not_a_hang(drv, broken, rng):
    x = rng.standard_normal(64).astype(f32)
    t0 = time.perf_counter()
    with pytest.raises(KernelError, match=r"early_return_then_sync.*barrier divergence: threads "
                                          r"0-39 wait.*threads 40-63 have already exited"):
        drv.launch(broken, "early_return_then_sync", 1, 64, [x, np.zeros(64, f32), i32(40)])
    with pytest.raises(KernelError, match="sync_in_branch.*different one"):
        drv.launch(broken, "sync_in_branch", 1, 32, [np.zeros(32, f32)])
    with pytest.raises(KernelError, match="shuffle_after_exit.*already exited"):
        drv.launch(broken, "shuffle_after_exit", 1, 32, [x, np.zeros(64, f32)])
    assert time.perf_counter() - t0 < 5
    # with every thread reaching the barrier the same kernel is fine
    y = np.zeros(64, f32)
    drv.launch(broken, "early_return_then_sync", 1, 64, [x, y, i32(64)])
    np.testing.assert_array_equal(y, x[::-1])


def test_unchecked_crash_becomes_kernel_error(drv, tmp_path, own_cache):
    src = tmp_path / "crash.cu"
    src.write_text('extern "C" __global__ void k(float* y) { ((float*)16)[threadIdx.x] = 1; }\n')
    mod = drv.load(str(src))
    with pytest.raises(KernelError, match="crashed: .*segmentation fault"):
        drv.launch(mod, "k", 1, 4, [np.zeros(4, f32)])


def test_stack_overflow_of_an_emulated_thread_is_reported(drv, tmp_path, own_cache):
    src = tmp_path / "deep.cu"
    src.write_text('extern "C" __global__ void k(float* y, int n) {\n'
                   '    volatile float big[100000];\n'  # 400 KB of locals > 128 KB stack
                   '    for (int i = 0; i < n; i++) big[i] = i;\n'
                   '    y[threadIdx.x] = big[n - 1];\n}\n')
    mod = drv.load(str(src))
    with pytest.raises(KernelError, match="stack overflow"):
        drv.launch(mod, "k", 1, 2, [np.zeros(2, f32), i32(100000)])


def test_emulated_gemm_speed(feat):
    """Emulated GFLOP/s of the 16x16 tiled GEMM at 256^3 (reported, loosely bounded)."""
    d = EmuDriver(workers=2)
    n = 256
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(f32)
    b = rng.standard_normal((n, n)).astype(f32)
    c = np.zeros((n, n), f32)
    t0 = time.perf_counter()
    d.launch(feat, "tiled_gemm_f32", (16, 16), (16, 16), [a, b, c, i32(n), i32(n), i32(n)])
    dt = time.perf_counter() - t0
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    gflops = 2 * n**3 / dt / 1e9
    print(f"\nemulated tiled GEMM 256^3 f32: {dt * 1e3:.0f} ms, {gflops:.3f} GFLOP/s")
    assert dt < 30


def test_real_kernels_compile_under_the_emulator():
    kdir = Path(__file__).resolve().parent.parent / "kernels"
    sources = sorted(kdir.glob("*.cu"))
    if not sources:
        pytest.skip("no kernels/*.cu yet")
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    d = EmuDriver()
    for src in sources:
        assert d.load(src.stem).kernels, f"{src.name} has no extern \"C\" __global__ kernels"


def test_positive_is_exact_under_flush_to_zero(drv):
    """CuPy compiles with -ftz=true: a GPU compare reads a float32 subnormal as 0 (an H200 gave
    step(1.7e-41) = 0). mlp::positive compares the bits instead. The probe kernel sets the x86
    DAZ/FTZ mode around the compare, so the emulator shows the flush and the fix."""
    z = np.array([1.7056e-41, 1e-45, -1e-45, 1.2e-38, 0.0, -0.0, 3.0, -3.0, np.inf, -np.inf,
                  np.nan], f32)
    plain, bits = np.zeros(z.size, i32), np.zeros(z.size, i32)
    drv.launch(drv.load(str(HERE / "ftz_probe.cu")), "sign_probe", 1, 32,
               [z, plain, bits, i32(z.size)])
    np.testing.assert_array_equal(bits, [1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0])  # == (z > 0) exactly
    np.testing.assert_array_equal(plain[:2], [0, 0])  # the flush this guards against


# ---------------------------------------------------------------- wgmma (warpgroup collective)
WGMMA_PROBE = str(HERE / "wgmma_probe.cu")


def _tf32_trunc(x: np.ndarray) -> np.ndarray:
    """tf32 operand as the tensor core reads an fp32 bit pattern: the low 13 bits ignored."""
    return (np.asarray(x, f32).view(np.uint32) & np.uint32(0xFFFFE000)).view(f32)


def _canonical_kmajor_image(b: np.ndarray, start: int, lbo: int, sbo: int, nbytes: int):
    """Shared-memory bytes holding B (8 x N) at byte offset ``start`` in the PTX ISA's
    canonical K-major no-swizzle layout ((8,m),(T,2k)):((1T,SBO),(1,LBO)), T = 4 tf32: element
    (k, n) at start + (n/8)*SBO + (n%8)*16 + (k/4)*LBO + (k%4)*4. Every other byte is NaN, so
    a read from the wrong place shows in the result."""
    img = np.full(nbytes // 4, np.nan, f32)
    for n in range(b.shape[1]):
        for k in range(8):
            off = start + (n // 8) * sbo + (n % 8) * 16 + (k // 4) * lbo + (k % 4) * 4
            img[off // 4] = b[k, n]
    return img


@pytest.mark.parametrize("n,start,lbo,sbo", [(128, 48, 144 * 16 + 64, 144),  # LBO > SBO
                                             (256, 0, 128, 256),            # pairs of cores
                                             (128, 1040, 272, 544)])
@pytest.mark.parametrize("scale_d", [0, 1])
def test_wgmma_descriptor_and_fragments_follow_the_ptx_definition(drv, rng, n, start, lbo, sbo,
                                                                  scale_d):
    """One emulated wgmma.mma_async m64nNk8 .tf32 (RS) on a hand-built descriptor (built bit by
    bit in the probe kernel, not by common.cuh's wgmma_desc) over a B laid out here from the
    PTX canonical-layout formula: D = A * B (+ D when scale-d), fragments placed by the PTX
    A / D layouts, inputs read as tf32 (low 13 bits ignored)."""
    mod = drv.load(WGMMA_PROBE)
    a = rng.standard_normal((64, 8)).astype(f32)
    b = rng.standard_normal((8, n)).astype(f32)
    d0 = rng.standard_normal((64, n)).astype(f32)
    nbytes = start + lbo + (n // 8) * sbo + 256
    nbytes += (-nbytes) % 16
    img = _canonical_kmajor_image(b, start, lbo, sbo, nbytes)
    d = d0.copy()
    drv.launch(mod, f"wgmma_probe_n{n}", 1, 128,
               [img, i32(nbytes), a, d, i32(start), i32(lbo), i32(sbo), i32(0), i32(scale_d)],
               nbytes)
    want = _tf32_trunc(a).astype(np.float64) @ _tf32_trunc(b).astype(np.float64)
    if scale_d:
        want += d0
    np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-5)


def test_wgmma_impossible_cases_are_errors_not_hangs(drv, rng):
    mod = drv.load(WGMMA_PROBE)
    a = rng.standard_normal((64, 8)).astype(f32)
    nbytes = 4096
    img = np.zeros(nbytes // 4, f32)
    d = np.zeros((64, 128), f32)
    args = [img, i32(nbytes), a, d, i32(0), i32(128), i32(256)]
    with pytest.raises(KernelError, match="swizzle mode 1"):  # only no-swizzle is emulated
        drv.launch(mod, "wgmma_probe_n128", 1, 128, args + [i32(1), i32(0)], nbytes)
    with pytest.raises(KernelError, match="outside the block's dynamic shared memory"):
        drv.launch(mod, "wgmma_probe_n128", 1, 128,
                   [img, i32(nbytes), a, d, i32(0), i32(128), i32(512), i32(0), i32(0)], nbytes)
    with pytest.raises(KernelError, match="whole warpgroup of 128 threads"):
        drv.launch(mod, "wgmma_probe_n128", 1, 96, args + [i32(0), i32(0)], nbytes)
    with pytest.raises(KernelError, match="already exited"):
        drv.launch(mod, "wgmma_probe_early_exit", 1, 128, [img, i32(nbytes), a, d], nbytes)


@pytest.mark.cuda
@pytest.mark.parametrize("n,start,lbo,sbo", [(128, 48, 144 * 16 + 64, 144),
                                             (256, 0, 128, 256),
                                             (128, 1040, 272, 544)])
def test_wgmma_probe_on_the_gpu_agrees_with_the_ptx_definition(rng, n, start, lbo, sbo):
    """The same probe on an sm_90 GPU (compiled for sm_90a by the driver's NVRTC path): the
    hardware's reading of the hand-built descriptor and of the A / D fragments must give the
    product the emulator's PTX reading gives. Inputs are exact tf32 values, so the result does
    not depend on how the tensor core rounds fp32 operands; a layout misreading shows as O(1)
    errors (the image is NaN wherever B is not)."""
    try:
        import cupy

        from mlpaccel.backends.cuda import CupyDriver, _Module
        gpu = CupyDriver()
    except Exception as exc:  # noqa: BLE001 - no CuPy / device
        pytest.skip(f"no usable CUDA device: {exc}")
    if (gpu.props.get("major"), gpu.props.get("minor")) != (9, 0):
        pytest.skip("wgmma needs compute capability 9.0 (sm_90a)")
    from mlpaccel._paths import kernel_dir

    code = Path(WGMMA_PROBE).read_text()
    raw = gpu._load_for_arch("wgmma_probe", code, ("--std=c++17", f"-I{kernel_dir()}"),
                             "sm_90a")
    mod = _Module("wgmma_probe", raw)
    a = _tf32_trunc(rng.standard_normal((64, 8)).astype(f32))
    b = _tf32_trunc(rng.standard_normal((8, n)).astype(f32))
    d0 = rng.standard_normal((64, n)).astype(f32)
    nbytes = start + lbo + (n // 8) * sbo + 256
    nbytes += (-nbytes) % 16
    img = _canonical_kmajor_image(b, start, lbo, sbo, nbytes)
    for scale_d in (0, 1):
        d = cupy.asarray(d0)
        gpu.launch(mod, f"wgmma_probe_n{n}", 1, 128,
                   [cupy.asarray(img), i32(nbytes), cupy.asarray(a), d, i32(start), i32(lbo),
                    i32(sbo), i32(0), i32(scale_d)], nbytes)
        gpu.synchronize()
        want = a.astype(np.float64) @ b.astype(np.float64) + (d0 if scale_d else 0.0)
        np.testing.assert_allclose(cupy.asnumpy(d), want, rtol=1e-5, atol=1e-5)
