"""Adam on a zorb network: it learns, its curve and clock, its determinism, its losses, its errors."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.baselines import AdamReport, adam, batch_indices, speedup, train_adam
from zorb.core import timing
from zorb.data import load_dataset
from zorb.kernels import native

IRIS = [{"type": "dense", "units": 8}, {"type": "sigmoid"}, {"type": "dense", "units": 3}, {"type": "softmax"}]


@pytest.fixture(scope="module")
def iris():
    data = load_dataset("iris", seed=0)
    return data, zorb.build_network(IRIS, data.input_shape, output_dim=data.output_dim, seed=0)


def test_adam_learns_iris_and_its_curve_starts_at_zorbs_initial_error(iris):
    data, net = iris
    initial = zorb.evaluate(net, data.x_train, data.y_train)["error"]
    trained, report = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=2000, seed=0)
    assert report.curve[0] == (0, 0.0, initial)  # the same initial weights ZORB starts from, bit for bit
    train = zorb.evaluate(trained, data.x_train, data.y_train)
    assert train["error"] < 0.3 * initial
    assert report.final_error == pytest.approx(train["error"], rel=1e-12)
    assert zorb.evaluate(trained, data.x_test, data.y_test)["accuracy"] >= 0.9
    assert [w.dtype for w in trained.weights] == [jnp.float64, jnp.float64]
    assert all(layer.arrays() == {} or all(v is None for v in layer.arrays().values())
               for layer in trained.layers if not layer.parametric)


def test_curve_is_monotone_in_time_and_ends_at_the_fit_time(iris):
    data, net = iris
    _, report = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=1010, eval_every=100)
    steps = [s for s, _, _ in report.curve]
    seconds = [t for _, t, _ in report.curve]
    assert steps == list(range(0, 1001, 100)) + [1010]  # the last chunk is shorter, same compiled loop
    assert np.all(np.diff(seconds) >= 0) and seconds[0] == 0.0
    assert seconds[-1] == report.fit_seconds > 0
    assert report.steps == 1010 and report.eval_rows == 105 and report.layers == []
    default = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=500)[1]
    assert len(default.curve) == 51  # about 50 evaluations by default, plus step 0


def test_the_clock_excludes_the_evaluations(iris, monkeypatch):
    data, net = iris
    train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=300, eval_every=50)  # compile first
    fast_forward = adam.forward_all

    def forward_all(*args, **kwargs):  # each evaluation of the curve's train error
        time.sleep(0.2)
        return fast_forward(*args, **kwargs)

    monkeypatch.setattr(adam, "forward_all", forward_all)
    started = time.perf_counter()
    _, report = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=300, eval_every=50)
    assert time.perf_counter() - started > 7 * 0.2
    assert report.compile_seconds == 0.0 and report.fit_seconds < 0.7
    # the 7 measurements (steps 0, 50, ..., 300) are counted apart, as curve_seconds
    assert 7 * 0.2 <= report.curve_seconds < time.perf_counter() - started - report.fit_seconds


def test_same_seed_same_weights_other_seed_other_batches(iris):
    data, net = iris
    x, y = data.x_train, data.y_train
    first = train_adam(net, x, y, learning_rate=1e-2, steps=200, seed=5)[0]
    again = train_adam(net, x, y, learning_rate=1e-2, steps=200, seed=5)[0]
    other = train_adam(net, x, y, learning_rate=1e-2, steps=200, seed=6)[0]
    for a, b, c in zip(first.weights, again.weights, other.weights):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    batch = np.asarray(batch_indices(jax.random.key(5), 3, 105, 32))
    assert batch.shape == (32,) and batch.min() >= 0 and batch.max() < 105
    assert not np.array_equal(batch, batch_indices(jax.random.key(6), 3, 105, 32))
    assert not np.array_equal(batch, batch_indices(jax.random.key(5), 4, 105, 32))
    # with replacement: over many draws some row repeats within a batch
    draws = np.stack([np.asarray(batch_indices(jax.random.key(0), s, 105, 32)) for s in range(20)])
    assert any(len(set(row)) < 32 for row in draws)


def test_zero_steps_returns_the_initial_weights(iris):
    data, net = iris
    same, report = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=0)
    for a, b in zip(same.weights, net.weights):
        np.testing.assert_array_equal(a, b)
    assert len(report.curve) == 1 and report.fit_seconds == 0.0


def _numpy_forward(weights, x, activations):
    a = x
    for w, act in zip(weights, activations):
        h = np.concatenate([a, np.ones((len(a), 1))], axis=1) @ w
        a = act(h)
    return h, a


def test_losses_match_their_definitions(rng):
    x = rng.normal(size=(10, 3))
    labels = rng.integers(0, 4, 10)
    y = np.eye(4)[labels]
    net = zorb.build_network([{"type": "dense", "units": 5}, {"type": "tanh"}, {"type": "dense", "units": 4},
                              {"type": "softmax"}], (3,), seed=2)
    weights = [np.asarray(w) for w in net.weights]
    logits, _ = _numpy_forward(weights, x, [np.tanh, lambda h: h])
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    ce = adam._loss(net.weights, net, jnp.asarray(x), jnp.asarray(y), "cross_entropy")
    assert float(ce) == pytest.approx(-np.mean(np.sum(y * log_p, axis=1)), rel=1e-12)
    sse = adam._loss(net.weights, net, jnp.asarray(x), jnp.asarray(y), "sse")
    assert float(sse) == pytest.approx(np.sum((zorb.predict(net, x) - y) ** 2), rel=1e-12)

    binary = zorb.build_network([{"type": "dense", "units": 1}, {"type": "sigmoid"}], (3,), seed=2)
    t = (labels % 2).astype(np.float64)[:, None]
    z, _ = _numpy_forward([np.asarray(binary.weights[0])], x, [lambda h: h])
    p = 1 / (1 + np.exp(-z))
    bce = adam._loss(binary.weights, binary, jnp.asarray(x), jnp.asarray(t), "cross_entropy")
    assert float(bce) == pytest.approx(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)), rel=1e-12)


def test_cross_entropy_trains_a_small_cnn_in_float64(rng):
    x = rng.uniform(size=(40, 6, 6, 1))
    y = np.eye(2)[(x[:, :3].mean(axis=(1, 2, 3)) > x[:, 3:].mean(axis=(1, 2, 3))).astype(int)]
    net = zorb.build_network([{"type": "conv2d", "filters": 3, "kernel_size": 3}, {"type": "sigmoid"},
                              {"type": "flatten"}, {"type": "dense", "units": 2}, {"type": "softmax"}],
                             (6, 6, 1), seed=1)
    trained, report = train_adam(net, x, y, learning_rate=1e-2, steps=300, loss="cross_entropy", batch_size=8)
    assert report.final_error < report.curve[0][2]
    assert [w.dtype for w in trained.weights] == [jnp.float64, jnp.float64]


def test_a_float32_network_stays_float32(rng):
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    net = zorb.build_network([{"type": "dense", "units": 3}, {"type": "relu"}, {"type": "dense", "units": 1}],
                             (2,), seed=0, dtype="float32")
    trained, _ = train_adam(net, x, y, learning_rate=1e-3, steps=20, batch_size=4)
    assert [w.dtype for w in trained.weights] == [jnp.float32, jnp.float32]


@pytest.mark.parametrize("options,message", [
    ({"loss": "hinge"}, "unknown loss 'hinge': choose one of sse, cross_entropy"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive number"),
    ({"steps": -1}, "steps must be an integer >= 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"eval_every": 2.5}, "eval_every must be an integer >= 1"),
])
def test_bad_options_give_one_clear_error(iris, options, message):
    data, net = iris
    kwargs = {"learning_rate": 1e-2, "steps": 10, **options}
    with pytest.raises(zorb.ConfigError, match=message):
        train_adam(net, data.x_train, data.y_train, **kwargs)


def test_refuses_cross_entropy_without_a_probability_output_and_a_fitted_network(iris, rng):
    regression = zorb.build_network([{"type": "dense", "units": 1}], (2,))
    with pytest.raises(zorb.ConfigError, match="cross_entropy needs a network ending in softmax or sigmoid"):
        train_adam(regression, rng.normal(size=(8, 2)), rng.normal(size=(8, 1)), learning_rate=1e-2, steps=1,
                   loss="cross_entropy")
    data, net = iris
    fitted, _ = zorb.fit(net, data.x_train, data.y_train)
    with pytest.raises(zorb.ConfigError, match="layer 2 \\(sigmoid\\) carries ZORB's fitted activation state"):
        train_adam(fitted, data.x_train, data.y_train, learning_rate=1e-2, steps=1)


def _report(curve, fit_seconds):
    return AdamReport(fit_seconds=fit_seconds, compile_seconds=0.0, curve=curve, steps=200, learning_rate=1e-2,
                      loss="sse", batch_size=32, seed=0, eval_rows=10)


def test_time_to_reach_and_speedup():
    report = _report([(0, 0.0, 0.9), (100, 1.0, 0.5), (200, 2.0, 0.2)], 2.0)
    assert report.time_to_reach(0.5) == 1.0 and report.time_to_reach(0.95) == 0.0
    assert report.time_to_reach(0.1) is None
    assert speedup(report, 0.5, 0.3) == pytest.approx(4.0)
    assert speedup(report, 0.5, 0.1) == pytest.approx(4.0)  # never reached: Adam's whole time
    assert speedup(report, 0.25, 0.5) == pytest.approx(4.0)
    with pytest.raises(zorb.ConfigError, match="ZORB's fit time must be positive"):
        speedup(report, 0.0, 0.5)


def test_eval_rows_measures_the_curve_on_a_fixed_subset(iris):
    data, net = iris
    _, report = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=100, eval_rows=20, seed=1)
    _, again = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=100, eval_rows=20, seed=1)
    assert report.eval_rows == 20
    assert [(s, e) for s, _, e in report.curve] == [(s, e) for s, _, e in again.curve]
    assert report.curve[0][2] != zorb.evaluate(net, data.x_train, data.y_train)["error"]
    everything = train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=100, eval_rows=500)[1]
    assert everything.eval_rows == 105


def test_watched_accuracy_and_early_stopping_keep_the_best_weights(iris):
    data, net = iris
    x_val, y_val = data.x_test[:20], data.y_test[:20]
    trained, report = train_adam(net, data.x_train, data.y_train, learning_rate=3e-2, steps=20_000, eval_every=20,
                                 seed=0, watch={"validation": (x_val, y_val), "test": (data.x_test, data.y_test)},
                                 stop_on="validation", patience=3)
    history = report.accuracy_curves["validation"]
    assert len(history) == len(report.curve) == len(report.accuracy_curves["test"])
    best = int(np.argmax(history))  # the first point of the best accuracy
    assert report.best_step == report.curve[best][0]
    assert report.steps_run < 20_000 and len(history) - 1 - best == 3  # stopped after 3 points without progress
    assert zorb.evaluate(trained, x_val, y_val)["accuracy"] == history[best]  # the best point's weights, restored
    # each point measures the weights of that step: the test curve at the kept step is the kept network's
    assert zorb.evaluate(trained, data.x_test, data.y_test)["accuracy"] == report.accuracy_curves["test"][best]
    # without stop_on the same run goes on: the watch changes nothing of the training
    _, full = train_adam(net, data.x_train, data.y_train, learning_rate=3e-2, steps=report.steps_run,
                         eval_every=20, seed=0, watch={"validation": (x_val, y_val)})
    assert full.accuracy_curves["validation"] == history and full.best_step is None


@pytest.mark.parametrize("options,message", [
    ({"stop_on": "validation", "patience": 2}, "stop_on='validation' is not a watched set"),
    ({"watch": {"v": None}, "patience": 2}, "patience needs stop_on"),
    ({"watch": {"v": None}, "stop_on": "v", "patience": 0}, "patience must be an integer >= 1"),
    ({"watch": {"v": "regression"}}, "has no accuracy"),
])
def test_bad_early_stopping_options_give_one_clear_error(iris, options, message):
    data, net = iris
    watch = options.pop("watch", {})
    watch = {name: ((data.x_test, data.x_test[:, :3] * 7.5) if kind == "regression" else (data.x_test, data.y_test))
             for name, kind in watch.items()}
    with pytest.raises(zorb.ConfigError, match=message):
        train_adam(net, data.x_train, data.y_train, learning_rate=1e-2, steps=10, watch=watch, **options)


@pytest.mark.skipif(not native.NATIVE, reason="zorb's native kernels are not built")
def test_the_compiled_steps_multiply_in_xla_not_through_blas(monkeypatch):
    # dgemm inside the step loop wakes the BLAS workers at every step: Sinc's 200x200
    # network trained 4x slower with two threads. Adam's products of 32 rows stay in XLA.
    monkeypatch.setattr(native, "GEMM_NATIVE", True)
    timing.clear()
    specs = [{"type": "dense", "units": 200}, {"type": "sigmoid"}, {"type": "dense", "units": 200},
             {"type": "sigmoid"}, {"type": "dense", "units": 1}]
    network = zorb.build_network(specs, (1,), seed=0)
    x = np.linspace(-10, 10, 201)[:, None]
    trained, report = train_adam(network, x, np.sinc(x / np.pi), learning_rate=1e-3, steps=20, eval_every=10)
    compiled = [executable.as_text() for key, executable in timing._CACHE.items() if key[0] is adam._train_steps]
    timing.clear()
    assert len(compiled) == 1 and "zorb_matmul_f64" not in compiled[0]
    # the same layer's product outside the loop (the fit, the curve's evaluation) goes through dgemm
    hidden = jnp.ones((32, 200))
    assert jax.jit(network.layers[2].forward).lower(hidden).compile().as_text().count("zorb_matmul_f64") == 1
    assert report.final_error < report.curve[0][2] and np.isfinite(np.asarray(trained.weights[1])).all()

