"""Which ZORB settings generalise on real images: one line per (network, solver settings) on a
dataset, accuracy from a fit on the training split (docs/results.md, "What makes ZORB
generalise").

    python scripts/explore_generalisation.py --dataset mnist_5k --case conv8 --case conv32s2_auto
    python scripts/explore_generalisation.py --dataset fashion_mnist --train 20000 --validation 0.2 \\
        --spec "conv2d[32,5,2] sigmoid[eps=0.01] flatten dense[outputs] softmax" --ridge auto --threads 1

A network is a named ``--case`` or a one-line ``--spec`` (``zorb.core.spec``: widths, kernels,
strides, activations, each activation's ``eps``, ``relu[inverse=clip]``); ``--rcond`` and
``--ridge`` replace a case's solver settings (a spec's default is rcond 1e-9, ridge auto).
``--validation 0.2`` holds out that share of the training split and scores on it instead of
the test split: settings are compared there, the test split is read only for the final ones.
``--layer 5:ridge=10`` gives one layer its own setting (``zorb.fit``'s ``per_layer``).
``--passes k`` fits the trained network again, k passes in all: each later pass solves every
layer against targets pushed back through the layers above as the previous pass left them.
``--seeds k`` averages the softmax outputs of k seeds (initial weights and ReLU's draws).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from zorb.kernels.tuning import tune_process


def conv(filters, kernel, stride, act="sigmoid"):
    return [{"type": "conv2d", "filters": filters, "kernel_size": kernel, "stride": stride}, {"type": act},
            {"type": "flatten"}, {"type": "dense", "units": "outputs"}, {"type": "softmax"}]


def dense(*widths, act="tanh"):
    layers = [{"type": "flatten"}]
    for width in widths:
        layers += [{"type": "dense", "units": width}, {"type": act}]
    return layers + [{"type": "dense", "units": "outputs"}, {"type": "softmax"}]


# name: (layers, fit options)
CASES = {
    "conv8": (conv(8, 5, 3), dict(rcond=1e-9, ridge=10.0)),
    "conv8_auto": (conv(8, 5, 3), dict(rcond=1e-9, ridge="auto")),
    "conv16s2_auto": (conv(16, 5, 2), dict(rcond=1e-9, ridge="auto")),
    "conv32s2_auto": (conv(32, 5, 2), dict(rcond=1e-9, ridge="auto")),
    "conv32s2_r10": (conv(32, 5, 2), dict(rcond=1e-9, ridge=10.0)),
    "mlp1000_auto": (dense(1000), dict(rcond=1e-9, ridge="auto")),
    "mlp2000_auto": (dense(2000), dict(rcond=1e-9, ridge="auto")),
    "mlp1000s_auto": (dense(1000, act="sigmoid"), dict(rcond=1e-9, ridge="auto")),
    "mnist6_plain": (dense(1000, 800, 600, 400, 200), dict(rcond=1e-15)),
    "mnist6_auto": (dense(1000, 800, 600, 400, 200), dict(rcond=1e-15, ridge="auto")),
}
SPEC_OPTIONS = dict(rcond=1e-9, ridge="auto")


def ridge_value(text: str):
    return text if text == "auto" else float(text)


def layer_option(text: str) -> tuple[int, str, object]:
    """``"5:ridge=10"`` -> ``(5, "ridge", 10.0)``: one solver setting of one layer (1-based)."""
    index, _, setting = text.partition(":")
    key, _, value = setting.partition("=")
    if not index.isdigit() or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAYER:KEY=VALUE, e.g. 5:ridge=10")
    return int(index), key, value if key == "solver" else ridge_value(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--train", type=int, default=None, help="a seeded subset of this many training images")
    parser.add_argument("--case", action="append", default=[], choices=sorted(CASES))
    parser.add_argument("--spec", action="append", default=[], help="a network on one line (zorb.core.spec)")
    parser.add_argument("--solver", default="qr")
    parser.add_argument("--rcond", type=float, default=None)
    parser.add_argument("--ridge", type=ridge_value, default=None, help="a number or 'auto'")
    parser.add_argument("--layer", type=layer_option, action="append", default=[],
                        help="one layer's own setting, LAYER:KEY=VALUE (fit's per_layer), e.g. 5:ridge=10")
    parser.add_argument("--passes", type=int, default=1, help="passes over the layers")
    parser.add_argument("--chunk-rows", type=int, default=None, help="stream the fit in chunks of this many rows")
    parser.add_argument("--seeds", type=int, default=1, help="average the softmax outputs of this many seeds")
    parser.add_argument("--validation", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=None, help="pin the process to this many cores")
    args = parser.parse_args()
    if not args.case and not args.spec:
        parser.error("give at least one --case or --spec")
    if args.threads:
        from zorb.kernels.threads import pin

        pin(args.threads)  # before JAX starts its CPU backend, which sizes its pool once
    tune_process()
    import zorb
    from zorb.data import load_dataset

    networks = [(name, *CASES[name]) for name in args.case]
    networks += [(text, zorb.parse_spec(text), SPEC_OPTIONS) for text in args.spec]
    extra = {"train_samples": args.train} if args.train else {}
    data = load_dataset(args.dataset, seed=0, **extra)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    if args.validation:
        order = np.random.default_rng(0).permutation(len(x_train))
        held = order[: int(round(args.validation * len(order)))]
        kept = order[len(held):]
        x_train, y_train, x_test, y_test = x_train[kept], y_train[kept], x_train[held], y_train[held]
    split = "validation" if args.validation else "test"
    labels = np.asarray(y_test).argmax(1)
    for name, layers, options in networks:
        options = dict(options)
        if args.rcond is not None:
            options["rcond"] = args.rcond
        if args.ridge is not None:
            options["ridge"] = args.ridge
        for index, key, value in args.layer:
            options.setdefault("per_layer", {}).setdefault(index, {})[key] = value
        started = time.perf_counter()
        probabilities, seed_scores = 0, []
        for seed in range(args.seeds):
            net = zorb.build_network(layers, data.input_shape, output_dim=data.output_dim, seed=seed)
            for _ in range(args.passes):
                net, report = zorb.fit(net, x_train, y_train, solver=args.solver, seed=seed,
                                       chunk_rows=args.chunk_rows, **options)
            scores = np.asarray(zorb.predict(net, x_test, batch_size=1000))
            seed_scores.append(float(np.mean(scores.argmax(1) == labels)))
            probabilities = probabilities + scores
            train = zorb.evaluate(net, x_train, y_train, batch_size=1000)["accuracy"]
            ridges = [f"{r.ridge:.3g}" for r in report.layers]
        score = float(np.mean(probabilities.argmax(1) == labels))
        each = f" (each seed {' '.join(f'{s:.4f}' for s in seed_scores)})" if args.seeds > 1 else ""
        print(f"{args.dataset} n={len(x_train)} {name} {options} solver={args.solver} passes={args.passes} "
              f"seeds={args.seeds}: train {train:.4f} (last seed) {split} {score:.4f}{each}  ridges {ridges}  "
              f"{time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
