"""``mlpaccel train`` end to end, in-process, with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlpaccel.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _run_json(capsys, *argv) -> dict:
    rc = main(["train", *argv, "--json", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_spiral_json_plot_and_save(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    res = _run_json(capsys, "--dataset", "spiral", "--n-samples", "60", "--epochs", "3",
                    "--hidden", "4,3", "--backend", "numpy", "--plot", str(tmp_path / "o.png"),
                    "--save", str(tmp_path / "model"))
    assert res["layers"] == [2, 4, 3, 2] and res["n_train"] == 48 and res["n_test"] == 12
    assert 0 <= res["test_accuracy"] <= 1 and res["fit_seconds"] > 0
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"
    from mlpaccel import MLP, datasets

    model = MLP.load(res["saved"], backend="numpy")
    X, y = datasets.spiral(60, random_state=0)
    assert model.layer_sizes == [2, 4, 3, 2] and model.predict(X).shape == (60,)


def test_xnor_is_learned_and_text_output(capsys):
    rc = main(["train", "--dataset", "xnor", "--epochs", "300", "--hidden", "4",
               "--activation", "tanh", "--lr", "0.05", "--batch-size", "0", "--backend",
               "numpy", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "accuracy  train 1.0000  test 1.0000" in out and "wall time" in out


def test_csv_with_text_target(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    rows = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{lab}" for r, lab in zip(X, labels)]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows))
    res = _run_json(capsys, "--dataset", str(path), "--target", "label", "--epochs", "40",
                    "--hidden", "8", "--backend", "numpy", "--test-size", "0.25")
    assert res["classes"] == [0, 1] and res["layers"] == [3, 8, 2] and res["n_test"] == 20
    assert res["train_accuracy"] > 0.85


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="shared MNIST files not present")
def test_mnist_from_data_dir_with_limit(capsys):
    res = _run_json(capsys, "--dataset", "mnist", "--data-dir", str(SHARED), "--limit", "300",
                    "--epochs", "1", "--hidden", "8", "--backend", "numpy",
                    "--batch-size", "100")
    assert res["layers"] == [784, 8, 10] and res["n_train"] == 300 and res["n_test"] == 10000
    assert res["test_accuracy"] > 0.1


def test_errors_are_clear(capsys, tmp_path):
    assert main(["train", "--dataset", "nope", "--quiet"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet"]) == 2
    assert "download=True" in capsys.readouterr().err
    assert main(["train", "--dataset", "xor", "--optimizer", "adamm", "--quiet",
                 "--backend", "numpy", "--epochs", "1"]) == 2
    assert "did you mean 'adam'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--hidden", "16,x"])
    assert info.value.code == 2 and "--hidden" in capsys.readouterr().err


def test_every_backend_trains_xor(capsys, backend):
    res = _run_json(capsys, "--dataset", "xor", "--n-samples", "40", "--epochs", "2",
                    "--hidden", "4", "--backend", backend.name, "--dtype", "float64")
    assert res["backend"] == backend.name and res["n_train"] == 32
