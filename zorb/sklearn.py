"""scikit-learn estimators over ``zorb.fit``: ``ZORBClassifier`` and ``ZORBRegressor``.

    from sklearn.model_selection import GridSearchCV
    search = GridSearchCV(zorb.sklearn.ZORBClassifier(layers="dense[64] tanh"), {"ridge": [0.0, 1e-3, 1e-1]})
    search.fit(X, y)

``layers`` are the hidden layers (a ``network.spec`` string or a list of layer specs); the
estimator appends the output layer: ``dense[classes] softmax`` for the classifier (one-hot
targets), ``dense[outputs]`` for the regressor. ``solver``, ``rcond`` and ``ridge`` are
``zorb.fit``'s; ``seed`` draws the initial weights. This is the only zorb module that
imports scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

import zorb
from zorb.errors import ZorbError


class _ZORBEstimator(BaseEstimator):
    def __init__(self, layers="dense[32] tanh", solver="svd", rcond=1e-9, ridge=0.0, seed=0):
        self.layers = layers
        self.solver = solver
        self.rcond = rcond
        self.ridge = ridge
        self.seed = seed

    def _fit_network(self, X, Y, output_layers):
        hidden = zorb.parse_spec(self.layers) if isinstance(self.layers, str) else [dict(s) for s in self.layers]
        try:
            network = zorb.build_network(hidden + output_layers, (X.shape[1],), seed=self.seed)
            self.network_, self.report_ = zorb.fit(network, X, Y, solver=self.solver, rcond=self.rcond,
                                                   ridge=self.ridge, seed=self.seed)
        except ZorbError as error:  # scikit-learn's tools expect ValueError for a bad parameter or fit
            raise ValueError(str(error)) from None

    def _outputs(self, X):
        check_is_fitted(self, "network_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return zorb.predict(self.network_, X)


class ZORBClassifier(ClassifierMixin, _ZORBEstimator):
    """A ZORB network classifier: hidden ``layers``, then ``dense[classes] softmax`` fitted to one-hot labels."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"ZORBClassifier needs samples of at least 2 classes, got 1 class ({self.classes_[0]!r})")
        Y = np.eye(len(self.classes_))[encoded]
        self._fit_network(X, Y, [{"type": "dense", "units": len(self.classes_)}, {"type": "softmax"}])
        return self

    def predict_proba(self, X):
        """The softmax output, (N, classes). zorb's softmax subtracts ``eps`` from each exponential
        (ZORB.md), so an entry can dip below 0 by about ``eps``: clipped and renormalised here."""
        p = np.clip(self._outputs(X), 0.0, None)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        out = self._outputs(X)
        return self.classes_[np.argmax(out, axis=1)]


class ZORBRegressor(RegressorMixin, _ZORBEstimator):
    """A ZORB network regressor: hidden ``layers``, then a linear ``dense[outputs]``."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # Y may have several columns: one least-squares target each
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        self.single_output_ = y.ndim == 1
        Y = y.reshape(len(y), -1)
        self._fit_network(X, Y, [{"type": "dense", "units": Y.shape[1]}])
        return self

    def predict(self, X):
        out = self._outputs(X)
        return out[:, 0] if self.single_output_ else out


__all__ = ["ZORBClassifier", "ZORBRegressor"]
