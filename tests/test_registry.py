"""Backend selection: names, aliases, auto, errors, lazy imports."""

import subprocess
import sys

import pytest

import mlpaccel
from mlpaccel.backends import get_backend


def test_import_is_lazy_and_fast():
    code = ("import sys, time; t = time.perf_counter(); import mlpaccel; "
            "dt = time.perf_counter() - t; "
            "assert 'numba' not in sys.modules and 'cupy' not in sys.modules, sys.modules.keys(); "
            "print(dt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1.0


def test_aliases_resolve_to_the_same_instance():
    assert get_backend("cpu") is get_backend("numpy")
    assert get_backend("numpy").name == "numpy"


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="did you mean 'numba'") as exc:
        get_backend("numbaa")
    assert "python" in str(exc.value) and "cuda" in str(exc.value)


def test_auto_respects_env(monkeypatch):
    monkeypatch.setenv("MLPACCEL_BACKEND", "numpy")
    assert get_backend("auto").name == "numpy"


def test_auto_never_picks_the_emulator(monkeypatch):
    monkeypatch.delenv("MLPACCEL_BACKEND", raising=False)
    assert get_backend("auto").name in {"cuda", "numba", "numpy"}


def test_unavailable_backend_raises_typed_error(monkeypatch):
    from mlpaccel.backends import Backend, register_backend

    class Broken(Backend):
        name = "broken"

        @classmethod
        def _probe(cls):
            return "needs the 'broken' extra: pip install mlpaccel[broken]"

    register_backend("broken", Broken)
    try:
        assert "broken" not in mlpaccel.available_backends()
        with pytest.raises(mlpaccel.BackendUnavailableError, match=r"pip install"):
            get_backend("broken")
        assert isinstance(mlpaccel.BackendUnavailableError("x"), RuntimeError)
    finally:
        from mlpaccel import backends

        backends._REGISTRY.pop("broken")
        backends.backend_class.cache_clear()
