"""mlpaccel.datasets: generators' geometry, IDX reading + md5, downloader, CSV, split, scaling."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from mlpaccel import datasets as ds

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                  reason=f"{SHARED} (the IDX files) not present")


# ----------------------------------------------------------------------------- gates
@pytest.mark.parametrize("name,fn", [
    ("and", lambda a, b: a & b), ("OR", lambda a, b: a | b), ("nand", lambda a, b: 1 - (a & b)),
    ("nor", lambda a, b: 1 - (a | b)), ("xor", lambda a, b: a ^ b),
    ("xnor", lambda a, b: 1 - (a ^ b))])
def test_gates_match_the_boolean_function(name, fn):
    X, y = ds.logic_gate(name)
    a, b = X.astype(int).T
    assert X.shape == (4, 2) and y.dtype == np.int64
    assert sorted(map(tuple, X.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert y.tolist() == fn(a, b).tolist()


def test_unknown_gate_lists_the_valid_names():
    with pytest.raises(ValueError, match="xnor"):
        ds.logic_gate("xand")


# ----------------------------------------------------------------------------- Playground
@pytest.mark.parametrize("name", ["circle", "xor", "gauss", "spiral"])
def test_playground_sets_are_seeded_shaped_and_balanced(name):
    gen = ds.PLAYGROUND[name]
    X1, y1 = gen(301, noise=0.0, random_state=7)
    X2, y2 = gen(301, noise=0.0, random_state=7)
    X3, _ = gen(301, noise=0.0, random_state=8)
    assert X1.shape == (301, 2) and y1.shape == (301,) and X1.dtype == np.float64
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    assert set(np.unique(y1)) == {0, 1}
    if name != "xor":  # xor labels come from the quadrant, not a per-class count
        assert abs(int(y1.sum()) - 150) <= 1


def test_circle_geometry_without_noise():
    X, y = ds.circle(2000, random_state=0)
    r = np.hypot(X[:, 0], X[:, 1])
    assert np.all(r[y == 1] <= 2.5) and np.all(r[y == 0] >= 3.5) and np.all(r <= 5)
    # with noise, the label is judged on a jittered point: some points change side
    Xn, yn = ds.circle(2000, noise=0.5, random_state=0)
    rn = np.hypot(Xn[:, 0], Xn[:, 1])
    assert np.any((rn <= 2.5) & (yn == 0)) and np.all(rn <= 5)


def test_xor_geometry_has_padding_and_quadrant_labels():
    X, y = ds.xor(2000, random_state=1)
    assert np.all(np.abs(X) >= 0.3) and np.all(np.abs(X) <= 5.3)
    np.testing.assert_array_equal(y, (X[:, 0] * X[:, 1] >= 0).astype(int))


def test_gauss_centres_and_noise_variance():
    X, y = ds.gauss(4000, random_state=2)
    np.testing.assert_allclose(X[y == 1].mean(0), [2, 2], atol=0.1)
    np.testing.assert_allclose(X[y == 0].mean(0), [-2, -2], atol=0.1)
    np.testing.assert_allclose(X[y == 1].var(0), [0.5, 0.5], rtol=0.15)
    Xn, yn = ds.gauss(4000, noise=0.5, random_state=2)  # Playground: noise 0.5 -> variance 4
    np.testing.assert_allclose(Xn[yn == 1].var(0), [4, 4], rtol=0.15)


def test_spiral_geometry_matches_dataset_ts():
    X, y = ds.spiral(8, random_state=0, shuffle=False)
    # class 0 (deltaT = pi) first when unshuffled; point i of m=4: r = 5 i / 4, t = 3.5 pi i / 4
    i = np.arange(4)
    t = 1.75 * i / 4 * 2 * np.pi
    r = i / 4 * 5
    np.testing.assert_allclose(X[y == 1], np.column_stack([r * np.sin(t), r * np.cos(t)]),
                               atol=1e-12)
    np.testing.assert_allclose(X[y == 0], np.column_stack([r * np.sin(t + np.pi),
                                                           r * np.cos(t + np.pi)]), atol=1e-12)


@pytest.mark.parametrize("bad", [dict(n_samples=0), dict(noise=-0.1), dict(noise=float("nan")),
                                 dict(random_state="x"), dict(n_samples=2.5)])
def test_playground_rejects_bad_arguments(bad):
    with pytest.raises((ValueError, TypeError)):
        ds.spiral(**{"n_samples": 10, **bad})


def test_blobs_are_two_separable_ish_classes():
    X, y = ds.make_classification(n_samples=400, random_state=3, flip_y=0.0)
    assert X.shape == (400, 2) and set(np.unique(y)) == {0, 1}
    assert np.bincount(y).tolist() == [200, 200]
    X2, y2 = ds.blobs(n_samples=400, random_state=3, flip_y=0.0)
    np.testing.assert_array_equal(X, X2)
    with pytest.raises(ValueError, match="hypercube"):
        ds.make_classification(n_features=1, n_classes=2, n_clusters_per_class=2)


def test_load_by_name_and_did_you_mean():
    X, y = ds.load("gate-xnor")
    assert y.tolist() == [1, 0, 0, 1]
    assert ds.load("spiral", n_samples=20)[0].shape == (20, 2)
    with pytest.raises(ValueError, match="did you mean 'spiral'"):
        ds.load("spirl")


# ----------------------------------------------------------------------------- digits
def test_digits_through_sklearn():
    pytest.importorskip("sklearn")
    X, y = ds.digits(normalize=True)
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert 0.0 <= X.min() and X.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_digits_without_sklearn_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"mlpaccel\[sklearn\]"):
        ds.digits()


# ----------------------------------------------------------------------------- IDX
def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def test_parse_idx_round_trip_and_errors(rng):
    arr = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    np.testing.assert_array_equal(ds.parse_idx(_idx_bytes(arr)), arr)
    with pytest.raises(ds.DatasetFormatError, match="truncated"):
        ds.parse_idx(_idx_bytes(arr)[:-1])
    with pytest.raises(ds.DatasetFormatError, match="magic"):
        ds.parse_idx(b"\x1f\x8b\x08\x00" + b"\0" * 20)


def _fake_set(folder: Path, rng, n_train=6, n_test=3, gz=True):
    """Write a tiny IDX set and return an IdxSet whose md5s describe it."""
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    arrays = {ds.idx.TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28)),
              ds.idx.TRAIN_LABELS: rng.integers(0, 10, n_train),
              ds.idx.TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28)),
              ds.idx.TEST_LABELS: rng.integers(0, 10, n_test)}
    for stem, arr in arrays.items():
        data = _idx_bytes(arr)
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        md5s[stem] = ds.md5sum(path)
    spec = ds.idx.IdxSet("tiny", ("http://127.0.0.1:9/",), md5s if gz else {},
                         {} if gz else md5s)
    return spec, arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_set_raw_or_gz_flatten_normalize(tmp_path, rng, gz):
    spec, arrays = _fake_set(tmp_path / "tiny", rng, gz=gz)
    (Xtr, ytr), (Xte, yte) = ds.idx.load_idx_set(spec, tmp_path)
    assert Xtr.shape == (6, 784) and Xtr.dtype == np.float32 and Xte.shape == (3, 784)
    np.testing.assert_allclose(Xtr * 255, arrays[ds.idx.TRAIN_IMAGES].reshape(6, -1), atol=1e-4)
    np.testing.assert_array_equal(yte, arrays[ds.idx.TEST_LABELS])
    (Xr, _), _ = ds.idx.load_idx_set(spec, tmp_path / "tiny", flatten=False, normalize=False)
    assert Xr.dtype == np.uint8 and Xr.shape == (6, 28, 28)
    np.testing.assert_array_equal(Xr, arrays[ds.idx.TRAIN_IMAGES])


def test_idx_md5_mismatch_and_missing_files_are_clear(tmp_path, rng):
    spec, _ = _fake_set(tmp_path / "tiny", rng)
    bad = tmp_path / "tiny" / (ds.idx.TEST_LABELS + ".gz")
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(ds.ChecksumError, match="md5"):
        ds.idx.load_idx_set(spec, tmp_path)
    bad.unlink()
    with pytest.raises(ds.DatasetNotFoundError, match="download=True"):
        ds.idx.load_idx_set(spec, tmp_path)


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MLPACCEL_DATA", str(tmp_path / "env"))
    assert ds.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert ds.data_root() == tmp_path / "env"
    monkeypatch.delenv("MLPACCEL_DATA")
    monkeypatch.setenv("MLPACCEL_CACHE", str(tmp_path / "cache"))
    assert ds.data_root() == tmp_path / "cache" / "datasets"


@needs_shared
def test_real_mnist_from_env_matches_published_facts(monkeypatch):
    monkeypatch.setenv("MLPACCEL_DATA", str(SHARED))
    (Xtr, ytr), (Xte, yte) = ds.mnist(normalize=False)
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784) and Xtr.dtype == np.uint8
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                         5851, 5949]
    assert Xtr.mean() == pytest.approx(33.318, abs=1e-3)


@needs_shared
def test_real_fashion_mnist_28x28(tmp_path):
    (Xtr, ytr), (Xte, yte) = ds.fashion_mnist(SHARED / "fashion-mnist", flatten=False,
                                              normalize=False)
    assert Xtr.shape == (60000, 28, 28) and Xtr.dtype == np.uint8 and Xtr.max() == 255
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    assert Xtr.mean() == pytest.approx(72.94, abs=0.01)


@needs_shared
def test_published_md5_table_matches_the_shared_files():
    for spec in (ds.MNIST, ds.FASHION_MNIST):
        for stem, md5 in spec.md5_gz.items():
            assert ds.md5sum(SHARED / spec.name / (stem + ".gz")) == md5
        raw = SHARED / spec.name / (ds.idx.TEST_LABELS + ".gz")
        assert (__import__("hashlib").md5(gzip.decompress(raw.read_bytes())).hexdigest()
                == spec.md5_raw[ds.idx.TEST_LABELS])


# ----------------------------------------------------------------------------- download
@pytest.fixture
def http_server():
    """Serve ../shared/data on 127.0.0.1 (ephemeral port) from a thread; yields the base URL."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    handler = functools.partial(_QuietHandler, directory=str(SHARED))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_download_mnist_from_local_mirror_with_fallback(tmp_path, http_server):
    dead = "http://127.0.0.1:9/"  # discard port: refused at once
    (Xtr, ytr), (Xte, yte) = ds.mnist(tmp_path, download=True, progress=False, normalize=False,
                                      mirrors=[dead, http_server + "nothing-here/",
                                               http_server + "mnist/"])
    assert Xtr.shape == (60000, 784) and yte.shape == (10000,)
    files = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert files == sorted(f + ".gz" for f in ds.idx.FILES)  # no temp files left behind
    # a second call reads the cached files without any mirror
    (X2, _), _ = ds.mnist(tmp_path, mirrors=[dead], normalize=False)
    np.testing.assert_array_equal(X2, Xtr)


def test_download_only_missing_files_and_rejects_wrong_md5(tmp_path, http_server):
    # fashion-mnist's files served under mnist's names: md5 mismatch on every file -> error
    target = tmp_path / "mnist"
    target.mkdir()
    for stem in ds.idx.FILES[1:]:  # all but train-images already present
        shutil.copy(SHARED / "mnist" / (stem + ".gz"), target)
    with pytest.raises(ds.DownloadError, match="md5"):
        ds.mnist(tmp_path, download=True, progress=False,
                 mirrors=[http_server + "fashion-mnist/"])
    assert sorted(os.listdir(target)) == sorted(f + ".gz" for f in ds.idx.FILES[1:])
    path = ds.download(ds.idx.TRAIN_LABELS + ".gz", tmp_path / "x", [http_server + "mnist/"],
                       md5=ds.MNIST.md5_gz[ds.idx.TRAIN_LABELS], progress=True)
    assert ds.md5sum(path) == ds.MNIST.md5_gz[ds.idx.TRAIN_LABELS]


def test_download_offline_error_names_every_mirror(tmp_path):
    with pytest.raises(ds.DownloadError) as info:
        ds.download("a.gz", tmp_path, ["http://127.0.0.1:9/", "http://127.0.0.1:9/b/"],
                    timeout=2, progress=False)
    text = str(info.value)
    assert "offline" in text and "127.0.0.1:9/a.gz" in text and "127.0.0.1:9/b/a.gz" in text
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CSV
def test_load_csv_header_names_text_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,kind\n1,2,cat\n3,4.5,dog\n\n5,6,cat\n")
    X, y, classes = ds.load_csv(f, target="kind", return_classes=True)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4.5], [5, 6]])
    assert y.tolist() == [0, 1, 0] and classes.tolist() == ["cat", "dog"]


def test_load_csv_numeric_target_index_and_regression(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("1,0.5,7\n0,1.5,8\n")
    X, y = ds.load_csv(f, target=0)
    assert y.dtype == np.int64 and y.tolist() == [1, 0]
    np.testing.assert_array_equal(X, [[0.5, 7], [1.5, 8]])
    _, yr = ds.load_csv(f, target=1)
    assert yr.dtype == np.float64 and yr.tolist() == [0.5, 1.5]


@pytest.mark.parametrize("text,kwargs,err", [
    ("a,b\n1,2\n3\n", {}, ds.DatasetFormatError),
    ("a,b\n1,x\n", {"target": 0}, ds.DatasetFormatError),
    ("a,b\n1,2\n", {"target": "c"}, ValueError),
    ("1,2\n", {"target": "a"}, ValueError),
    ("1,2\n", {"target": 5}, ValueError),
    ("", {}, ds.DatasetFormatError),
])
def test_load_csv_errors(tmp_path, text, kwargs, err):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(err):
        ds.load_csv(f, **kwargs)


# ----------------------------------------------------------------------------- split, scale
def test_train_test_split_partitions_and_stratifies(rng):
    X = np.arange(200, dtype=float).reshape(100, 2)
    y = np.array([0] * 80 + [1] * 20)
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=0.3, random_state=0)
    assert len(Xte) == 30 and len(Xtr) == 70
    assert sorted(np.concatenate([Xtr[:, 0], Xte[:, 0]]).tolist()) == X[:, 0].tolist()
    _, _, ytr_s, yte_s = ds.train_test_split(X, y, test_size=0.25, random_state=1, stratify=True)
    assert np.bincount(yte_s).tolist() == [20, 5] and np.bincount(ytr_s).tolist() == [60, 15]
    again = ds.train_test_split(X, y, test_size=0.3, random_state=0)
    np.testing.assert_array_equal(again[0], Xtr)
    for bad in (0.0, 1.0, 100, "a"):
        with pytest.raises((ValueError, TypeError)):
            ds.train_test_split(X, y, test_size=bad)
    with pytest.raises(ValueError, match="rows"):
        ds.train_test_split(X, y[:-1])


def test_split_keeps_labels_with_rows(rng):
    X = rng.normal(size=(50, 3))
    y = np.arange(50)
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=10, random_state=5)
    np.testing.assert_array_equal(Xtr, X[ytr])
    np.testing.assert_array_equal(Xte, X[yte])


def test_standardize_returns_and_reuses_stats(rng):
    X = rng.normal(3.0, 2.0, size=(200, 3))
    X[:, 2] = 4.0  # a constant column is divided by 1, not 0
    Z, mean, std = ds.standardize(X)
    np.testing.assert_allclose(Z[:, :2].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z[:, :2].std(0), 1, atol=1e-12)
    assert np.all(Z[:, 2] == 0) and std[2] == 1
    Z2, m2, s2 = ds.standardize(X[:10], mean, std)
    np.testing.assert_allclose(Z2, Z[:10])
    with pytest.raises(ValueError, match="2-D"):
        ds.standardize(X[:, 0])
    with pytest.raises(ValueError, match="one value per column"):
        ds.standardize(X, mean=[0, 0], std=[1, 1])
