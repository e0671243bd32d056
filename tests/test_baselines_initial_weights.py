"""ZORB, ML-ELM and Adam start from the same arrays; initial weights travel bit for bit."""

import numpy as np
import pytest

import zorb
from zorb.baselines import fit_mlelm, load_initial_weights, save_initial_weights, train_adam
from zorb.data import load_dataset

XOR = [{"type": "dense", "units": 16}, {"type": "tanh"}, {"type": "dense", "units": 8}, {"type": "relu"},
       {"type": "dense", "units": 1}, {"type": "sigmoid"}]


@pytest.fixture(scope="module")
def xor():
    data = load_dataset("xor", seed=3, train_samples=200)
    return data, zorb.build_network(XOR, data.input_shape, output_dim=data.output_dim, seed=3)


def assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for u, v in zip(a.weights, b.weights):
        assert u.dtype == v.dtype == np.float64
        np.testing.assert_array_equal(u, v)


def test_the_seed_fixes_every_initial_weight(xor):
    data, net = xor
    assert_same_weights(net, zorb.build_network(XOR, data.input_shape, output_dim=data.output_dim, seed=3))
    other = zorb.build_network(XOR, data.input_shape, output_dim=data.output_dim, seed=4)
    assert not any(np.array_equal(u, v) for u, v in zip(net.weights, other.weights))
    # Adam and ML-ELM read the network's arrays and leave them alone
    untouched, report = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=0, seed=3)
    assert_same_weights(untouched, net)
    assert report.curve[0][2] == zorb.evaluate(net, data.x_train, data.y_train)["error"]
    fit_mlelm(net, data.x_train, data.y_train)
    zorb.fit(net, data.x_train, data.y_train, seed=3)
    assert_same_weights(net, zorb.build_network(XOR, data.input_shape, output_dim=data.output_dim, seed=3))


def test_saved_initial_weights_give_every_method_the_same_start(xor, tmp_path):
    data, net = xor
    x, y = data.x_train, data.y_train
    path = tmp_path / "initial.npz"
    save_initial_weights(net, path)
    elsewhere = zorb.build_network(XOR, data.input_shape, output_dim=data.output_dim, seed=99)
    restored = load_initial_weights(elsewhere, path)
    assert_same_weights(restored, net)

    for method in (lambda n: zorb.fit(n, x, y, seed=3)[0], lambda n: fit_mlelm(n, x, y)[0],
                   lambda n: train_adam(n, x, y, learning_rate=1e-2, steps=50, seed=3)[0]):
        assert_same_weights(method(restored), method(net))


@pytest.mark.parametrize("specs,shape,message", [
    ([{"type": "dense", "units": 15}] + XOR[1:], (2,), "layer 1: .* holds \\{'type': 'dense', 'units': 16"),
    (XOR[:3] + [{"type": "tanh"}] + XOR[4:], (2,), "layer 4: .* holds \\{'type': 'relu'"),
    (XOR[:4], (2,), "holds 6 layers but the network has 4"),
    (XOR + [{"type": "identity"}], (2,), "holds 6 layers but the network has 7"),
    (XOR, (3,), "input shape \\(2,\\), not \\(3,\\)"),
])
def test_refuses_a_file_of_another_architecture(xor, tmp_path, specs, shape, message):
    _, net = xor
    path = tmp_path / "initial.npz"
    save_initial_weights(net, path)
    with pytest.raises(zorb.ConfigError, match=message):
        load_initial_weights(zorb.build_network(specs, shape, seed=0), path)


def test_refuses_to_save_a_fitted_network_as_initial_weights(xor, tmp_path):
    data, net = xor
    fitted, _ = zorb.fit(net, data.x_train, data.y_train)
    with pytest.raises(zorb.ConfigError, match="layer 2 \\(tanh\\) carries ZORB's fitted activation state"):
        save_initial_weights(fitted, tmp_path / "fitted.npz")
