"""Loss functions: names, formulas, and how each pairs with the output activation.

| name                  | E (per batch of M samples)                      | d E / d input          |
|-----------------------|-------------------------------------------------|------------------------|
| mse                   | mean_i 1/2 sum_j (o_ij - t_ij)^2 (seeds' E)     | (o - t) / M            |
| binary_cross_entropy  | -mean t log o + (1 - t) log(1 - o)  (BCELoss)   | (o - t)/(o(1 - o))/size|
| cross_entropy         | mean_i logsumexp(z_i) - z_i[y_i]  (softmax + CE | (softmax(z) - y) / M   |
|                       | fused on the logits z, as PyTorch's CE)         |                        |

With ``cross_entropy`` the output layer runs ``linear`` and the backend's fused
``softmax_cross_entropy`` takes the logits; ``predict_proba`` applies the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._names import lookup


@dataclass(frozen=True)
class Loss:
    """A loss: its name, the Backend method computing it and how it pairs with the output."""

    name: str
    method: str  # the Backend method computing (loss, grad)
    formula: str
    #: output activation this loss is fused with (that layer then runs "linear"), or None
    fused_activation: str | None = None
    #: the output activation used when the user names none
    default_output: str = "linear"
    #: True when targets are class labels (accuracy is the score), False for regression (R^2)
    classifier: bool = False

    def __call__(self, backend, output, target):
        """(loss 0-d backend array, d loss / d output) for a batch."""
        return getattr(backend, self.method)(output, target)


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", "mse", "1/2 sum (o - t)^2, averaged over the batch"),
    "binary_cross_entropy": Loss("binary_cross_entropy", "binary_cross_entropy",
                                 "-(t log o + (1 - t) log(1 - o)), averaged",
                                 default_output="sigmoid", classifier=True),
    "cross_entropy": Loss("cross_entropy", "softmax_cross_entropy",
                          "logsumexp(z) - z[label], averaged (softmax fused)",
                          fused_activation="softmax", default_output="softmax", classifier=True),
}
ALIASES = {"squared_error": "mse", "mean_squared_error": "mse", "bce": "binary_cross_entropy",
           "binary_crossentropy": "binary_cross_entropy", "log_loss": "cross_entropy",
           "ce": "cross_entropy", "categorical_crossentropy": "cross_entropy",
           "sparse_categorical_crossentropy": "cross_entropy", "crossentropy": "cross_entropy"}


def get(name) -> Loss:
    """The Loss called ``name`` (aliases accepted) or ValueError with a did-you-mean hint."""
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str):
        raise TypeError(f"loss must be a name, got {type(name).__name__}: {name!r}")
    return LOSSES[lookup("loss", name, LOSSES, ALIASES)]
