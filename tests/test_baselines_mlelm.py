"""ML-ELM against an independent numpy implementation of PAPER_EXPERIMENTS.md's definition."""

import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.baselines import fit_mlelm
from zorb.data import load_dataset

EPS = 1e-5  # zorb's softmax margin (ZORB.md, "Forward pass")


def with_ones(a):
    return np.concatenate([a, np.ones((len(a), 1))], axis=1)


def reference_mlelm(initial, biases, activations, x, y, rcond=1e-15):
    """The definition, literally: hidden ``W = (pinv(H) @ [A, 1])^T`` with ``H = [A, 1] @ W_init``,
    the output layer ``pinv([A, 1]) @ Y``."""
    a, weights = x, []
    for w_init, bias, activation in zip(initial[:-1], biases, activations):
        design = with_ones(a) if bias else a
        beta = np.linalg.pinv(design @ w_init, rcond=rcond) @ design
        weights.append(beta.T)
        a = activation(design @ beta.T)
    design = with_ones(a) if biases[-1] else a
    weights.append(np.linalg.pinv(design, rcond=rcond) @ y)
    return weights, design @ weights[-1]


def softmax(h):
    e = np.exp(h - h.max(axis=1, keepdims=True)) - EPS
    return e / e.sum(axis=1, keepdims=True)


def relative(a, b):
    return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


def test_matches_the_definition_in_numpy(rng):
    x = rng.normal(size=(40, 6))
    y = np.eye(3)[rng.integers(0, 3, 40)]
    specs = [{"type": "dense", "units": 5}, {"type": "tanh"}, {"type": "dense", "units": 4, "bias": False},
             {"type": "sigmoid"}, {"type": "dense", "units": 3}, {"type": "softmax"}]
    net = zorb.build_network(specs, (6,), output_dim=3, seed=4)
    trained, report = fit_mlelm(net, x, y, rcond=1e-15)
    initial = [np.asarray(w) for w in net.weights]
    sigmoid = lambda h: 1 / (1 + np.exp(-h))  # noqa: E731
    weights, output = reference_mlelm(initial, [True, False, True], [np.tanh, sigmoid], x, y)
    assert [w.dtype for w in trained.weights] == [jnp.float64] * 3
    assert [w.shape for w in trained.weights] == [(7, 5), (5, 4), (5, 3)]
    for ours, theirs in zip(trained.weights, weights):
        assert relative(ours, theirs) < 1e-10
    assert relative(zorb.predict(trained, x), softmax(output)) < 1e-10

    assert [r.index for r in report.layers] == [1, 3, 5]
    assert [r.design_shape for r in report.layers] == [(40, 5), (40, 4), (40, 5)]
    assert all(r.spectrum.dtype == np.float64 and r.rank == min(r.design_shape) for r in report.layers)
    assert report.fit_seconds > 0 and report.rcond == 1e-15


def test_regression_output_is_plain_least_squares(rng):
    x = rng.uniform(size=(30, 3))
    y = np.sin(x.sum(axis=1, keepdims=True))
    net = zorb.build_network([{"type": "dense", "units": 4}, {"type": "sigmoid"}, {"type": "dense", "units": 1}],
                             (3,), seed=1)
    trained, _ = fit_mlelm(net, x, y)
    sigmoid = lambda h: 1 / (1 + np.exp(-h))  # noqa: E731
    weights, output = reference_mlelm([np.asarray(w) for w in net.weights], [True, True], [sigmoid], x, y)
    assert relative(zorb.predict(trained, x), output) < 1e-10


def test_runs_the_papers_iris_network():
    data = load_dataset("iris", seed=0)
    specs = [{"type": "dense", "units": 8}, {"type": "sigmoid"}, {"type": "dense", "units": 3}, {"type": "softmax"}]
    net = zorb.build_network(specs, data.input_shape, output_dim=data.output_dim, seed=0)
    trained, report = fit_mlelm(net, data.x_train, data.y_train, rcond=1e-15)
    assert np.all(np.isfinite(zorb.predict(trained, data.x_test)))
    # H = [A, 1] @ W_init is 105 x 8 but of rank 5 (= d_in + 1): the cut keeps 5 directions
    assert report.layers[0].rank == 5 and report.layers[1].design_shape == (105, 9)


def test_refuses_conv_networks_fitted_networks_and_bad_rcond(rng):
    conv = zorb.build_network([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "flatten"},
                               {"type": "dense", "units": 2}], (5, 5, 1), seed=0)
    with pytest.raises(zorb.ConfigError, match="ML-ELM is defined for dense networks, but layer 1 is conv2d"):
        fit_mlelm(conv, rng.normal(size=(4, 5, 5, 1)), rng.normal(size=(4, 2)))
    x, y = rng.normal(size=(20, 2)), np.eye(2)[rng.integers(0, 2, 20)]
    net = zorb.build_network([{"type": "dense", "units": 3}, {"type": "tanh"}, {"type": "dense", "units": 2},
                              {"type": "softmax"}], (2,), seed=0)
    fitted, _ = zorb.fit(net, x, y)
    with pytest.raises(zorb.ConfigError, match="ML-ELM starts from the untrained network"):
        fit_mlelm(fitted, x, y)
    with pytest.raises(zorb.ConfigError, match="rcond must be < 1"):
        fit_mlelm(net, x, y, rcond=2.0)
    with pytest.raises(zorb.ConfigError, match="X has 20 samples but Y has 19"):
        fit_mlelm(net, x, y[:19])
