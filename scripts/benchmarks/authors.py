"""zorb beside the paper authors' JAX code (their Keras-style ``zorb`` package), measured in
the same run, each fit in its own worker process under the same settings: pinned to the same
``--authors-cores`` CPUs, one BLAS/XLA thread per core (``ONE_THREAD``), the same random
inputs of the same shapes, the same network, warm fits (the best of ``--warm-fits`` after one
that compiles). Their code is never part of this repository: ``--authors-code PATH`` names a
checkout of it (the directory holding ``src/zorb`` or ``zorb``).

Shapes: mnist_6 (784-1000-800-600-400-200-10, tanh, softmax) on ``--authors-rows`` rows, and
their README's conv network (Conv2D(8, 3), sigmoid, flatten, Dense 1024, sigmoid, Dense 10,
softmax) on ``--authors-images`` 28x28x1 images. Their layers get the same rcond as zorb's
svd and qr (gram cannot go below 1e-7 in float64). Without ``--authors-code`` zorb's side
runs alone under the same settings.

Their package is loaded as they ship it, with two shims so it imports under today's JAX
without TensorFlow: ``jax.config`` (a module in the JAX they wrote for, an attribute now) and
their ``datasets`` subpackage (TensorFlow loaders; the bench supplies the data) left empty.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

from benchmarks.common import HIDDEN, ONE_THREAD, RCOND, make_data, peak_rss_gib, run_worker, section
from benchmarks.dense import fit_network

SEQUENTIAL = Path("zorb") / "models" / "Sequential.py"


def package_root(path: str) -> Path:
    """The directory to put on ``sys.path`` so that ``import zorb`` loads the authors' package,
    or SystemExit with one sentence saying what is wrong with ``path``."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise SystemExit(f"--authors-code {path}: no such directory; give the path of a checkout of the "
                         f"authors' JAX code (the directory holding src/zorb/models/Sequential.py)")
    for candidate in (root / "src", root):
        if (candidate / SEQUENTIAL).is_file():
            return candidate
    raise SystemExit(f"--authors-code {path}: neither src/{SEQUENTIAL} nor {SEQUENTIAL} is in it; give the path of "
                     f"a checkout of the authors' JAX code (github.com/varunranga/zorb)")


def load_their_package(root: str):
    """Import the authors' ``zorb`` from ``root`` (not this repository's)."""
    sys.path.insert(0, root)
    import jax

    try:
        import jax.config  # noqa: F401
    except ModuleNotFoundError:
        shim = types.ModuleType("jax.config")
        shim.config = jax.config
        sys.modules["jax.config"] = shim
    sys.modules["zorb.datasets"] = types.ModuleType("zorb.datasets")
    import zorb

    if not str(Path(zorb.__file__).resolve()).startswith(str(Path(root).resolve())):
        raise SystemExit(f"--authors-code: 'import zorb' loaded {zorb.__file__}, not the checkout in {root}")
    return zorb


def their_network(zorb, network: str, rcond: float):
    layers = zorb.layers
    if network == "mnist_6":
        stack = [layer for units in HIDDEN["mnist_6"] for layer in (layers.Dense(units=units, rcond=rcond),
                                                                   layers.Tanh())]
    else:  # readme_conv
        stack = [layers.Convolution2D(n_kernels=8, size=3, stride=1, rcond=rcond), layers.Sigmoid(), layers.Flatten(),
                 layers.Dense(units=1024, rcond=rcond), layers.Sigmoid()]
    return stack + [layers.Dense(units=10, rcond=rcond), layers.Softmax()]


def work_authors(cfg):
    """Worker: the authors' fit, once to compile its operations, then the warm fits, each on a
    freshly built model (their ``fit`` changes the weights in place; their initial weights come
    from one key, so every build starts from the same ones)."""
    import jax
    import numpy as np

    zorb = load_their_package(cfg["root"])
    x, y = make_data(cfg)
    walls = []
    for _ in range(1 + cfg["warm_fits"]):
        model = zorb.models.Sequential(input_shape=x.shape[1:], network=their_network(zorb, cfg["network"],
                                                                                     cfg["rcond"]))
        start = time.perf_counter()
        model.fit(X=x, Y=y)
        jax.block_until_ready([getattr(layer, "dense", layer).W for layer in model.layers
                               if hasattr(getattr(layer, "dense", layer), "W")])
        walls.append(time.perf_counter() - start)
    peak = peak_rss_gib()
    accuracy = float(np.mean(np.asarray(model.predict(x)).argmax(axis=1) == y.argmax(axis=1)))
    return {"cold_seconds": walls[0], "fit_seconds": min(walls[1:]), "peak_rss_gib": peak, "train_accuracy": accuracy,
            "threads_env": {k: os.environ.get(k) for k in ONE_THREAD}}


def authors_section(results):
    args = results.args
    cores = set(sorted(os.sched_getaffinity(0))[:args.authors_cores])
    root = package_root(args.authors_code) if args.authors_code else None
    shapes = [("mnist_6", rows, (784,)) for rows in args.authors_rows]
    shapes += [("readme_conv", images, (28, 28, 1)) for images in args.authors_images]
    section(f"The authors' shapes, zorb {'beside their JAX code ' if root else ''}on {len(cores)} pinned core(s), "
            f"one thread per core, warm fits (best of {args.warm_fits})"
            + ("" if root else "; --authors-code PATH runs their code beside it"))
    for network, rows, shape in shapes:
        tag = f"authors_{network}_{rows}"
        rcond = 1e-15 if network == "mnist_6" else 1e-9  # the paper's feed-forward and CNN settings
        ours = fit_network(results, network, rows, shape, "random", rcond={**RCOND, "svd": rcond, "qr": rcond},
                           tag=tag, env=ONE_THREAD, cores=cores, quiet=True)
        if root is None:
            continue
        cfg = {"task": "authors", "root": str(root), "network": network, "rows": rows, "shape": list(shape),
               "dataset": "random", "seed": args.seed, "rcond": rcond, "warm_fits": args.warm_fits}
        theirs = run_worker(cfg, env_extra=ONE_THREAD, cores=cores)
        print(f"  authors' code rcond {rcond:.0e}: fit {theirs['fit_seconds']:7.2f} s (first "
              f"{theirs['cold_seconds']:.2f} s)  peak RSS {theirs['peak_rss_gib']:.2f} GiB  train acc {theirs['train_accuracy']:.3f}")
        results.put(f"fit_s_{tag}_authors", theirs["fit_seconds"])
        results.put(f"peak_rss_gib_{tag}_authors", theirs["peak_rss_gib"])
        for solver, r in ours.items():
            speedup = theirs["fit_seconds"] / r["fit_seconds"]
            print(f"  zorb {solver:4s}: the authors' fit time over zorb's {speedup:.2f}x, peak RSS "
                  f"{r['peak_rss_gib']:.2f} against their {theirs['peak_rss_gib']:.2f} GiB")
            results.put(f"speedup_{tag}_{solver}", speedup)
