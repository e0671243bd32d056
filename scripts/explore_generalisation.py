"""Which ZORB settings generalise on real images: one line per (network, solver settings) on a
dataset, test accuracy from a fit on the training split (docs/results.md, "What makes ZORB
generalise").

    python scripts/explore_generalisation.py --dataset mnist_5k --case conv8 --case conv32
    python scripts/explore_generalisation.py --dataset fashion_mnist --train 10000 --case conv32s2_auto

``--validation 0.2`` holds out that share of the training split and scores on it instead of
the test split: settings are compared there, the test split is read only for the final ones.
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


def main() -> None:
    tune_process()
    import zorb
    from zorb.data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--train", type=int, default=None, help="a seeded subset of this many training images")
    parser.add_argument("--case", action="append", choices=sorted(CASES), required=True)
    parser.add_argument("--solver", default="qr")
    parser.add_argument("--seeds", type=int, default=1, help="average the softmax outputs of this many seeds")
    parser.add_argument("--validation", type=float, default=0.0)
    args = parser.parse_args()
    extra = {"train_samples": args.train} if args.train else {}
    data = load_dataset(args.dataset, seed=0, **extra)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    if args.validation:
        order = np.random.default_rng(0).permutation(len(x_train))
        held = order[: int(round(args.validation * len(order)))]
        kept = order[len(held):]
        x_train, y_train, x_test, y_test = x_train[kept], y_train[kept], x_train[held], y_train[held]
    split = "validation" if args.validation else "test"
    for name in args.case:
        layers, options = CASES[name]
        started = time.perf_counter()
        probabilities, ridges = 0, None
        for seed in range(args.seeds):
            net = zorb.build_network(layers, data.input_shape, output_dim=data.output_dim, seed=seed)
            trained, report = zorb.fit(net, x_train, y_train, solver=args.solver, seed=seed, **options)
            probabilities = probabilities + np.asarray(zorb.predict(trained, x_test, batch_size=1000))
            train = zorb.evaluate(trained, x_train, y_train, batch_size=1000)["accuracy"]
            ridges = [f"{r.ridge:.3g}" for r in report.layers]
        score = float(np.mean(probabilities.argmax(1) == np.asarray(y_test).argmax(1)))
        print(f"{args.dataset} n={len(x_train)} {name} solver={args.solver} seeds={args.seeds}: "
              f"train {train:.4f} (last seed) {split} {score:.4f}  ridges {ridges}  "
              f"{time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
