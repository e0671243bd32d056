"""Network building: shapes, clear errors, Glorot initial weights, seeds."""

import jax.numpy as jnp
import numpy as np
import pytest

import zorb

CONV_DENSE = [{"type": "conv2d", "filters": 8, "kernel_size": 3}, {"type": "sigmoid"}, {"type": "flatten"},
              {"type": "dense", "units": "outputs"}, {"type": "softmax"}]


def test_shapes_are_inferred_and_outputs_come_from_the_data():
    net = zorb.build_network(CONV_DENSE, (28, 28, 1), output_dim=10)
    assert [layer.out_shape for layer in net.layers] == [(26, 26, 8), (26, 26, 8), (5408,), (10,), (10,)]
    assert net.parametric_indices == [1, 4]
    assert [w.shape for w in net.weights] == [(10, 8), (5409, 10)]
    assert net.output_shape == (10,)


@pytest.mark.parametrize("specs,shape,message", [
    ([{"type": "dense", "units": 4}, {"type": "dropout"}], (3,), "layer 2: unknown layer type 'dropout'"),
    ([{"type": "dense", "units": 0}], (3,), "layer 1: dense units must be a positive integer, got 0"),
    ([{"type": "dense", "units": 2.5}], (3,), "layer 1: dense units must be a positive integer"),
    ([{"type": "dense", "unit": 4}], (3,), "layer 1: dense has no parameter 'unit'"),
    ([{"type": "dense"}], (3,), "layer 1: dense needs 'units'"),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "sigmoid"},
      {"type": "conv2d", "filters": 2, "kernel_size": 5}], (6, 6, 1),
     "layer 3: conv2d kernel 5 is larger than its 4x4 input"),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "dense", "units": 2}], (6, 6, 1),
     "layer 2: dense needs a flat input but gets 4x4x2: add {type: flatten} before it"),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 3}], (36,), "layer 1: conv2d needs an image input"),
    ([{"type": "relu", "inverse": "mirror"}], (3,), "layer 1: relu inverse must be one of random, clip, keep"),
    ([{"type": "sigmoid", "eps": 0.7}], (3,), "layer 1: sigmoid eps must be a number in"),
    ([{"units": 3}], (3,), "layer 1: a layer spec is a mapping with a 'type'"),
    ([], (3,), "non-empty list of layer specs"),
])
def test_impossible_stacks_give_one_clear_error(specs, shape, message):
    with pytest.raises(zorb.ConfigError) as error:
        zorb.build_network(specs, shape)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_output_width_mismatch_is_refused():
    with pytest.raises(zorb.ConfigError, match="set the last dense layer's units to 3"):
        zorb.build_network([{"type": "dense", "units": 2}], (4,), output_dim=3)


def test_glorot_uniform_on_every_row_including_bias():
    net = zorb.build_network([{"type": "dense", "units": 300}], (200,), seed=3)
    w = np.asarray(net.weights[0])
    limit = np.sqrt(6 / (200 + 300))
    assert w.shape == (201, 300)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert np.abs(w[-1]).max() > 0.9 * limit  # the bias row is drawn too, not zero
    assert abs(w.mean()) < 0.01 * limit and w.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)

    conv = zorb.build_network([{"type": "conv2d", "filters": 16, "kernel_size": 3}], (8, 8, 4), seed=3)
    limit = np.sqrt(6 / (9 * 4 + 9 * 16))
    assert np.abs(np.asarray(conv.weights[0])).max() <= limit


def test_same_seed_same_weights_bit_for_bit_and_layers_draw_independently():
    specs = [{"type": "dense", "units": 5}, {"type": "tanh"}, {"type": "dense", "units": 5}]
    a = zorb.build_network(specs, (5,), seed=7)
    b = zorb.build_network(specs, (5,), seed=7)
    c = zorb.build_network(specs, (5,), seed=8)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        assert wa.dtype == jnp.float64
        np.testing.assert_array_equal(wa, wb)
        assert not np.array_equal(wa, wc)
    assert not np.array_equal(a.weights[0], a.weights[1])


def test_start_from_given_weights():
    specs = [{"type": "dense", "units": 2}, {"type": "sigmoid"}, {"type": "dense", "units": 1}]
    given = [np.full((4, 2), 0.5), np.arange(3.0).reshape(3, 1)]
    net = zorb.build_network(specs, (3,), weights=given)
    for w, g in zip(net.weights, given):
        np.testing.assert_array_equal(w, g)
        assert w.dtype == jnp.float64
    with pytest.raises(zorb.ConfigError, match=r"layer 3: weights must have shape \(3, 1\)"):
        zorb.build_network(specs, (3,), weights=[given[0], np.zeros((2, 1))])
    with pytest.raises(zorb.ConfigError, match="expected 2 weight arrays"):
        zorb.build_network(specs, (3,), weights=given[:1])


def test_float32_is_an_option_and_stays_float32(rng):
    net = zorb.build_network([{"type": "dense", "units": 4}, {"type": "tanh"}, {"type": "dense", "units": 2}],
                             (3,), dtype="float32")
    assert all(w.dtype == jnp.float32 for w in net.weights)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    trained, report = zorb.fit(net, x, y, solver="qr", rcond=1e-6)
    assert all(w.dtype == jnp.float32 for w in trained.weights)
    assert zorb.predict(trained, x).dtype == np.float32
    with pytest.raises(zorb.ConfigError, match="dtype must be one of"):
        zorb.build_network([{"type": "dense", "units": 1}], (3,), dtype="float16")
