"""An installed wheel (not only the editable checkout) finds its CUDA kernel sources.

The wheel is built from a copy of the project's sources (so the build writes nothing into the
working tree), installed with ``pip install --target`` into a fresh folder, and imported in a
subprocess whose cwd and PYTHONPATH exclude the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what a wheel build reads; anything else (tests, bench, .venv, results) stays behind
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg",
           "mlpaccel", "kernels"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", "build")

PROBE = """
import json, mlpaccel, mlpaccel._paths as p
d = p.kernel_dir()
print(json.dumps({"package": mlpaccel.__file__, "kernel_dir": str(d),
                  "cu": sorted(f.name for f in d.glob("*.cu"))}))
"""


def _build_backend_missing() -> str | None:
    """Why ``pip wheel --no-build-isolation`` cannot work in this interpreter, or None."""
    try:
        import setuptools
        import wheel  # noqa: F401  (setuptools < 70.1 needs it for bdist_wheel)
    except ImportError as exc:
        return f"{exc.name} is not installed"
    if int(setuptools.__version__.split(".")[0]) < 77:
        return f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement)"
    return None


def _pip(*args, cwd):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr}"


def test_installed_wheel_finds_its_kernels(tmp_path):
    missing = _build_backend_missing()
    if missing:
        pytest.skip(f"cannot build a wheel without isolation here: {missing}; "
                    "pip install -e '.[test]'")
    src_cu = sorted(f.name for f in (ROOT / "kernels").glob("*.cu"))
    assert src_cu, "kernels/ holds no .cu file: nothing for the cuda backend to compile"

    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=IGNORE)
        elif path.exists():
            shutil.copy2(path, src / name)
    wheels, target, run_dir = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    run_dir.mkdir()
    _pip("wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         cwd=tmp_path)
    (wheel,) = wheels.glob("mlpaccel-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(Path(n).name for n in zf.namelist()
                         if n.startswith("mlpaccel/kernels/") and n.endswith(".cu"))
    assert shipped == src_cu, f"the wheel ships kernels {shipped}, the source tree has {src_cu}"

    _pip("install", "--no-deps", "--no-compile", "-q", "--target", str(target), str(wheel),
         cwd=tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=run_dir, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["package"]).resolve().is_relative_to(target.resolve()), (
        f"imported {found['package']}, not the installed copy")
    kdir = Path(found["kernel_dir"]).resolve()
    assert kdir.is_relative_to(target.resolve()), f"kernel_dir() is {kdir}, outside {target}"
    assert found["cu"] == src_cu, f"installed kernel_dir() holds {found['cu']}, want {src_cu}"
