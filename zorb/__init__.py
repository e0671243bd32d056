"""zorb: ZORB (Zeroth-Order Relaxed Backpropagation, arXiv 2011.08895) in float64 JAX.

    import zorb
    net = zorb.build_network([{"type": "dense", "units": 8}, {"type": "sigmoid"},
                              {"type": "dense", "units": 3}, {"type": "softmax"}], input_shape=(4,), seed=0)
    trained, report = zorb.fit(net, X, Y, solver="qr", rcond=1e-15)
    zorb.evaluate(trained, X_test, Y_test)

Importing zorb turns on JAX's 64-bit mode: the algorithm works in float64 unless a network
is built with ``dtype="float32"``. It also keeps freed memory for reuse (``zorb.allocator``;
``ZORB_MALLOC_TUNING=0`` turns that off), and on AMD CPUs with AVX-512 lets OpenBLAS use its
AVX-512 kernels (``zorb.cpu``; ``ZORB_OPENBLAS_TUNING=0`` turns that off).
"""

from zorb import cpu

cpu.tune_openblas()  # before anything loads numpy's or SciPy's OpenBLAS

from zorb import allocator  # noqa: E402

allocator.tune()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from zorb.errors import ConfigError, DataError, FitError, ZorbError  # noqa: E402
from zorb.fit import FitReport, LayerReport, fit  # noqa: E402
from zorb.io import load, save  # noqa: E402
from zorb.metrics import evaluate, predict, scores  # noqa: E402
from zorb.network import Network, build_network  # noqa: E402
from zorb.solvers import DEFAULT_RCOND, SOLVERS, check_solver_options  # noqa: E402

__all__ = [
    "ConfigError", "DataError", "FitError", "ZorbError", "FitReport", "LayerReport", "fit", "load", "save",
    "evaluate", "predict", "scores", "Network", "build_network", "DEFAULT_RCOND", "SOLVERS",
    "check_solver_options",
]
