"""The MLP: layers in one flat backend buffer; forward, backward and updates through a Backend.

>>> m = MLP([2, 8, 1], activation="tanh", output_activation="sigmoid", loss="mse",
...         backend="numpy", dtype="float64", init="xavier", random_state=0)
>>> m.fit(X, y, epochs=100, batch_size=4, optimizer="adam", learning_rate=0.01, verbose=0)

The model never branches on the backend: every array operation is a Backend call, so the same
code runs on python, numpy, numba, cuda and cuda-emu. Initial weights are drawn on the host
with ``np.random.default_rng(random_state)`` and moved, so every backend starts from identical
numbers.
"""

from __future__ import annotations

import weakref

import numpy as np

from . import activations as _act
from . import initializers as _init
from . import losses as _losses
from . import optim as _optim
from ._checks import check_targets, check_X
from .backends import get_backend
from .backends.base import check_dtype
from .errors import TrainingDivergedError
from .params import ParamLayout
from .perceptron import Perceptron

__all__ = ["MLP", "Perceptron"]

#: rows per forward pass in predict/evaluate (bounds the activation memory)
_CHUNK = 8192


class MLP:
    """A multi-layer perceptron on any backend.

    ``layer_sizes`` [n_in, h1, ..., n_out]; ``activation`` for the hidden layers (a name, or a
    list: one per hidden layer, or one per layer including the output); ``output_activation``
    (default from the loss: softmax for cross_entropy, sigmoid for binary_cross_entropy, linear
    for mse); ``loss`` (default cross_entropy for a softmax output, else mse); ``init``: a name
    in ``mlpaccel.initializers`` or explicit ``[(W, b), ...]``."""

    def __init__(self, layer_sizes, activation="relu", output_activation=None, loss=None,
                 backend="auto", dtype="float32", init="xavier", random_state=None,
                 use_bias=True):
        try:
            sizes = None if isinstance(layer_sizes, (str, bytes)) else list(layer_sizes)
        except TypeError:  # not iterable, e.g. a bare int
            sizes = None
        if not sizes or len(sizes) < 2 or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                for s in sizes):
            raise ValueError(f"layer_sizes must be a list of >= 2 positive integers "
                             f"[n_inputs, ..., n_outputs], got {layer_sizes!r}")
        self.layer_sizes = [int(s) for s in sizes]
        n_layers = len(self.layer_sizes) - 1
        loss = _losses.get(loss) if loss is not None else None
        acts = self._resolve_activations(activation, output_activation, n_layers)
        if acts[-1] is None:  # the output activation follows the loss (linear for mse)
            acts[-1] = loss.default_output if loss is not None else "linear"
        if loss is None:
            loss = _losses.get("cross_entropy" if acts[-1] == "softmax" else "mse")
        self.loss = loss
        self.activations = acts
        out_act = acts[-1]
        if self.loss.fused_activation is not None and out_act != self.loss.fused_activation:
            raise ValueError(f"loss {self.loss.name!r} needs output_activation="
                             f"{self.loss.fused_activation!r} (it is fused with it), got "
                             f"{out_act!r}")
        if self.loss.name == "cross_entropy" and self.layer_sizes[-1] < 2:
            raise ValueError("cross_entropy needs >= 2 output units; use loss="
                             "'binary_cross_entropy' with one sigmoid output for two classes")
        # the activations the layers actually run: a fused output activation runs in the loss
        self._run_acts = list(self.activations)
        if self.loss.fused_activation is not None:
            self._run_acts[-1] = "linear"
        self.dtype = check_dtype(dtype)
        self.use_bias = bool(use_bias)
        self.random_state = random_state
        self.backend = get_backend(backend)
        self._layout = ParamLayout(self.layer_sizes, self.use_bias)
        if isinstance(init, str):
            self.init = _init.canonical(init)
            host = _init.initial_weights(self.init, self.layer_sizes, self.use_bias,
                                         random_state)
        else:
            self.init = "explicit"
            host = list(init)
        flat = self._layout.flatten(host, np.float64)
        self._alloc(flat)
        self.history: dict[str, list] = {}
        self.optimizer: _optim.Optimizer | None = None
        self._shuffle_rng = np.random.default_rng(random_state)
        self.stop_training = False

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _resolve_activations(activation, output_activation, n_layers):
        if isinstance(activation, (list, tuple)):
            acts = [_act.canonical(a) for a in activation]
            if len(acts) == n_layers:
                if output_activation is not None:
                    raise ValueError("activation lists every layer including the output; "
                                     "leave output_activation as None")
                return acts
            if len(acts) != n_layers - 1:
                raise ValueError(f"activation list must have {n_layers - 1} entries (hidden "
                                 f"layers) or {n_layers} (all layers), got {len(acts)}")
            hidden = acts
        else:
            hidden = [_act.canonical(activation)] * (n_layers - 1)
        return hidden + [_act.canonical(output_activation) if output_activation is not None
                         else None]

    def _alloc(self, flat_host: np.ndarray) -> None:
        """(Re)create the flat parameter and gradient buffers and their per-layer views."""
        B = self.backend
        self._params = B.asarray(np.asarray(flat_host, dtype=self.dtype), dtype=self.dtype)
        self._grads = B.zeros(self._layout.size, self.dtype)
        self._views = self._layout.views(B, self._params)
        self._gviews = self._layout.views(B, self._grads)
        self._steps: dict = {}  # batch size -> (signature, compiled step)
        self._steps_opt = None  # the optimizer those steps update
        self._snapshot = None
        self._stage = None  # fit's device buffers for the (shuffled) training data

    def _staging(self, n: int):
        """Flat device buffers for ``n`` training rows of inputs and targets, and the 0-d loss
        accumulator: fit's mini-batches are views of them. Kept between ``fit`` calls with the
        same ``n`` so that a recorded epoch stays valid (it reads these exact buffers)."""
        B, sizes = self.backend, self.layer_sizes
        if self._stage is None or self._stage[0] != n:
            self._steps = {k: v for k, v in self._steps.items()
                           if not (isinstance(k, tuple) and k[0] == "epoch")}
            self._stage = None  # free the old buffers before taking new ones
            self._stage = (n, B.empty(n * sizes[0], self.dtype),
                           B.empty(n * sizes[-1], self.dtype), B.zeros((), self.dtype))
        return self._stage[1:]

    # ------------------------------------------------------------------ pickling
    #: device-side state that pickling drops and unpickling rebuilds (see __getstate__)
    _DEVICE_STATE = ("backend", "_params", "_grads", "_views", "_gviews", "_steps",
                     "_steps_opt", "_snapshot", "_snap_turn", "optimizer", "_stage",
                     "_pending_order", "_device_made")

    def __getstate__(self) -> dict:
        """Pickle/deepcopy support (joblib, scikit-learn's clone of fitted wrappers): keeps the
        architecture, history and a host copy of the weights, plus the backend's name. Device
        buffers and compiled steps are rebuilt on unpickling; the optimizer restarts (its state
        lives on the device), as after ``MLP.load``."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._DEVICE_STATE}
        state["_backend_name"] = self.backend.name
        state["_flat_host"] = self.backend.to_numpy(self._params)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        flat = state.pop("_flat_host")
        self.__dict__.update(state)
        self.backend = get_backend(state.pop("_backend_name"))
        del self.__dict__["_backend_name"]
        self.optimizer = None
        self._alloc(flat)

    # ------------------------------------------------------------------ properties
    @property
    def n_layers(self) -> int:
        """Number of weight layers (len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @property
    def is_classifier(self) -> bool:
        """True for cross_entropy / binary_cross_entropy models (score = accuracy)."""
        return self.loss.classifier

    @property
    def n_params(self) -> int:
        """Number of trainable numbers (the flat buffer's length)."""
        return self._layout.size

    def __repr__(self) -> str:
        return (f"MLP({self.layer_sizes}, activations={self.activations}, loss="
                f"{self.loss.name!r}, backend={self.backend.name!r}, dtype={self.dtype.name!r})")

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        """``[(W, b), ...]`` as new NumPy arrays (W (fan_in, fan_out); b None without bias)."""
        return self._layout.unflatten(self.backend.to_numpy(self._params))

    def set_weights(self, weights) -> None:
        """Replace every weight from ``[(W, b), ...]`` (shapes checked before anything
        changes; ``b`` must be None when the model has no biases)."""
        flat = self._layout.flatten(list(weights), np.float64)
        self.backend.assign(self._params, np.asarray(flat, dtype=self.dtype))
        self._snapshot = None  # train_step's divergence snapshots refer to the old weights

    def to(self, backend):
        """Move the model (weights; optimizer state follows on its next step) to ``backend``;
        returns self."""
        new = get_backend(backend)
        if new is self.backend:
            return self
        flat = self.backend.to_numpy(self._params)
        self.backend = new
        self._alloc(flat)
        return self

    # ------------------------------------------------------------------ forward
    def _forward(self, x):
        """Output activations of the whole network for a device batch x (inference)."""
        B = self.backend
        a = x
        for (W, b), act in zip(self._views, self._run_acts):
            _, a = B.linear_forward(a, W, b, act)
        if self.loss.fused_activation is not None:
            a = B.activation(self.loss.fused_activation, a)
        return a

    def _predict_output(self, X) -> np.ndarray:
        X = check_X(X, self.layer_sizes[0])
        B = self.backend
        parts = []
        for s in range(0, X.shape[0], _CHUNK):
            x = B.asarray(X[s:s + _CHUNK], dtype=self.dtype)
            parts.append(B.to_numpy(self._forward(x)))
        return np.concatenate(parts, axis=0)

    def predict_proba(self, X) -> np.ndarray:
        """The output layer's activations (M, n_out): class probabilities for softmax/sigmoid
        outputs."""
        return self._predict_output(X)

    def predict(self, X) -> np.ndarray:
        """Class ids (M,) for cross_entropy; 0/1 labels for binary_cross_entropy ((M,) with one
        output); the network output (M, n_out) for regression (mse)."""
        out = self._predict_output(X)
        if self.loss.name == "cross_entropy":
            return np.argmax(out, axis=1)
        if self.loss.name == "binary_cross_entropy":
            labels = (out > 0.5).astype(np.int64)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        return out

    def score(self, X, y) -> float:
        """Accuracy for classifiers (cross_entropy, binary_cross_entropy); R^2 (averaged over
        outputs, as scikit-learn) for regression."""
        out = self._predict_output(X)
        T = check_targets(y, out.shape[0], self.layer_sizes[-1], self.loss)
        if self.loss.name == "cross_entropy":
            return float(np.mean(np.argmax(out, 1) == np.argmax(T, 1)))
        if self.loss.name == "binary_cross_entropy":
            return float(np.mean(np.all((out > 0.5) == (T > 0.5), axis=1)))
        ss_res = ((T - out) ** 2).sum(axis=0)
        ss_tot = ((T - T.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                          np.where(ss_res == 0, 1.0, 0.0))
        return float(np.mean(r2))

    def evaluate(self, X, y) -> dict:
        """{"loss": mean loss, "accuracy": ... (classifiers)} over (X, y), computed on device."""
        X = check_X(X, self.layer_sizes[0])
        T = check_targets(y, X.shape[0], self.layer_sizes[-1], self.loss)
        return self._evaluate(X, T)

    def _evaluate(self, X, T, X_dev=None, T_dev=None) -> dict:
        """Mean loss (and accuracy for classifiers) over host data ``X``, ``T``; with
        ``X_dev``/``T_dev`` (the same data already on the device) nothing is copied up."""
        B = self.backend
        m = X.shape[0]
        total, correct = 0.0, 0
        for s in range(0, m, _CHUNK):
            rows = slice(s, s + _CHUNK)
            if X_dev is None:
                x = B.asarray(X[rows], dtype=self.dtype)
                t = B.asarray(T[rows], dtype=self.dtype)
            elif m <= _CHUNK:
                x, t = X_dev, T_dev
            else:
                idx = B.row_indices(np.arange(s, min(s + _CHUNK, m)), m)
                x, t = B.take_rows(X_dev, idx), B.take_rows(T_dev, idx)
            a = x
            for (W, b), act in zip(self._views, self._run_acts):
                _, a = B.linear_forward(a, W, b, act)
            loss, _ = self.loss(B, a, t)
            total += float(B.to_numpy(loss)) * x.shape[0]
            if self.is_classifier:
                out, want = B.to_numpy(a), T[rows]
                if self.loss.name == "cross_entropy":
                    correct += int(np.sum(np.argmax(out, 1) == np.argmax(want, 1)))
                else:  # sigmoid outputs: logits are not involved, threshold at 0.5
                    correct += int(np.sum(np.all((out > 0.5) == (want > 0.5), 1)))
        res = {"loss": total / m}
        if self.is_classifier:
            res["accuracy"] = correct / m
        return res

    # ------------------------------------------------------------------ training
    def _resolve_optimizer(self, optimizer, learning_rate):
        """Keras semantics: the same optimizer (object, or name with the same hyperparameters)
        keeps its state between calls; a different one replaces it."""
        if isinstance(optimizer, _optim.Optimizer):
            opt = optimizer
            if learning_rate is not None:
                opt.learning_rate = learning_rate
        else:
            kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
            opt = _optim.get(optimizer, **kwargs)
            cur = self.optimizer
            if cur is not None and cur.config() == opt.config():
                opt = cur
        self.optimizer = opt
        return opt

    def _step_fn(self, batch: int, opt):
        """The training step for a fixed batch size: reads the preallocated input/target
        buffers, writes the loss before the update into a 0-d buffer, updates the weights.
        Routed through ``backend.capture`` (CUDA graphs on cuda)."""
        B = self.backend
        self._steps_for(opt)
        opt._ensure_state(B, self._params)  # allocate state outside any capture
        # a captured step bakes in buffers and Python scalars: rebuild it when any changed
        # (one entry per batch size, so a learning-rate schedule does not pile up graphs)
        sig = (opt.generation, tuple(sorted(opt.hparams.items())))
        hit = self._steps.get(batch)
        if hit is not None and hit[0] == sig:
            return hit[1]
        xb, tb, loss_buf, grad_fn = self._grad_fn_for(batch)
        params, grads = self._params, self._grads

        if opt.capturable_on(B):
            def body():
                grad_fn()
                opt.update(B, params, grads)
            captured = B.capture(body)

            def run():
                opt.iterations += 1  # on the host: a replayed graph runs no Python
                captured()
        else:  # a scalar changes every step (Adam's t): capture the gradient only
            captured = B.capture(grad_fn)

            def run():
                captured()
                opt.step(B, params, grads)
        entry = (xb, tb, loss_buf, run, grad_fn)
        self._steps[batch] = (sig, entry)
        return entry

    def _epoch_fn(self, n_samples: int, batch: int, acc, opt, sources):
        """One pass over the training data held in ``sources`` = (X_flat, T_flat) (the flat
        staging buffers, n_samples rows) as a single callable: per batch (every ``batch``
        rows, then the short rest) forward + loss + backward straight on views of the buffers
        (no copies), the update, and ``acc += rows / n_samples * loss``. Captured whole (one
        CUDA graph per epoch, the short last batch included) when the backend records and the
        optimizer is capturable; else it runs eagerly. Cached while the buffers, ``acc`` and
        the optimizer signature stay the same: a cached epoch costs no Python per batch (its
        views are made only when it is built)."""
        B = self.backend
        self._steps_for(opt)
        opt._ensure_state(B, self._params)
        sig = (opt.generation, tuple(sorted(opt.hparams.items())), acc, tuple(sources))
        key = ("epoch", n_samples, batch)
        hit = self._steps.get(key)
        if hit is not None and _same(hit[0], sig):
            return hit[1]
        n_in, n_out = self.layer_sizes[0], self.layer_sizes[-1]
        X_flat, T_flat = sources
        batches = []
        for s in range(0, n_samples, batch):
            k = min(batch, n_samples - s)
            batches.append((B.view(X_flat, s * n_in, (k, n_in)),
                            B.view(T_flat, s * n_out, (k, n_out)), k / n_samples))
        params, grads = self._params, self._grads
        n = len(batches)
        rows = {x.shape[0] for x, _, _ in batches}
        capturable = opt.capturable_on(B)
        lr = opt.plain_step_size()
        fused = whole = None
        if lr is not None and capturable:  # plain SGD: maybe one fused program per step
            first = B.fused_sgd_step(self, batch)
            whole = getattr(first, "epoch", None)
            if whole is None and first is not None:
                fused = {k: first if k == batch else B.fused_sgd_step(self, k) for k in rows}
                if any(f is None for f in fused.values()):
                    fused = None
        if whole is not None:  # the fused step also runs every batch in one call
            X_all = B.view(X_flat, 0, (n_samples, n_in))
            T_all = B.view(T_flat, 0, (n_samples, n_out))
            weights = np.array([w for _, _, w in batches], dtype=self.dtype)

            def run():
                opt.iterations += n
                whole(params, X_all, T_all, lr, weights, acc)
            self._steps[key] = (sig, run)
            return run
        if fused is not None:
            def train(x, t, w, update):  # gradient and update in the backend's fused step
                B.axpy(w, fused[x.shape[0]].step(params, x, t, lr), acc)
        else:
            # one set of buffers (and gradient function) per batch size
            grad_fns = {k: self._grad_fn_for(k)[3] for k in rows}

            def train(x, t, w, update):
                # acc += w * loss inside the output layer's call (one launch where it is fused)
                grad_fns[x.shape[0]](x, t, (acc, w))
                update(B, params, grads)

        if capturable:
            def body():
                for x, t, w in batches:
                    train(x, t, w, opt.update)
            captured = B.capture(body)

            def run():
                opt.iterations += n  # on the host: a replayed graph runs no Python
                captured()
        else:
            def run():
                for x, t, w in batches:
                    train(x, t, w, opt.step)
        self._steps[key] = (sig, run)
        return run

    def _steps_for(self, opt) -> None:
        """Compiled steps belong to one optimizer (its state buffers are baked in): drop them
        when another one takes over."""
        if self.__dict__.get("_steps_opt") is not opt:
            self._steps = {}
            self._steps_opt = opt

    def _grad_fn_for(self, batch: int):
        """``_make_grad_fn(batch)``, made once per batch size (the per-step and the per-epoch
        programs share its buffers; they never run at the same time)."""
        key = ("grad", batch)
        if key not in self._steps:
            self._steps[key] = self._make_grad_fn(batch)
        return self._steps[key]

    def _make_grad_fn(self, batch: int):
        """Buffers for one batch size and a function running forward + loss + backward on
        them: input ``xb`` and target ``tb`` in (or any batch ``x``, ``t`` of the same shape
        passed as arguments: a view into the training data needs no copy), loss (0-d
        ``loss_buf``) and the flat gradient buffer out; no weight changes, no allocation of its
        own beyond the backend's ops. ``grad_fn(x, t, loss_acc=(acc, w))`` also adds w * loss
        into the 0-d ``acc`` (an epoch's running loss)."""
        B = self.backend
        sizes = self.layer_sizes
        xb = B.zeros((batch, sizes[0]), self.dtype)
        tb = B.zeros((batch, sizes[-1]), self.dtype)
        Z = [B.zeros((batch, n), self.dtype) for n in sizes[1:]]
        A = [B.zeros((batch, n), self.dtype) for n in sizes[1:]]
        loss_buf = B.zeros((), self.dtype)
        views, gviews, acts, lossfn = self._views, self._gviews, self._run_acts, self.loss
        n = len(views)

        def grad_fn(x=xb, t=tb, loss_acc=None):
            inputs = [x]
            outs_z, outs_a = [], []
            a = x
            for i in range(n - 1):
                W, b = views[i]
                z, a = B.linear_forward(a, W, b, acts[i], out_z=Z[i], out_a=A[i])
                outs_z.append(z)
                outs_a.append(a)
                inputs.append(a)
            # the output layer: forward, loss and backward in one backend call (one kernel
            # where the backend fuses them); g comes back as the delta of the layer below
            # (its derivative applied where the backend can, e.g. in a GEMM's epilogue)
            W, b = views[n - 1]
            gW, gb = gviews[n - 1]
            below = (acts[n - 2], outs_z[n - 2], outs_a[n - 2]) if n > 1 else None
            # ... and the layer below's bias gradient (the column sums of its delta) with it
            gb_below = gviews[n - 2][1] if n > 1 else None
            _, g, _, _ = B.output_layer_grad(a, W, b, t, lossfn.method, acts[n - 1],
                                             need_grad_x=n > 1, out_grad_W=gW, out_grad_b=gb,
                                             below=below, out_z=Z[n - 1], out_a=A[n - 1],
                                             out_loss=loss_buf, out_grad_b_below=gb_below,
                                             loss_acc=loss_acc)
            for i in range(n - 2, -1, -1):
                W, b = views[i]
                gW, gb = gviews[i]
                below = (acts[i - 1], outs_z[i - 1], outs_a[i - 1]) if i > 0 else None
                done = i == n - 2  # this layer's bias gradient came with the output layer
                g, _, _ = B.linear_backward(inputs[i], W, outs_z[i], outs_a[i], g, "linear",
                                            need_grad_x=i > 0,
                                            has_bias=b is not None and not done,
                                            out_grad_W=gW, out_grad_b=None if done else gb,
                                            below=below)
        return xb, tb, loss_buf, grad_fn

    def train_step(self, X, y, optimizer="sgd", learning_rate=None) -> float:
        """One optimizer step on one batch; returns the loss BEFORE the step (a float).

        ``X`` (M, n_in) and ``y`` are host data (validated) or backend arrays already shaped
        as targets (M, n_out) (only shapes checked). A NaN/inf loss raises
        TrainingDivergedError and restores the weights of the previous step."""
        B = self.backend
        if isinstance(X, (np.ndarray, list, tuple)):
            Xh = check_X(X, self.layer_sizes[0])
            Th = check_targets(y, Xh.shape[0], self.layer_sizes[-1], self.loss)
        else:
            Xh, Th = X, y
            want = (X.shape[0], self.layer_sizes[-1])
            if len(X.shape) != 2 or X.shape[1] != self.layer_sizes[0] or tuple(y.shape) != want:
                raise ValueError(f"device batches must be X ({X.shape[0]}, "
                                 f"{self.layer_sizes[0]}) and targets {want}")
        opt = self._resolve_optimizer(optimizer, learning_rate)
        xb, tb, loss_buf, run, _ = self._step_fn(Xh.shape[0], opt)
        B.assign(xb, _host_or_dev(Xh, self.dtype))
        B.assign(tb, _host_or_dev(Th, self.dtype))
        # ping-pong snapshots: the weights before this step, and before the previous one
        # (whose loss was finite, or we would have stopped): one device copy per step
        if self._snapshot is None:
            self._snapshot = [B.copy(self._params), B.copy(self._params)]
            self._snap_turn = 0
        cur = self._snapshot[self._snap_turn]
        B.assign(cur, self._params)
        run()
        loss = float(B.to_numpy(loss_buf))
        if not np.isfinite(loss):
            B.assign(self._params, self._snapshot[1 - self._snap_turn])
            raise TrainingDivergedError(
                f"the loss became {loss} at this step; the weights of the last step with a "
                f"finite loss were restored. Lower the learning rate (now "
                f"{opt.learning_rate:g}) or scale the inputs.")
        self._snap_turn = 1 - self._snap_turn
        return loss

    def device_data(self, X, y=None):
        """``X`` (M, n_in) and, if given, ``y`` (labels or target rows) validated once and
        copied to the model's backend as (X_dev (M, n_in), T_dev (M, n_out)) in the model's
        dtype. ``fit`` takes them in place of host arrays: the data then stays on the device
        across calls (no upload per ``fit``), as training "with the data already on the GPU"
        means."""
        Xh = check_X(X, self.layer_sizes[0])
        X_dev = self._remember_device_data(self.backend.asarray(Xh, dtype=self.dtype))
        if y is None:
            return X_dev
        Th = check_targets(y, Xh.shape[0], self.layer_sizes[-1], self.loss)
        return X_dev, self._remember_device_data(self.backend.asarray(Th, dtype=self.dtype))

    def _remember_device_data(self, a):
        """Note ``a`` as made (and validated) by ``device_data``, weakly. Host backends' device
        arrays are plain NumPy arrays, which ``fit`` could not tell from user data: without
        this it re-validated and re-copied them on every call (~45 ms for 60k MNIST rows)."""
        made = self.__dict__.get("_device_made")
        if made is None:
            made = self._device_made = weakref.WeakValueDictionary()
        try:
            made[id(a)] = a
        except TypeError:  # an array type without weak references: fit recognises it by type
            pass
        return a

    def _made_on_device(self, a) -> bool:
        """True when ``a`` is an array this model's ``device_data`` returned (and still alive:
        a dead array's id leaves the weak mapping with it, so a reused id cannot match)."""
        made = self.__dict__.get("_device_made")
        return made is not None and made.get(id(a)) is a

    def fit(self, X, y, epochs=1, batch_size=32, optimizer="sgd", learning_rate=None,
            validation_data=None, validation_fraction=0.0, early_stopping=False,
            callbacks=None, verbose=1, shuffle=True, metrics="auto"):
        """Train for ``epochs`` passes; returns self. See :func:`mlpaccel.training.fit`."""
        from .training import fit

        return fit(self, X, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                   learning_rate=learning_rate, validation_data=validation_data,
                   validation_fraction=validation_fraction, early_stopping=early_stopping,
                   callbacks=callbacks, verbose=verbose, shuffle=shuffle, metrics=metrics)

    # ------------------------------------------------------------------ trace, persistence
    def trace_step(self, x, t, learning_rate=0.5, file=None) -> str:
        """Print one SGD step on one sample the way seed 002 writes it (every z, activation,
        error, delta, gradient and updated weight beside its formula); applies the step and
        returns the text. See :mod:`mlpaccel.trace`."""
        from .trace import trace_step

        return trace_step(self, x, t, learning_rate=learning_rate, file=file)

    def save(self, path) -> None:
        """Write weights (.npz) and JSON metadata atomically. See :mod:`mlpaccel.persistence`."""
        from .persistence import save

        save(self, path)

    @classmethod
    def load(cls, path, backend="auto"):
        """A model read from ``save``'s file onto ``backend`` (rejects tampered files)."""
        from .persistence import load

        return load(path, backend=backend)


def _same(a: tuple, b: tuple) -> bool:
    """Signatures compared element by element, arrays by identity (== on arrays is
    elementwise, and a cached epoch must read exactly the buffers it was built on)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tuple) and isinstance(y, tuple):
            if not _same(x, y):
                return False
        elif isinstance(x, (int, float, str)) or x is None:
            if type(x) is not type(y) or x != y:
                return False
        elif x is not y:
            return False
    return True


def _host_or_dev(a, dtype):
    """Host arrays are cast to the model dtype; backend arrays pass through to ``assign``."""
    if isinstance(a, np.ndarray):
        return a.astype(dtype, copy=False)
    return a
