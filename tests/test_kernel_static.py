"""Static checks of every CUDA source with nvcc/ptxas for sm_90 (no GPU needed).

Each kernels/*.cu (and each test kernel in tests/emu_kernels/) must compile, spill no registers
and keep static shared memory within the 48 KB per-block default. Results are cached by a hash
of the sources (mlpaccel.kernel_report): a cold run of ptxas on gemm.cu takes minutes of CPU,
later runs read the cache. Skips cleanly without nvcc or with MLPACCEL_NVCC_CHECKS=0.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlpaccel import kernel_report as kr

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "kernels").glob("*.cu")) + sorted(
    (Path(__file__).parent / "emu_kernels").glob("*.cu"))

pytestmark = [
    pytest.mark.skipif(kr.nvcc_path() is None, reason="nvcc not found (CUDA toolkit absent)"),
    pytest.mark.skipif(os.environ.get("MLPACCEL_NVCC_CHECKS", "1") == "0",
                       reason="MLPACCEL_NVCC_CHECKS=0"),
]


@pytest.mark.parametrize("src", SOURCES, ids=[f"{p.parent.name}/{p.name}" for p in SOURCES])
def test_compiles_for_sm90_without_spills_and_within_static_smem(src):
    rows, errors = kr.kernel_rows([src], include=ROOT / "kernels")
    assert not errors, f"{src.name} does not compile for sm_90:\n{errors.get(src.name, '')[:3000]}"
    assert rows, f"{src.name}: ptxas reported no entry points"
    spills = [f"{r.kernel} ({r.spill_stores}/{r.spill_loads} bytes)" for r in rows
              if r.spill_stores or r.spill_loads]
    assert not spills, f"register spills in {src.name}: {', '.join(spills)}"
    big = [f"{r.kernel} ({r.smem_static} B)" for r in rows if r.smem_static > kr.SMEM_STATIC_LIMIT]
    assert not big, f"static shared memory over 48 KB in {src.name}: {', '.join(big)}"
    for r in rows:
        assert 0 < r.registers <= 255 and 0 < r.occupancy <= 1.0, r


def test_occupancy_model_matches_hand_computed_cases():
    # 32 regs, 256 threads: 8 warps of 1024 regs -> 64 warps fit: 100 %, limited by warps
    assert kr.occupancy(32, 0, 256) == (1.0, "warps")
    # 128 regs x 256 threads: 4096 regs/warp -> 16 warps -> 2 blocks of 8 warps: 25 %
    assert kr.occupancy(128, 0, 256) == (0.25, "registers")
    # 40 KB static smem + 1 KB reserved: 5 blocks of 4 warps (128 threads): 20 of 64 warps
    occ, lim = kr.occupancy(16, 40 * 1024, 128)
    assert lim == "shared memory" and occ == pytest.approx(20 / 64)
    # 32 threads: the 32-blocks-per-SM limit: 32 warps of 64
    assert kr.occupancy(16, 0, 32) == (0.5, "blocks/SM")


def test_ptxas_log_and_ptx_parsers():
    log = ("ptxas info    : Compiling entry function 'k_f32' for 'sm_90'\n"
           "ptxas info    : Function properties for k_f32\n"
           "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 4224 bytes smem\n")
    k = kr.parse_ptxas(log)["k_f32"]
    assert (k["registers"], k["spill_stores"], k["spill_loads"], k["stack"],
            k["smem_static"]) == (40, 4, 12, 8, 4224)
    ptx = (".visible .entry a_f32(\n\t.param .u64 a_f32_param_0\n)\n.maxntid 128, 2, 1\n{\n}\n"
           ".visible .entry b_f32(\n\t.param .u64 b_f32_param_0\n)\n{\n}\n")
    assert kr.parse_maxntid(ptx) == {"a_f32": 256}


def test_wgmma_sources_build_for_sm90a_with_no_spills_and_no_stack():
    """gemm_wgmma.cu (and its emulator probe) is marked for sm_90a, the target its configs ask
    the cuda driver for; every entry point: 0 spills and 0 bytes of stack."""
    from mlpaccel.backends import cuda_gemm as cg

    src = ROOT / "kernels" / "gemm_wgmma.cu"
    assert kr.source_arch(src) == "sm_90a"
    assert {c.arch for c in cg.configs() if c.module == "gemm_wgmma"} == {"sm_90a"}
    assert kr.source_arch(ROOT / "kernels" / "gemm.cu") == "sm_90"
    rows, errors = kr.kernel_rows([src], include=ROOT / "kernels")
    assert not errors, errors
    names = {r.kernel for r in rows}
    for c in cg.configs():
        if c.module == "gemm_wgmma":
            assert {f"gemm_{c.name}_{f}_v_f32" for f in c.forms} <= names
    assert all(r.stack == 0 and not r.spill_stores and not r.spill_loads for r in rows), rows
