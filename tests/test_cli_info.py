"""``mlpaccel info`` and ``python -m mlpaccel info``: every backend, available or why not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlpaccel.backends import backend_names, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # the checkout under test, installed or not
    env.pop("MLPACCEL_BACKEND", None)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr}"
    return out.stdout


def _console_script() -> str:
    """The ``mlpaccel`` entry point installed next to this interpreter."""
    script = Path(sys.executable).parent / "mlpaccel"
    found = str(script) if script.exists() else shutil.which("mlpaccel")
    if not found:
        pytest.skip("the mlpaccel console script is not installed (pip install -e .)")
    return found


def _parse_table(text: str) -> dict[str, tuple[str, str]]:
    """``  name  yes|no  details`` lines -> {name: (yes|no, details)}."""
    rows = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if line.startswith("  ") and len(parts) >= 2 and parts[1] in ("yes", "no"):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


@pytest.mark.parametrize("how", ["script", "module"])
def test_info_lists_every_backend(how):
    cmd = [_console_script(), "info"] if how == "script" else [
        sys.executable, "-m", "mlpaccel", "info"]
    rows = _parse_table(_run(cmd))
    assert set(rows) == set(backend_names())
    for name, (status, details) in rows.items():
        expected = "yes" if unavailable_reason(name) is None else "no"
        assert status == expected, f"{name}: info says {status}, the registry says {expected}"
        assert details.strip(), f"{name}: no versions (if available) or reason (if not)"
    assert rows["python"][0] == "yes" and rows["numpy"][0] == "yes"


def test_info_json():
    rows = json.loads(_run([sys.executable, "-m", "mlpaccel", "info", "--json"]))
    assert set(rows) == set(backend_names())
    for name, row in rows.items():
        assert row["available"] is (unavailable_reason(name) is None), name
        if row["available"]:
            assert row["backend"] == name
        else:
            assert isinstance(row["reason"], str) and row["reason"], name
    assert "multiply-add" in rows["python"]["model"]
    assert rows["python"]["python"].count(".") == 2  # e.g. 3.11.7
