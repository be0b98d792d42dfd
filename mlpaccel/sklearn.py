"""scikit-learn compatible wrappers: ``MLPClassifier`` and ``MLPRegressor`` on any backend.

>>> from mlpaccel.sklearn import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(64,), backend="numba", random_state=0).fit(X, y)
>>> clf.predict(X), clf.loss_curve_, clf.coefs_

Parameter names, defaults and fitted attributes are scikit-learn's ``sklearn.neural_network``
ones; the training loop is the same as scikit-learn's stochastic solvers (per-epoch shuffle,
``gen_batches`` order, ``tol`` / ``n_iter_no_change``, early stopping on a validation score,
``ConvergenceWarning`` at ``max_iter``), so the numbers match scikit-learn closely (the tests
compare them). Mapping and the few differences:

* Initial weights: Glorot uniform exactly as scikit-learn draws them (bound
  sqrt(6 / (fan_in + fan_out)), sqrt(2 / ...) on every layer when ``activation='logistic'``;
  weights, then biases, per layer, from ``check_random_state(random_state)``).
* ``alpha`` (L2): scikit-learn minimises mean loss + alpha / (2 n_batch) * sum ||W||^2, i.e. it
  adds ``alpha * W / n_batch`` to the weight gradient (biases are not penalised) and reports
  the penalty in ``loss_curve_``. We add exactly that term to the weight gradients on the
  device (``backend.axpy``) before the optimizer step.
* ``solver='sgd'``: momentum / nesterov are PyTorch-style (buf = m buf + g, p -= lr buf), the
  same trajectory as scikit-learn's v = m v - lr g while the learning rate is constant; with
  ``learning_rate='invscaling'`` or ``'adaptive'`` the two differ slightly after a change.
* ``solver='adam'``: PyTorch's Adam (eps added to sqrt of the bias-corrected v); scikit-learn
  adds eps to sqrt(v) before correcting, i.e. uses eps / sqrt(1 - beta_2^t): a difference only
  while v is tiny.
* ``solver='lbfgs'`` is not offered (it is not a mini-batch method); a clear error says so.
* Multi-output regression: ``loss_curve_`` uses scikit-learn's squared_loss (mean over samples
  and outputs, / 2); the gradient is scikit-learn's too. Multilabel classification is not
  supported (ValueError).

``backend`` picks the device (default ``"numpy"``: deterministic and quick to start; ``"auto"``
takes the fastest present) and ``dtype`` the precision (default float64, as scikit-learn).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state, gen_batches, shuffle
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("mlpaccel.sklearn needs scikit-learn >= 1.6; install it with "
                      "pip install 'mlpaccel[sklearn]'") from exc

__all__ = ["MLPClassifier", "MLPRegressor"]

_SOLVERS = ("adam", "sgd")
_SCHEDULES = ("constant", "invscaling", "adaptive")


class _BaseMLP(BaseEstimator):
    """Shared fit loop; subclasses define the output layer, loss and target encoding."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 backend="numpy", dtype="float64"):
        # scikit-learn convention: store the arguments verbatim, validate in fit
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype

    # ------------------------------------------------------------------ validation
    def _validate_params_(self) -> list[int]:
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, (int, np.integer)) else list(hidden)
        if not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1
                   for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not offered by mlpaccel (it is a full-batch "
                             "quasi-Newton method); use solver='adam' or 'sgd'")
        checks = [
            (self.solver in _SOLVERS, f"solver must be one of {_SOLVERS}"),
            (self.learning_rate in _SCHEDULES, f"learning_rate must be one of {_SCHEDULES}"),
            (_num(self.alpha) and self.alpha >= 0, "alpha must be >= 0"),
            (_num(self.learning_rate_init) and self.learning_rate_init > 0,
             "learning_rate_init must be > 0"),
            (_int(self.max_iter) and self.max_iter >= 1, "max_iter must be an int >= 1"),
            (_num(self.tol) and self.tol >= 0, "tol must be >= 0"),
            (_num(self.momentum) and 0 <= self.momentum <= 1, "momentum must be in [0, 1]"),
            (_num(self.validation_fraction) and 0 < self.validation_fraction < 1,
             "validation_fraction must be in (0, 1)"),
            (_num(self.beta_1) and 0 <= self.beta_1 < 1, "beta_1 must be in [0, 1)"),
            (_num(self.beta_2) and 0 <= self.beta_2 < 1, "beta_2 must be in [0, 1)"),
            (_num(self.epsilon) and self.epsilon > 0, "epsilon must be > 0"),
            (_int(self.n_iter_no_change) and self.n_iter_no_change >= 1,
             "n_iter_no_change must be an int >= 1"),
            (_num(self.power_t) and self.power_t >= 0, "power_t must be >= 0"),
            (self.batch_size == "auto" or (_int(self.batch_size) and self.batch_size >= 1),
             "batch_size must be 'auto' or an int >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; see the parameters of {type(self).__name__}")
        return [int(h) for h in hidden]

    # ------------------------------------------------------------------ model
    def _init_model(self, n_features: int, n_outputs: int, hidden: list[int], rs):
        from .model import MLP

        sizes = [n_features, *hidden, n_outputs]
        # Glorot uniform as scikit-learn's _init_coef: W then b per layer, one RandomState
        weights = []
        # (its factor follows the hidden activation for every layer, the output one included)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = rs.uniform(-bound, bound, (fan_in, fan_out))
            b = rs.uniform(-bound, bound, fan_out)
            weights.append((W, b))
        acts = [self.activation] * len(hidden)
        self.model_ = MLP(sizes, activation=acts, output_activation=self._out_act,
                          loss=self._loss_name, backend=self.backend, dtype=self.dtype,
                          init=weights)
        self.n_layers_ = len(sizes)
        self.out_activation_ = self._out_act
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _make_optimizer(self):
        from . import optim

        lr = float(self.learning_rate_init)
        if self.solver == "adam":
            return optim.get("adam", learning_rate=lr, beta1=self.beta_1, beta2=self.beta_2,
                             eps=self.epsilon)
        if self.momentum > 0:
            name = "nesterov" if self.nesterovs_momentum else "momentum"
            return optim.get(name, learning_rate=lr, momentum=self.momentum)
        return optim.get("sgd", learning_rate=lr)

    def _export_weights(self) -> None:
        pairs = self.model_.get_weights()
        self.coefs_ = [W for W, _ in pairs]
        self.intercepts_ = [b for _, b in pairs]

    # ------------------------------------------------------------------ fit loop
    def _fit(self, X, y, incremental: bool = False):
        hidden = self._validate_params_()
        first = not hasattr(self, "model_") or not (self.warm_start or incremental)
        X, y = validate_data(self, X, y, reset=first, multi_output=True,
                             dtype=(np.float64, np.float32), y_numeric=self._y_numeric)
        T = self._encode_targets(y, first)
        # as scikit-learn: a fresh RandomState from random_state on every call (so warm_start
        # and partial_fit calls with an int seed shuffle alike)
        self._random_state = check_random_state(self.random_state)
        if first:
            self._init_model(X.shape[1], self.n_outputs_, hidden, self._random_state)
        elif self.model_.layer_sizes[1:-1] != hidden:
            raise ValueError(f"warm_start / partial_fit needs the same hidden_layer_sizes "
                             f"({self.model_.layer_sizes[1:-1]}), got {hidden}")
        self._fit_stochastic(X, y, T, incremental)
        self._export_weights()
        return self

    def _fit_stochastic(self, X, y, T, incremental: bool) -> None:
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not incremental or not hasattr(self, "_optimizer"):
            # scikit-learn starts a new optimizer on every fit (warm_start keeps only the
            # weights); partial_fit keeps its state
            self._optimizer = self._make_optimizer()
        early = self.early_stopping and not incremental
        X_val = T_val = None
        if early:
            # as scikit-learn: stratify binary problems only (it splits the one-hot matrix)
            stratify = y if self._is_classifier_ and self.n_outputs_ == 1 else None
            X, X_val, T, T_val = train_test_split(X, T, random_state=self._random_state,
                                                  test_size=self.validation_fraction,
                                                  stratify=stratify)
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else int(np.clip(self.batch_size, 1, n))
        if self.batch_size != "auto" and not 1 <= self.batch_size <= n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", stacklevel=3)
        idx = np.arange(n)
        for _ in range(self.max_iter):
            if self.shuffle:
                idx = shuffle(idx, random_state=self._random_state)
            accumulated = 0.0
            for sl in gen_batches(n, batch):
                rows = idx[sl]
                accumulated += self._step(X[rows], T[rows]) * len(rows)
            self.n_iter_ += 1
            self.loss_ = accumulated / n
            self.t_ += n
            self.loss_curve_.append(self.loss_)
            if self.verbose:  # scikit-learn's verbose contract: one line per iteration
                sys.stdout.write(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}\n")
            self._update_no_improvement(early, X_val, T_val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._optimizer.learning_rate = (self.learning_rate_init
                                                 / (self.t_ + 1) ** self.power_t)
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if early else "Training loss"
                msg = (f"{what} did not improve more than tol={self.tol:f} for "
                       f"{self.n_iter_no_change} consecutive epochs.")
                if self._trigger_stopping(msg):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              f"reached and the optimization hasn't converged yet.",
                              ConvergenceWarning, stacklevel=3)
        if early:
            self.model_.set_weights(self._best_weights)

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's rule: adam and non-adaptive sgd stop; adaptive sgd divides the
        learning rate by 5 until it falls to 1e-6."""
        if self.solver == "sgd" and self.learning_rate == "adaptive":
            if self._optimizer.learning_rate > 1e-6:
                self._optimizer.learning_rate /= 5.0
                if self.verbose:
                    sys.stdout.write(msg + f" Setting learning rate to "
                                     f"{self._optimizer.learning_rate:f}\n")
                return False
        if self.verbose:
            sys.stdout.write(msg + " Stopping.\n")
        return True

    def _update_no_improvement(self, early: bool, X_val, T_val) -> None:
        if early:
            score = self.model_.score(X_val, T_val)
            self.validation_scores_.append(score)
            if self.verbose:
                sys.stdout.write(f"Validation score: {score:f}\n")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_weights = self.model_.get_weights()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])

    def _step(self, Xb, Tb) -> float:
        """One optimizer step on a batch; returns scikit-learn's batch loss (with the L2
        penalty, computed on the weights before the step)."""
        m = self.model_
        n_b = Xb.shape[0]
        penalty = 0.0
        if self.alpha > 0:
            sq = sum(float(np.dot(W.ravel(), W.ravel())) for W, _ in m.get_weights())
            penalty = 0.5 * self.alpha * sq / n_b
            loss = _train_step_l2(m, self._optimizer, Xb, Tb, self.alpha / n_b)
        else:
            loss = m.train_step(Xb, Tb, optimizer=self._optimizer)
        return loss / self._loss_scale + penalty

    def _check_X(self, X):
        check_is_fitted(self, "model_")
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # The trained MLP holds backend buffers and compiled step closures, which do not pickle;
    # a pickle keeps the architecture and weights and rebuilds the MLP on load (the optimizer
    # restarts from a fresh state, which matters only for warm_start after unpickling).
    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        state.pop("_optimizer", None)
        if model is not None:
            state["_model_spec"] = (model.layer_sizes, model.activations, model.loss.name,
                                    model.get_weights())
        return state

    def __setstate__(self, state):
        spec = state.pop("_model_spec", None)
        self.__dict__.update(state)
        if spec is not None:
            from .model import MLP

            sizes, acts, loss, weights = spec
            self.model_ = MLP(sizes, activation=acts, loss=loss, backend=self.backend,
                              dtype=self.dtype, init=weights)
            self._optimizer = self._make_optimizer()


def _train_step_l2(model, opt, Xb, Tb, l2: float) -> float:
    """One step with scikit-learn's L2 term: grad_W += l2 * W (biases untouched) between the
    backward pass and the update, on the device. Uses the model's step buffers (the same ones
    ``train_step`` uses); the gradient is checked finite as ``train_step`` does."""
    from ._checks import check_targets, check_X
    from .errors import TrainingDivergedError

    B = model.backend
    X = check_X(Xb, model.layer_sizes[0])
    T = check_targets(Tb, X.shape[0], model.layer_sizes[-1], model.loss)
    opt = model._resolve_optimizer(opt, None)
    xb, tb, loss_buf, _, grad_fn = model._step_fn(X.shape[0], opt)
    B.assign(xb, X.astype(model.dtype))
    B.assign(tb, T.astype(model.dtype))
    grad_fn()
    loss = float(B.to_numpy(loss_buf))
    if not np.isfinite(loss):
        raise TrainingDivergedError(f"the loss became {loss}; lower learning_rate_init "
                                    f"(now {opt.learning_rate:g}) or scale the inputs")
    for (W, _), (gW, _) in zip(model._views, model._gviews):
        B.axpy(l2, W, gW)
    opt.step(B, model._params, model._grads)
    return loss


def _num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and np.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier (scikit-learn's ``MLPClassifier`` parameters) trained
    by mlpaccel on ``backend``. Two classes: one logistic output and log-loss; more: softmax
    and cross-entropy. Labels may be any sortable values (``classes_``)."""

    _is_classifier_ = True
    _y_numeric = False
    _loss_scale = 1.0

    def _encode_targets(self, y, first: bool):
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError("multilabel / multi-output classification is not supported by "
                             "mlpaccel's MLPClassifier; pass one label per sample")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self._label_encoder = LabelEncoder().fit(y)
            self.classes_ = self._label_encoder.classes_
            if len(self.classes_) < 2:
                raise ValueError(f"need samples of at least 2 classes, got 1 class: "
                                 f"{self.classes_.tolist()}")
            self.n_outputs_ = 1 if len(self.classes_) == 2 else len(self.classes_)
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(f"y contains labels {unseen.tolist()} not seen in the first fit "
                             f"(classes_: {self.classes_.tolist()})")
        codes = self._label_encoder.transform(y)
        return codes.reshape(-1, 1).astype(np.float64) if self.n_outputs_ == 1 else codes

    @property
    def _out_act(self) -> str:
        return "logistic" if self.n_outputs_ == 1 else "softmax"

    @property
    def _loss_name(self) -> str:
        return "binary_cross_entropy" if self.n_outputs_ == 1 else "cross_entropy"

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and labels y (n_samples,); returns self."""
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y) continuing from the current weights (``classes`` must be
        given on the first call, as in scikit-learn)."""
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            hidden = self._validate_params_()
            X, y = validate_data(self, X, y, reset=True, dtype=(np.float64, np.float32))
            self._label_encoder = LabelEncoder().fit(np.asarray(classes))
            self.classes_ = self._label_encoder.classes_
            self.n_outputs_ = 1 if len(self.classes_) == 2 else len(self.classes_)
            self._random_state = check_random_state(self.random_state)
            self._init_model(X.shape[1], self.n_outputs_, hidden, self._random_state)
        else:
            self._random_state = check_random_state(self.random_state)
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes={classes!r} differs from the first call's "
                                 f"{self.classes_.tolist()}")
            X, y = validate_data(self, X, y, reset=False, dtype=(np.float64, np.float32))
        T = self._encode_targets(np.asarray(y), first=False)
        self._fit_stochastic(X, y, T, incremental=True)
        self._export_weights()
        return self

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order."""
        X = self._check_X(X)
        p = self.model_.predict_proba(X).astype(np.float64)
        return np.hstack([1.0 - p, p]) if self.n_outputs_ == 1 else p

    def predict_log_proba(self, X):
        """log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted labels (n_samples,) from ``classes_``."""
        p = self.predict_proba(X)
        return self.classes_[np.argmax(p, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (scikit-learn's ``MLPRegressor`` parameters): identity
    output, squared error; y of shape (n,) or (n, n_outputs)."""

    _is_classifier_ = False
    _y_numeric = True
    _out_act = "identity"
    _loss_name = "mse"

    def _encode_targets(self, y, first: bool):
        T = y.reshape(-1, 1) if y.ndim == 1 else y
        if first:
            self.n_outputs_ = T.shape[1]
            self._y_1d = y.ndim == 1
        elif T.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {T.shape[1]} outputs, the model was fitted with "
                             f"{self.n_outputs_}")
        # our mse averages 1/2 sum_j over samples only; scikit-learn's loss value also
        # averages over outputs (its gradient does not), so only the reported value is scaled
        self._loss_scale = float(self.n_outputs_)
        return T.astype(np.float64)

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs)."""
        return self._fit(X, y)

    def partial_fit(self, X, y):
        """One epoch over (X, y) from the current weights (initialising on the first call)."""
        if not hasattr(self, "model_"):
            return self._fit(X, y, incremental=True)
        X, y = validate_data(self, X, y, reset=False, multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32))
        self._random_state = check_random_state(self.random_state)
        T = self._encode_targets(y, first=False)
        self._fit_stochastic(X, y, T, incremental=True)
        self._export_weights()
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """Predictions (n_samples,) for a 1-D fit target, else (n_samples, n_outputs)."""
        X = self._check_X(X)
        out = self.model_.predict(X).astype(np.float64)
        return out.ravel() if self._y_1d else out
