"""zorb: ZORB (Zeroth-Order Relaxed Backpropagation, arXiv 2011.08895) in float64 JAX.

    import zorb
    net = zorb.build_network([{"type": "dense", "units": 8}, {"type": "sigmoid"},
                              {"type": "dense", "units": 3}, {"type": "softmax"}], input_shape=(4,), seed=0)
    trained, report = zorb.fit(net, X, Y, solver="qr", rcond=1e-15)
    zorb.evaluate(trained, X_test, Y_test)

The package has three parts: the algorithm (``zorb.core``: layers, networks, solvers, the fit),
the native kernels that make it fast on a CPU (``zorb.kernels``) and the experiment runner
around it (``zorb.runner``); datasets (``zorb.data``) and the baselines (``zorb.baselines``)
sit beside them. The names below are loaded on first use, so ``import zorb`` costs nothing
until the algorithm is needed.

Loading the algorithm turns on JAX's 64-bit mode (``jax_enable_x64``): zorb works in float64
unless a network is built with ``dtype="float32"``. Nothing else about the process changes on
import. The process tuning that the command line applies (the allocator keeps freed memory,
OpenBLAS's AVX-512 kernels on AMD CPUs) is an explicit call: ``zorb.kernels.tuning.tune_process()``,
made before numpy is loaded.
"""

from importlib import import_module

from zorb.errors import ConfigError, DataError, FitError, ZorbError

_PUBLIC = {
    "FitReport": "zorb.core.fit", "LayerReport": "zorb.core.fit", "LayerStart": "zorb.core.fit", "fit": "zorb.core.fit",
    "load": "zorb.core.io", "save": "zorb.core.io",
    "evaluate": "zorb.core.metrics", "predict": "zorb.core.metrics", "scores": "zorb.core.metrics",
    "Network": "zorb.core.network", "build_network": "zorb.core.network",
    "DEFAULT_RCOND": "zorb.core.solvers", "default_rcond": "zorb.core.solvers", "SOLVERS": "zorb.core.solvers",
    "check_solver_options": "zorb.core.solvers",
    "LAYERS": "zorb.core.layers", "Layer": "zorb.core.layers", "ParametricLayer": "zorb.core.layers",
    "layer_class": "zorb.core.layers", "register_layer": "zorb.core.layers", "parse_spec": "zorb.core.spec",
}

_MODULES = ("core", "kernels", "runner", "data", "baselines", "layers", "models", "datasets", "sklearn")
"""Subpackages loaded on first use as ``zorb.<name>``: ``zorb.layers``, ``zorb.models`` and
``zorb.datasets`` are the keras-style API, ``zorb.sklearn`` the scikit-learn estimators."""

__all__ = ["ConfigError", "DataError", "FitError", "ZorbError", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if name in _MODULES:
        return import_module(f"zorb.{name}")
    raise AttributeError(f"module 'zorb' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_MODULES))
