"""``MLP.fit``: epochs of (shuffled) mini-batches, history, validation, early stopping,
callbacks and progress. The loss stays on the device during an epoch (summed into a 0-d
buffer with ``axpy``) and is read once per epoch, so a GPU epoch runs without host syncs.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ._checks import check_targets, check_X
from .errors import TrainingDivergedError


class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best_weights`` the weights of the best epoch are put back.
    ``monitor`` defaults to ``val_loss`` when there is validation data, else ``loss``;
    losses improve downwards, accuracies upwards."""

    def __init__(self, patience=10, min_delta=0.0, monitor=None, restore_best_weights=True):
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.monitor = monitor
        self.restore_best_weights = bool(restore_best_weights)
        self.best = math.inf
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self._best_params = None


def _early_stopping(arg):
    if arg is None or arg is False:
        return None
    if isinstance(arg, EarlyStopping):
        return arg
    if arg is True:
        return EarlyStopping()
    if isinstance(arg, int):
        return EarlyStopping(patience=arg)
    if isinstance(arg, dict):
        return EarlyStopping(**arg)
    raise TypeError("early_stopping must be False, True, a patience (int), a dict of "
                    f"EarlyStopping arguments or an EarlyStopping, got {arg!r}")


def _progress(epochs, verbose):
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: train silently without it
        return None
    return tqdm(total=epochs, unit="epoch", leave=True)


def fit(model, X, y, epochs=1, batch_size=32, optimizer="sgd", learning_rate=None,
        validation_data=None, validation_fraction=0.0, early_stopping=False, callbacks=None,
        verbose=1, shuffle=True, metrics="auto"):
    """Train ``model`` in place and return it.

    ``batch_size``: None = full batch, 1 = per-sample SGD, k = mini-batches of k (the last
    one may be smaller). Shuffling per epoch uses the model's ``random_state``. ``fit``
    continues from the current weights and keeps the optimizer state when called again with
    the same optimizer (Keras). ``metrics="auto"`` adds training accuracy for classifiers
    (one extra forward pass per epoch; ``metrics=()`` skips it). ``callbacks``: callables
    ``f(epoch, logs)`` or objects with ``on_epoch_end(epoch, logs)``; setting
    ``model.stop_training = True`` stops after the epoch. ``verbose``: 0 silent, 1 a tqdm
    progress bar, 2 a line per epoch. All arguments are checked before any weight changes."""
    n_in, n_out = model.layer_sizes[0], model.layer_sizes[-1]
    B = model.backend
    on_device = _is_device_array(X) or model._made_on_device(X)
    if on_device:  # from model.device_data: validated when it was made, shapes checked here
        X, T = _check_device_data(model, X, y)
    else:
        X = check_X(X, n_in)
        T = check_targets(y, X.shape[0], n_out, model.loss)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be None (full batch) or an integer >= 1, got "
                         f"{batch_size!r}")
    if verbose not in (0, 1, 2, False, True):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    if metrics == "auto":
        metrics = ("accuracy",) if model.is_classifier else ()
    metrics = tuple(metrics or ())
    if set(metrics) - {"accuracy"}:
        raise ValueError(f"unknown metrics {sorted(set(metrics) - {'accuracy'})}; "
                         "valid: 'accuracy'")
    if "accuracy" in metrics and not model.is_classifier:
        raise ValueError("accuracy needs a classification loss (cross_entropy or "
                         "binary_cross_entropy)")
    Xv = Tv = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        Xv = check_X(validation_data[0], n_in, "X_val")
        Tv = check_targets(validation_data[1], Xv.shape[0], n_out, model.loss)
    elif validation_fraction and on_device:
        raise ValueError("validation_fraction needs host data; with device data from "
                         "model.device_data pass validation_data=(X_val, y_val) instead")
    elif validation_fraction:
        n_val = int(round(X.shape[0] * float(validation_fraction)))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(f"validation_fraction={validation_fraction} leaves "
                             f"{n_val} validation samples of {X.shape[0]}")
        perm = np.random.default_rng(model.random_state).permutation(X.shape[0])
        Xv, Tv = X[perm[:n_val]], T[perm[:n_val]]
        X, T = X[perm[n_val:]], T[perm[n_val:]]
    stopper = _early_stopping(early_stopping)
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not (callable(cb) or hasattr(cb, "on_epoch_end")):
            raise TypeError(f"callback {cb!r} is neither callable nor has on_epoch_end")
    monitor = None
    if stopper is not None:
        monitor = stopper.monitor or ("val_loss" if Xv is not None else "loss")
        logged = {"loss", *metrics}
        if Xv is not None:
            logged |= {f"val_{k}" for k in ("loss", *(("accuracy",) if model.is_classifier
                                                    else ()))}
        if monitor not in logged:
            raise ValueError(f"early stopping monitors {monitor!r}, which this fit does not "
                             f"log; logged: {sorted(logged)}")
        stopper.best, stopper.wait, stopper.best_epoch = math.inf, 0, None
        stopper.stopped_epoch, stopper._best_params = None, None
    opt = model._resolve_optimizer(optimizer, learning_rate)  # validates the name

    model._snapshot = None  # train_step's divergence snapshots predate this fit
    N = X.shape[0]
    full = N if batch_size is None else min(int(batch_size), N)
    # the data lives in the model's flat staging buffers (kept between fit calls, so a recorded
    # epoch stays valid) and every mini-batch is a zero-copy view of them: shuffling gathers
    # the whole set once per epoch on the device (one index upload per epoch, not one per step)
    X_dev = X if on_device else B.asarray(X, dtype=model.dtype)
    T_dev = T if on_device else B.asarray(T, dtype=model.dtype)
    Xs_flat, Ts_flat, acc = model._staging(N)
    Xs, Ts = B.view(Xs_flat, 0, (N, n_in)), B.view(Ts_flat, 0, (N, n_out))
    shuffling = bool(shuffle) and full < N
    if not shuffling:
        B.assign(Xs, X_dev)
        B.assign(Ts, T_dev)
    T_host = B.to_numpy(T) if on_device and "accuracy" in metrics else T
    Xv_dev = Tv_dev = None
    if Xv is not None:
        Xv_dev = B.asarray(Xv, dtype=model.dtype)
        Tv_dev = B.asarray(Tv, dtype=model.dtype)
    snapshot = B.copy(model._params)
    hist = model.history
    bar = _progress(epochs, verbose)
    model.stop_training = False
    start_epoch = len(hist.get("loss", []))
    pending = None
    kept = model.__dict__.pop("_pending_order", None)
    if shuffling and kept is not None and len(kept) == N:
        pending = kept
    try:
        for epoch in range(epochs):
            B.assign(snapshot, model._params)
            B.assign(acc, np.zeros((), model.dtype))
            if shuffling:
                order = pending if pending is not None else model._shuffle_rng.permutation(N)
                pending = None
                idx = B.row_indices(order, N)  # checked and uploaded once for both gathers
                B.take_rows(X_dev, idx, out=Xs)
                B.take_rows(T_dev, idx, out=Ts)
            # every batch in one call: one CUDA graph launch per epoch where the backend
            # records, the same Python loop (no copies) where it does not
            model._epoch_fn(N, full, acc, opt, (Xs_flat, Ts_flat))()
            if shuffling:
                # the next epoch's order, drawn while a GPU still runs this one (after the
                # last epoch it is kept for the next fit, so the shuffle sequence never changes)
                pending = model._shuffle_rng.permutation(N)
            loss = float(B.to_numpy(acc))
            if not math.isfinite(loss):
                B.assign(model._params, snapshot)
                opt.reset()
                raise TrainingDivergedError(
                    f"the loss became {loss} in epoch {start_epoch + epoch + 1}; the weights "
                    f"from the start of that epoch were restored and the optimizer state "
                    f"reset. Lower the learning rate (now {opt.learning_rate:g}) or scale "
                    f"the inputs.")
            logs = {"loss": loss}
            if "accuracy" in metrics:
                logs["accuracy"] = model._evaluate(X, T_host, X_dev, T_dev)["accuracy"]
            if Xv is not None:
                val = model._evaluate(Xv, Tv, Xv_dev, Tv_dev)
                logs.update({f"val_{k}": v for k, v in val.items()})
            for k, v in logs.items():
                hist.setdefault(k, []).append(v)
            _report(bar, verbose, start_epoch + epoch + 1, logs)
            for cb in callbacks:
                (cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb)(
                    start_epoch + epoch, dict(logs))
            if stopper is not None and _stop_early(stopper, model, logs, monitor,
                                                   start_epoch + epoch):
                break
            if model.stop_training:
                break
    finally:
        if pending is not None:
            model._pending_order = pending
        if bar is not None:
            bar.close()
    if stopper is not None and stopper.restore_best_weights and stopper._best_params is not None:
        B.assign(model._params, stopper._best_params)
    return model


def _is_device_array(a) -> bool:
    """A backend array (CuPy, ...) rather than host data (NumPy arrays, lists)."""
    return not isinstance(a, (np.ndarray, list, tuple, str, bytes)) and hasattr(a, "shape") \
        and hasattr(a, "dtype")


def _check_device_data(model, X, y):
    """Shapes and dtypes of device data (``model.device_data``'s output); contents were
    validated on the host when it was made."""
    n_in, n_out = model.layer_sizes[0], model.layer_sizes[-1]
    if len(X.shape) != 2 or X.shape[1] != n_in or X.shape[0] < 1:
        raise ValueError(f"device X must have shape (M, {n_in}) with M >= 1, got "
                         f"{tuple(X.shape)}")
    y_on_device = _is_device_array(y) or model._made_on_device(y)
    if not y_on_device or tuple(y.shape) != (X.shape[0], n_out):
        raise ValueError(f"with device X, y must be the device targets (M, {n_out}) that "
                         f"model.device_data(X, y) returns, got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    if np.dtype(X.dtype) != np.dtype(model.dtype) or np.dtype(y.dtype) != np.dtype(model.dtype):
        raise TypeError(f"device data must be {np.dtype(model.dtype).name} (the model's dtype), "
                        f"got {X.dtype} / {y.dtype}; make it with model.device_data(X, y)")
    return X, y


def _stop_early(stopper, model, logs, monitor, epoch) -> bool:
    """Track the best value of ``monitor``; True once it stalled for ``patience`` epochs."""
    value = logs[monitor]
    sign = -1.0 if "accuracy" in monitor else 1.0  # accuracies improve upwards
    if stopper.best_epoch is None or sign * value < sign * stopper.best - stopper.min_delta:
        stopper.best, stopper.best_epoch, stopper.wait = value, epoch, 0
        if stopper.restore_best_weights:
            stopper._best_params = model.backend.copy(model._params)
        return False
    stopper.wait += 1
    if stopper.wait >= stopper.patience:
        stopper.stopped_epoch = epoch
        return True
    return False


def _report(bar, verbose, epoch, logs) -> None:
    text = ", ".join(f"{k} = {v:.6g}" for k, v in logs.items())
    if bar is not None:
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
        bar.update(1)
    elif verbose == 2:
        # scikit-learn's verbose lines; an explicit request for output, not logging
        sys.stdout.write(f"Iteration {epoch}, {text}\n")
