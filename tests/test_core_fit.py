"""The one-pass fit: learning on the paper's problems, its report, determinism, save/load."""

import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.data import load_dataset

# The paper's networks (PAPER_EXPERIMENTS.md, group A), output layer included.
PAPER_NETWORKS = {
    "xor": [(16, "tanh"), (8, "relu"), (1, "sigmoid")],
    "iris": [(8, "sigmoid"), (3, "softmax")],
    "two_spirals": [(32, "tanh"), (16, "relu"), (8, "tanh"), (4, "relu"), (1, "sigmoid")],
    "sinc": [(200, "sigmoid"), (200, "sigmoid"), (1, None)],
}


def paper_specs(name):
    specs = []
    for units, activation in PAPER_NETWORKS[name]:
        specs.append({"type": "dense", "units": units})
        if activation:
            specs.append({"type": activation})
    return specs


def paper_run(name, seed, rcond=1e-15):
    data = load_dataset(name, seed=seed)
    net = zorb.build_network(paper_specs(name), data.input_shape, output_dim=data.output_dim, seed=seed)
    trained, report = zorb.fit(net, data.x_train, data.y_train, solver="svd", rcond=rcond, seed=seed)
    train = zorb.evaluate(trained, data.x_train, data.y_train)
    test = zorb.evaluate(trained, data.x_test, data.y_test)
    return train, test, report


@pytest.mark.parametrize("name,metric,bound", [
    ("xor", "test_accuracy", 0.94),
    ("iris", "test_accuracy", 0.93),
    ("two_spirals", "test_accuracy", 0.78),
    ("sinc", "train_error", 0.05),
])
def test_learns_the_papers_problems_with_its_settings(name, metric, bound):
    """Median over the paper's 10 seeds per cell. XOR's spread is wide: over 30 seeds its
    test accuracy is 0.955 +- 0.018 (median 0.956; the paper's code: 0.959 +- 0.010), and
    seeds 0-4 alone happen to give a median of 0.933."""
    values = []
    for seed in range(10):
        train, test, _ = paper_run(name, seed)
        values.append(test["accuracy"] if metric == "test_accuracy" else train["error"])
    median = float(np.median(values))
    if metric == "train_error":
        assert median <= bound, values
    else:
        assert median >= bound, values


def test_sinc_needs_the_near_noise_directions_that_rcond_1e15_keeps():
    """Observed: at rcond 1e-12 the output solve drops the directions the fit lives on."""
    keep, _, report_keep = paper_run("sinc", 0, rcond=1e-15)
    cut, _, report_cut = paper_run("sinc", 0, rcond=1e-12)
    assert report_cut.layers[-1].rank < report_keep.layers[-1].rank
    assert cut["error"] > 2 * keep["error"]


def test_report_describes_every_solve(rng):
    x = rng.normal(size=(120, 5, 5, 2))
    y = np.eye(3)[rng.integers(0, 3, 120)]
    specs = [{"type": "conv2d", "filters": 4, "kernel_size": 2, "stride": 2}, {"type": "tanh"}, {"type": "flatten"},
             {"type": "dense", "units": 6}, {"type": "relu"}, {"type": "dense", "units": "outputs"},
             {"type": "softmax"}]
    net = zorb.build_network(specs, x.shape[1:], output_dim=3, seed=1)
    seen = []
    trained, report = zorb.fit(net, x, y, solver="qr", rcond=1e-12, b_rcond=1e-9,
                               per_layer={6: {"rcond": 1e-3, "ridge": 0.5}}, callback=seen.append)
    assert [r.index for r in report.layers] == [1, 4, 6] == [r.index for r in seen]
    assert [r.design_shape for r in report.layers] == [(120 * 4, 9), (120, 17), (120, 7)]
    for r in report.layers:
        assert r.spectrum.dtype == np.float64 and r.spectrum.shape == (min(r.design_shape),)
        assert np.all(np.diff(r.spectrum) <= 0)
        kept = r.spectrum[r.spectrum > r.cutoff]
        assert r.rank == kept.size and r.cond == pytest.approx(kept[0] / kept[-1])
        assert r.cutoff == pytest.approx(r.u_rcond * r.spectrum[0])
        assert r.solve_seconds > 0 and r.target_seconds > 0 and r.compile_seconds >= 0
    assert (report.layers[0].u_rcond, report.layers[0].b_rcond) == (1e-12, 1e-9)
    assert (report.layers[2].u_rcond, report.layers[2].b_rcond, report.layers[2].ridge) == (1e-3, 1e-3, 0.5)
    assert report.fit_seconds > 0 and report.compile_seconds > 0
    # A second fit of the same shapes reuses every compiled stage: compile time is apart.
    _, again = zorb.fit(net, x, y, solver="qr", rcond=1e-12, b_rcond=1e-9, per_layer={6: {"rcond": 1e-3, "ridge": 0.5}})
    assert again.compile_seconds == 0
    # Activation state is explicit data in the trained network.
    assert trained.layers[1].output_range.shape == (2,)
    assert trained.layers[6].normalizer.shape == (120,)


def test_per_layer_options_are_checked():
    net = zorb.build_network(paper_specs("iris"), (4,), output_dim=3)
    x, y = np.zeros((10, 4)), np.eye(3)[np.arange(10) % 3]
    with pytest.raises(zorb.ConfigError, match="per_layer names layer 2, which is not a dense/conv2d layer"):
        zorb.fit(net, x, y, per_layer={2: {"rcond": 1e-3}})
    with pytest.raises(zorb.ConfigError, match="layer 3: rcond must be >= 0"):
        zorb.fit(net, x, y, per_layer={3: {"rcond": -1e-3}})
    with pytest.raises(zorb.ConfigError, match="X contains NaN"):
        zorb.fit(net, np.full((10, 4), np.nan), y)
    with pytest.raises(zorb.ConfigError, match=r"Y must have shape \(N, 3\)"):
        zorb.fit(net, x, y[:, :2])


def test_non_finite_target_stops_the_fit_naming_the_layer(rng):
    """Targets spanning the whole float64 range overflow the sigmoid inverse's affine map."""
    net = zorb.build_network([{"type": "dense", "units": 4}, {"type": "sigmoid"}, {"type": "dense", "units": 1}],
                             (3,), seed=0)
    x = rng.normal(size=(20, 3))
    y = np.where(rng.random((20, 1)) < 0.5, -1.7e308, 1.7e308)
    with pytest.raises(zorb.FitError, match=r"layer 1: .* not finite \(condition number"):
        zorb.fit(net, x, y)


def test_same_seed_same_fit_bit_for_bit_and_save_load_predicts_identically(tmp_path):
    data = load_dataset("two_spirals", seed=2)
    net = zorb.build_network(paper_specs("two_spirals"), data.input_shape, output_dim=1, seed=2)
    a, _ = zorb.fit(net, data.x_train, data.y_train, seed=2)
    b, _ = zorb.fit(net, data.x_train, data.y_train, seed=2)
    c, _ = zorb.fit(net, data.x_train, data.y_train, seed=3)  # other ReLU draws
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.weights[0], c.weights[0]) or not np.array_equal(a.weights[-1], c.weights[-1])

    path = tmp_path / "model.npz"
    zorb.save(a, path)
    loaded = zorb.load(path)
    assert [layer.spec() for layer in loaded.layers] == [layer.spec() for layer in a.layers]
    np.testing.assert_array_equal(zorb.predict(loaded, data.x_test), zorb.predict(a, data.x_test))
    for before, after in zip(a.layers, loaded.layers):
        for name, value in before.arrays().items():
            np.testing.assert_array_equal(value, after.arrays()[name])
            assert after.arrays()[name].dtype == jnp.float64


def test_save_load_keeps_softmax_state_and_refuses_pickles(tmp_path, rng):
    x, labels = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    net = zorb.build_network(paper_specs("iris"), (4,), output_dim=3)
    trained, _ = zorb.fit(net, x, np.eye(3)[labels])
    zorb.save(trained, tmp_path / "m.npz")
    loaded = zorb.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.layers[3].normalizer, trained.layers[3].normalizer)
    np.testing.assert_array_equal(loaded.layers[1].output_range, trained.layers[1].output_range)
    np.save(tmp_path / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "evil.npz", __zorb__=np.array([{"x": 1}], dtype=object))
    with pytest.raises(zorb.ConfigError, match="is not a usable zorb network file: array .__zorb__. has dtype object"):
        zorb.load(tmp_path / "evil.npz")


def test_predict_in_batches_equals_whole(rng):
    net = zorb.build_network(paper_specs("iris"), (4,), output_dim=3, seed=0)
    x = rng.normal(size=(37, 4))
    np.testing.assert_allclose(zorb.predict(net, x, batch_size=10), zorb.predict(net, x), rtol=1e-15)


def test_scores_match_their_definitions():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    s = zorb.scores(p, y)
    assert s["accuracy"] == 0.5
    assert s["error"] == pytest.approx(np.mean([np.linalg.norm(p[0] - y[0]), np.linalg.norm(p[1] - y[1])]))
    assert s["mse"] == pytest.approx(np.mean((p - y) ** 2))
    assert s["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.1])))
    b = zorb.scores(np.array([[0.4], [0.6], [0.9]]), np.array([[0.0], [0.0], [1.0]]))
    assert b["accuracy"] == pytest.approx(2 / 3)
    r = zorb.scores(np.array([[1.0, 2.0]]), np.array([[1.5, 2.5]]))
    assert "accuracy" not in r and r["error"] == pytest.approx(np.sqrt(0.5))


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "jax"])
def test_the_data_checks_say_the_same_for_host_and_device_arrays(on_device):
    import jax

    from zorb.core.fit import as_data
    from zorb.errors import ConfigError

    def given(values):
        return jnp.asarray(values) if on_device else np.asarray(values)

    x = np.arange(12.0).reshape(4, 3)
    checked = as_data("X", given(x), jnp.float32, (3,))
    assert isinstance(checked, jax.Array) and checked.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(checked), x.astype(np.float32))
    bad = x.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ConfigError, match="^X contains NaN or infinite values$"):
        as_data("X", given(bad), jnp.float64, (3,))
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="^X contains NaN or infinite values$"):
        as_data("X", given(bad), jnp.float64, (3,))
    with pytest.raises(ConfigError, match=r"^Y must have shape \(N, 2\), got \(4, 3\)$"):
        as_data("Y", given(x), jnp.float64, (2,))
    with pytest.raises(ConfigError, match="^X must be a real numeric array, got dtype bool$"):
        as_data("X", given(x > 3), jnp.float64, (3,))
    assert as_data("X", [[1, 2, 3]], jnp.float64, (3,)).dtype == jnp.float64  # a list, as from a user


def test_checking_host_data_compiles_nothing():
    import jax

    from zorb.core.fit import as_data

    x = np.random.default_rng(0).normal(size=(7, 5))  # a shape no other test checks
    with jax.log_compiles(True):
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("jax").addHandler(handler)
        try:
            as_data("X", x, jnp.float64, (5,))
        finally:
            logging.getLogger("jax").removeHandler(handler)
    assert not [r for r in records if "Compiling" in r.getMessage()]
