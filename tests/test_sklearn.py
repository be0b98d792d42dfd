"""mlpaccel.sklearn: scikit-learn's numbers, conventions and tools (clone, Pipeline, search)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network as sk_nn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlpaccel import datasets as ds  # noqa: E402
from mlpaccel.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# small settings so that every check_estimator check still learns its toy problems
_CHECK_KW = dict(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.02)


@parametrize_with_checks([MLPClassifier(**_CHECK_KW), MLPRegressor(**_CHECK_KW)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _fit_quiet(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.mark.parametrize("kw,tol", [
    (dict(solver="sgd", learning_rate_init=0.05, momentum=0.9), 1e-12),
    (dict(solver="sgd", learning_rate_init=0.1, momentum=0.0, alpha=0.3), 1e-12),
    (dict(solver="sgd", learning_rate_init=0.05, nesterovs_momentum=False, activation="logistic"),
     1e-12),
    # Adam: PyTorch's eps placement vs scikit-learn's differs while v is tiny
    (dict(solver="adam", learning_rate_init=0.01, alpha=0.1), 1e-4),
])
def test_classifier_reproduces_sklearn_loss_curve_and_weights(kw, tol):
    X, y = ds.spiral(240, noise=0.1, random_state=0)
    kw = {**dict(hidden_layer_sizes=(12, 6), activation="tanh", max_iter=15, batch_size=50,
                 random_state=3), **kw}
    ref = _fit_quiet(sk_nn.MLPClassifier(**kw), X, y)
    ours = _fit_quiet(MLPClassifier(**kw), X, y)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=tol, atol=tol)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, atol=100 * tol)
    assert ours.n_iter_ == ref.n_iter_ == 15 and ours.t_ == ref.t_


def test_multiclass_and_regressor_early_stopping_match_sklearn():
    X, y = ds.make_classification(200, n_classes=3, n_clusters_per_class=1, random_state=1)
    kw = dict(hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=0.1, max_iter=20,
              random_state=0, alpha=0.01)
    ref = _fit_quiet(sk_nn.MLPClassifier(**kw), X, y)
    ours = _fit_quiet(MLPClassifier(**kw), X, y)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-12)
    for data in ((X, y), ds.spiral(200, noise=0.1, random_state=0)):  # 3 classes, then 2
        es = dict(kw, early_stopping=True, n_iter_no_change=4, learning_rate_init=0.05)
        ref = _fit_quiet(sk_nn.MLPClassifier(**es), *data)
        ours = _fit_quiet(MLPClassifier(**es), *data)
        assert ours.n_iter_ == ref.n_iter_ < 20  # stopped early at the same epoch
        np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_)
        np.testing.assert_allclose(ours.coefs_[0], ref.coefs_[0], atol=1e-12)  # best restored

    rng = np.random.default_rng(0)
    Xr = rng.normal(size=(150, 3))
    Yr = np.column_stack([Xr @ [1.0, 2.0, 3.0], np.sin(Xr[:, 0])])
    kw = dict(hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=0.01, max_iter=20,
              random_state=0, alpha=0.01, early_stopping=True, n_iter_no_change=3)
    ref = _fit_quiet(sk_nn.MLPRegressor(**kw), Xr, Yr)
    ours = _fit_quiet(MLPRegressor(**kw), Xr, Yr)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=1e-10)
    assert ours.best_loss_ is None and ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.predict(Xr), ref.predict(Xr), atol=1e-10)


def test_fitted_attributes_and_string_labels():
    X, y = ds.xor(200, random_state=0)
    labels = np.array(["neg", "pos"])[y]
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(8, 4), max_iter=5, random_state=0),
                     X, labels)
    assert clf.classes_.tolist() == ["neg", "pos"] and clf.n_outputs_ == 1
    assert [c.shape for c in clf.coefs_] == [(2, 8), (8, 4), (4, 1)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (4,), (1,)]
    assert clf.n_features_in_ == 2 and clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.out_activation_ == "logistic"
    assert set(clf.predict(X)) <= {"neg", "pos"}
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_not_fitted_convergence_warning_and_bad_params():
    X, y = ds.gauss(60, random_state=0)
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="lbfgs"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        MLPClassifier(alpha=-1).fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, y)
    with pytest.raises(ValueError, match="multilabel"):
        MLPClassifier().fit(X, np.column_stack([y, y]))


def test_tol_stops_training_before_max_iter(capsys):
    X, y = ds.gauss(100, random_state=1)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=500, tol=0.5, n_iter_no_change=2,
                        random_state=0, verbose=True).fit(X, y)
    # the first epoch sets best_loss_; the next three fail to beat it by 0.5 (count 3 > 2)
    assert clf.n_iter_ == 4
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "did not improve more than tol=0.5" in out


def test_warm_start_continues_and_clone_resets():
    X, y = ds.gauss(100, random_state=2)
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, warm_start=True,
                                   random_state=0), X, y)
    first = [c.copy() for c in clf.coefs_]
    _fit_quiet(clf, X, y)
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6
    assert not np.allclose(first[0], clf.coefs_[0])
    # the same as scikit-learn: new optimizer and RandomState per fit, weights kept
    X2, y2 = ds.spiral(120, noise=0.1, random_state=0)
    kw = dict(hidden_layer_sizes=(8,), solver="sgd", max_iter=3, random_state=1,
              warm_start=True, learning_rate_init=0.05)
    ref, ours = sk_nn.MLPClassifier(**kw), MLPClassifier(**kw)
    for _ in range(3):
        _fit_quiet(ref, X2, y2)
        _fit_quiet(ours, X2, y2)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-12)
    ref.partial_fit(X2, y2)
    ours.partial_fit(X2, y2)
    np.testing.assert_allclose(ours.coefs_[0], ref.coefs_[0], atol=1e-12)
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "coefs_")


def test_partial_fit_and_pickle_round_trip():
    X, y = ds.spiral(100, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=[0, 1])
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 2
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    back.partial_fit(X, y)
    assert back.n_iter_ == 3


def test_pipeline_gridsearch_and_cross_val_score():
    X, y = ds.circle(200, random_state=0)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=40, random_state=0,
                                                         learning_rate_init=0.02))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(2,), (16,)]}, cv=2)
    _fit_quiet(grid, X, y)
    assert grid.best_params_ == {"mlpclassifier__hidden_layer_sizes": (16,)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe.set_params(mlpclassifier__hidden_layer_sizes=(16,)),
                                 X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.9


def test_regressor_learns_and_scores_r2():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (300, 2))
    y = X[:, 0] * 2 - X[:, 1]
    reg = _fit_quiet(MLPRegressor(hidden_layer_sizes=(16,), max_iter=200,
                                  learning_rate_init=0.01, random_state=0), X, y)
    assert reg.predict(X).shape == (300,) and reg.score(X, y) > 0.95


def test_runs_on_every_backend(backend):
    X, y = ds.logic_gate("xor")
    ref = _fit_quiet(MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", max_iter=5,
                                   learning_rate_init=0.5, random_state=0, alpha=0.01), X, y)
    ours = _fit_quiet(MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", max_iter=5,
                                    learning_rate_init=0.5, random_state=0, alpha=0.01,
                                    backend=backend.name), X, y)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-9)
