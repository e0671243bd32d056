"""The keras-style facade (zorb.layers, zorb.models, zorb.datasets) on tiny generated MNIST IDX
files: the same network and weights as the dictionary API, bit for bit."""

import subprocess
import sys

import numpy as np
import pytest

import zorb
import zorb.datasets
import zorb.layers
import zorb.models
from zorb.errors import ConfigError
from data_fixtures import write_tiny_mnist


def conv_model(**kwargs):
    return zorb.models.Sequential(input_shape=(28, 28, 1), network=[
        zorb.layers.Convolution2D(n_kernels=8, size=3, stride=1), zorb.layers.Sigmoid(), zorb.layers.Flatten(),
        zorb.layers.Dense(units=32), zorb.layers.Sigmoid(), zorb.layers.Dense(units=10), zorb.layers.Softmax()],
        **kwargs)


def test_both_names_give_the_same_specs():
    assert zorb.layers.Convolution2D(n_kernels=8, size=3, stride=2) == zorb.layers.Conv2D(filters=8, kernel_size=3,
                                                                                          strides=2)
    assert zorb.layers.Conv2D(8, 3).spec() == {"type": "conv2d", "filters": 8, "kernel_size": 3}
    assert zorb.layers.Dense(10, use_bias=False).spec() == {"type": "dense", "units": 10, "bias": False}
    assert zorb.layers.Quantize(levels=4).spec() == {"type": "quantize", "levels": 4}
    with pytest.raises(ConfigError, match="dense takes at most 2 positional"):
        zorb.layers.Dense(1, True, 3).spec()


def test_a_conv_network_on_mnist_files(tmp_path):
    write_tiny_mnist(tmp_path, n_train=30, n_test=12)
    data = zorb.datasets.MNIST(data_dir=tmp_path)
    assert data.dimensions == {"train": {"input": (28, 28, 1), "output": (10,)},
                               "test": {"input": (28, 28, 1), "output": (10,)}}
    assert data.train_x.shape == (30, 28, 28, 1) and data.test_y.shape == (12, 10)

    model = conv_model(seed=2)
    text = model.summary(print_fn=None)
    rows = {line.split()[0]: line.split(None, 2)[2].rsplit(None, 1) for line in text.splitlines()[1:-1]}
    assert rows["1"] == ["(26, 26, 8)", "80"]          # 3*3*1*8 weights + 8 biases
    assert rows["4"] == ["(32,)", "173,088"]           # (26*26*8 + 1) * 32
    assert rows["7"] == ["(10,)", "0"]
    assert text.endswith(f"total parameters: {80 + 173_088 + 330:,}")

    report = model.fit(X=data.train_x, Y=data.train_y, solver="qr", rcond=1e-9)
    assert [r.index for r in report.layers] == [1, 4, 6]
    scores = model.evaluate(X=data.test_x, Y=data.test_y)
    assert {"error", "mse", "accuracy"} <= set(scores)

    # the facade adds nothing: the dictionary API gives the same weights, bit for bit
    specs = [{"type": "conv2d", "filters": 8, "kernel_size": 3, "stride": 1}, {"type": "sigmoid"}, {"type": "flatten"},
             {"type": "dense", "units": 32}, {"type": "sigmoid"}, {"type": "dense", "units": 10}, {"type": "softmax"}]
    direct, _ = zorb.fit(zorb.build_network(specs, (28, 28, 1), seed=2), data.train_x, data.train_y, solver="qr",
                         rcond=1e-9, seed=2)
    for ours, theirs in zip(model.network.weights, direct.weights):
        assert np.asarray(ours).tobytes() == np.asarray(theirs).tobytes()
    assert scores == zorb.evaluate(direct, data.test_x, data.test_y)
    # the training data is fitted well past chance (30 samples, 10 classes)
    assert model.evaluate(X=data.train_x, Y=data.train_y)["accuracy"] >= 0.5

    model.save(tmp_path / "model.npz")
    loaded = zorb.models.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.predict(data.test_x), model.predict(data.test_x))


def test_add_builds_the_same_model_and_fit_takes_the_input_shape_from_x():
    data = zorb.datasets.Iris()
    model = zorb.models.Sequential()
    model.add(zorb.layers.Dense(8)).add(zorb.layers.Sign()).add(zorb.layers.Dense(3)).add(zorb.layers.Softmax())
    with pytest.raises(ConfigError, match="call fit first"):
        model.predict(data.test_x)
    model.fit(X=data.train_x, Y=data.train_y, rcond=1e-15)
    assert model.input_shape == (4,)
    assert model.predict(data.test_x).shape == (len(data.test_x), 3)


def test_importing_the_facade_loads_no_numerics():
    code = ("import sys, zorb.layers, zorb.models, zorb.datasets; "
            "print(sorted(m for m in ('jax', 'numpy', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
