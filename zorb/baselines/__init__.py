"""The paper's baselines on the same ``zorb.Network``: Adam and ML-ELM (PAPER_EXPERIMENTS.md).

    net = zorb.build_network(specs, data.input_shape, output_dim=data.output_dim, seed=seed)
    zorb_net, zorb_report = zorb.fit(net, X, Y, rcond=1e-15, seed=seed)
    adam_net, adam_report = train_adam(net, X, Y, learning_rate=1e-2, steps=5000, seed=seed)
    elm_net, elm_report = fit_mlelm(net, X, Y, rcond=1e-15)
    logreg_net, logreg_report = fit_logistic_regression(X, Y, C=1.0)   # a reference, not from ``net``

All three start from the same arrays: ``zorb.build_network`` draws every initial weight from
the seed, and no baseline re-initialises anything. ``save_initial_weights`` and
``load_initial_weights`` carry those arrays to another implementation or process.
"""

from __future__ import annotations

import os

from zorb.errors import ConfigError
from zorb.core.io import load, save
from zorb.core.network import Network


def check_untrained(network: Network, method: str) -> None:
    """Refuse a network whose activations carry ZORB's state (an output range, softmax normalisers).

    A baseline starts from the initial network with plain activations; a network that has
    been through ``zorb.fit`` is not that network.
    """
    for index, layer in enumerate(network.layers, 1):
        if not layer.parametric and any(value is not None for value in layer.arrays().values()):
            raise ConfigError(
                f"layer {index} ({layer.kind}) carries ZORB's fitted activation state: {method} starts "
                f"from the untrained network, so pass the one zorb.build_network returned (same seed)")


def save_initial_weights(network: Network, path: str | os.PathLike) -> None:
    """Write the network's layer specs and initial weights in zorb's safe ``.npz`` format."""
    check_untrained(network, "save_initial_weights")
    save(network, path)


def load_initial_weights(network: Network, path: str | os.PathLike) -> Network:
    """``network`` with the weights saved by ``save_initial_weights``, bit for bit.

    Raises ``ConfigError`` naming the first layer whose spec or weight shape differs from the
    file's (or the input shape, or the number of layers).
    """
    saved = load(path)
    where = os.fspath(path)
    if tuple(saved.input_shape) != tuple(network.input_shape):
        raise ConfigError(f"{where} holds a network with input shape {tuple(saved.input_shape)}, "
                          f"not {tuple(network.input_shape)}: save the initial weights of this architecture")
    for index, (ours, theirs) in enumerate(zip(network.layers, saved.layers), 1):
        if ours.spec() != theirs.spec():
            raise ConfigError(f"layer {index}: {where} holds {theirs.spec()} but the network has {ours.spec()}")
        if ours.parametric and ours.weights.shape != theirs.weights.shape:
            raise ConfigError(f"layer {index}: {where} holds weights of shape {tuple(theirs.weights.shape)} "
                              f"but the network's are {tuple(ours.weights.shape)}")
    if len(saved.layers) != len(network.layers):
        raise ConfigError(f"{where} holds {len(saved.layers)} layers but the network has {len(network.layers)}")
    if saved.dtype != network.dtype:
        raise ConfigError(f"{where} holds {saved.dtype} weights but the network is {network.dtype}")
    return network.with_weights(saved.weights)


from zorb.baselines.logistic import LogisticReport, fit_logistic_regression  # noqa: E402
from zorb.baselines.mlelm import MLELMReport, fit_mlelm  # noqa: E402

# Adam needs optax (a second of imports): loaded on first use, so ZORB's runs never pay for it.
_ADAM_NAMES = ("LOSSES", "AdamReport", "batch_indices", "speedup", "train_adam")


def __getattr__(name: str):
    if name in _ADAM_NAMES:
        from zorb.baselines import adam

        return getattr(adam, name)
    raise AttributeError(f"module 'zorb.baselines' has no attribute {name!r}")


__all__ = [
    "check_untrained", "save_initial_weights", "load_initial_weights", "LOSSES", "AdamReport", "batch_indices",
    "speedup", "train_adam", "MLELMReport", "fit_mlelm", "LogisticReport", "fit_logistic_regression",
]
