"""Layers from outside zorb: a layer defined and registered here runs from Python and from the
CLI (through ``plugins``), saves and loads; and a property of every registered layer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.core.layers import LAYERS
from zorb.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner_fixtures import cli_env, compose, logged_network, run_cli, runs_of, store, template_store  # noqa: E402,F401


@zorb.register_layer(data=("gain",))
class GainedTanh(zorb.Layer):
    """``gain * tanh(h)`` with one gain per feature, drawn in [1, 2) when the layer is built."""

    in_shape: tuple
    eps: float = 1e-6
    gain: Any = None

    kind: ClassVar[str] = "gained_tanh"

    @classmethod
    def build(cls, in_shape, key, dtype, *, eps=1e-6):
        return cls(in_shape=in_shape, eps=eps, gain=jax.random.uniform(key, in_shape, dtype, 1.0, 2.0))

    def forward(self, h):
        return self.gain * jnp.tanh(h)

    def inverse(self, t, aux, key, first_row=0):
        return jnp.arctanh(jnp.clip(t / self.gain, -1 + self.eps, 1 - self.eps)), self


def test_the_registered_layer_is_a_pytree_with_its_spec():
    assert LAYERS["gained_tanh"] is GainedTanh
    layer = GainedTanh.build((3,), jax.random.key(1), jnp.float64)
    assert [leaf.shape for leaf in jax.tree_util.tree_leaves(layer)] == [(3,)]
    assert layer.spec() == {"type": "gained_tanh", "eps": 1e-6}
    assert set(layer.arrays()) == {"gain"}


def test_registering_refuses_a_taken_name_or_a_class_without_an_inverse():
    with pytest.raises(ConfigError, match="'dense' is already registered"):
        @zorb.register_layer
        class Other(zorb.Layer):
            in_shape: tuple
            kind: ClassVar[str] = "dense"

            def forward(self, x):
                return x

            def inverse(self, t, aux, key, first_row=0):
                return t, self
    with pytest.raises(ConfigError, match="must define forward and inverse"):
        @zorb.register_layer
        class NoInverse(zorb.Layer):
            in_shape: tuple
            kind: ClassVar[str] = "no_inverse"

            def forward(self, x):
                return x
    assert "no_inverse" not in LAYERS and LAYERS["dense"] is zorb.core.layers.Dense


def test_a_user_layer_trains_saves_and_loads(tmp_path):
    data = zorb.data.load_dataset("iris", data_dir="data", seed=0)
    specs = zorb.parse_spec("dense[8] gained_tanh dense[outputs] softmax")
    net = zorb.build_network(specs, data.input_shape, output_dim=data.output_dim, seed=0)
    trained, report = zorb.fit(net, data.x_train, data.y_train, rcond=1e-15)
    assert [r.index for r in report.layers] == [1, 3]
    assert zorb.evaluate(trained, data.x_test, data.y_test)["accuracy"] >= 0.8  # chance: 1/3
    zorb.save(trained, tmp_path / "net.npz")
    loaded = zorb.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(loaded.layers[1].gain, trained.layers[1].gain)
    np.testing.assert_array_equal(zorb.predict(loaded, data.x_test), zorb.predict(trained, data.x_test))


def test_a_user_layer_through_the_runner_with_network_layers(store):
    metrics = zorb.runner.main(compose("dataset=iris", "network=iris", f"tracking.uri={store}",
                                       "network.layers=[{type: dense, units: 8}, {type: gained_tanh, eps: 1e-5}, "
                                       "{type: dense, units: outputs}, {type: softmax}]"))
    [run] = runs_of(store)
    assert run.data.params["network.layers.2.type"] == "gained_tanh"  # params number layers from 1
    assert metrics["test_accuracy"] >= 0.8


@pytest.mark.parametrize("overrides, message", [
    (["plugins=[no_such_package.layers]"], "plugins: module 'no_such_package.layers' cannot be imported"),
    (["plugins=['os.path;rm']"], "is not a module name"),
    (["network.spec='dense[8] tanhh dense[outputs] softmax'"], "network.spec token 2 'tanhh' (character 10): "
                                                              "unknown layer type 'tanhh'"),
])
def test_bad_plugins_and_specs_fail_in_one_sentence(store, overrides, message):
    from zorb.runner.job import RunFailed

    with pytest.raises(RunFailed) as failure:
        zorb.runner.main(compose("dataset=iris", f"tracking.uri={store}", *overrides))
    assert message in str(failure.value)
    [run] = runs_of(store)
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_cli_runs_a_plugin_layer_from_a_spec(store, tmp_path):
    env = cli_env(PYTHONPATH=str(Path(__file__).resolve().parent))
    result = run_cli("dataset=iris", f"tracking.uri={store}", "plugins=[test_layer_plugins]",
                     "network.spec=Dense[8] gained_tanh Dense[outputs] Softmax", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    [run] = runs_of(store)
    params = run.data.params
    assert [params[f"network.layers.{i}.type"] for i in range(1, 5)] == ["dense", "gained_tanh", "dense", "softmax"]
    assert params["network.layers.1.units"] == "8" and params["network.name"] == "spec"
    assert run.data.metrics["test_accuracy"] >= 0.8
    model = logged_network(store, run.info.run_id, tmp_path)
    assert model.layers[1].kind == "gained_tanh" and model.layers[1].gain.shape == (8,)


SHAPES = {"dense": (6,), "conv2d": (5, 5, 2), "flatten": (3, 2)}
OPTIONS = {"dense": {"units": 4}, "conv2d": {"filters": 2, "kernel_size": 2}, "quantize": {"levels": 4}}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_registered_layer_keeps_float64_inverts_to_its_input_shape_and_saves_bit_for_bit(kind, rng, tmp_path):
    assert "gained_tanh" in LAYERS  # the user's layer is among them
    shape = SHAPES.get(kind, (6,))
    net = zorb.build_network([{"type": kind, **OPTIONS.get(kind, {})}], shape, seed=3)
    layer = net.layers[0]
    x = jnp.asarray(rng.normal(size=(5, *shape)))
    y, observed = layer.observe(x)
    assert y.dtype == jnp.float64 and y.shape == (5, *layer.out_shape)
    aux = layer.prepare_inverse(jnp.asarray(1e-15)) if layer.parametric else None
    t_in, inverted = observed.inverse(jnp.asarray(rng.uniform(0.05, 0.9, size=y.shape)), aux, jax.random.key(0))
    assert t_in.shape == x.shape and t_in.dtype == jnp.float64
    for leaf in jax.tree_util.tree_leaves(inverted):
        assert leaf.dtype == jnp.float64
    # the layer with whatever its forward and inverse recorded, through a file and back
    stateful = net.replace_layers([inverted])
    zorb.save(stateful, tmp_path / "layer.npz")
    loaded = zorb.load(tmp_path / "layer.npz").layers[0]
    assert type(loaded) is type(inverted) and loaded.spec() == inverted.spec()
    ours, theirs = jax.tree_util.tree_flatten(inverted), jax.tree_util.tree_flatten(loaded)
    assert ours[1] == theirs[1]  # the same configuration and the same array slots
    for a, b in zip(ours[0], theirs[0]):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
