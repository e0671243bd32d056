"""conv1 (Conv2D 32 3x3 -> sigmoid -> flatten -> dense 10 -> softmax) on CIFAR-shaped images,
and its conv layer alone against a flop + memory roofline (the layer is memory-bound)."""

from __future__ import annotations

from benchmarks.common import CONV_RCOND, network_specs, section
from benchmarks.dense import beside_rate, fit_network, ranks
from benchmarks.flops import conv_layer_bytes, fit_flops, fmt_flops, layer_plan


def conv_section(results):
    args = results.args
    images = args.images or (64 if args.quick else 1280)
    section(f"ZORB on conv1 (Conv2D 32 3x3 -> sigmoid -> Flatten -> Dense 10 -> softmax) on {images:,} random "
            f"32x32x3 images, rcond {CONV_RCOND:g}")
    plan = layer_plan(network_specs("conv1"), (32, 32, 3))
    dense_d = next(e["d"] for e in plan if e["kind"] == "dense")
    if images < dense_d:
        print(f"  its dense layer's design matrix is {images:,} x {dense_d:,} (wider than tall): qr and gram work on "
              f"the {images:,}-row side (an LQ of [A, 1], or the {images:,}^2 kernel [A, 1][A, 1]^T)")
    out = fit_network(results, "conv1", images, (32, 32, 3), "random", rcond=CONV_RCOND)
    results.conv["conv1"] = (out, images)
    conv_layer_ratio(results, plan, images, out, "conv1")


def conv_layer_ratio(results, plan, images, out, tag):
    """The conv layer's own stages against its flops at the GEMM rate beside the fits and
    against a roofline: those flops plus the least memory traffic it needs at the stream rate."""
    index = next(i for i, e in enumerate(plan) if e["kind"] == "conv2d")
    traffic = conv_layer_bytes(plan, images, index)
    stream = results.stream_rate * 1e9
    print(f"  {tag} conv layer: {traffic / 1e9:.2f} GB to move at {results.stream_rate:.1f} GB/s "
          f"({traffic / stream:.3f} s)")
    for solver, r in out.items():
        m = fit_flops(plan, images, solver, ranks(r))["layers"][index + 1]
        flops = m["solve"] + m["targets"] + m["forward"]
        rate = beside_rate(results, r)
        limit = flops / (rate * 1e9)
        layer = next(x for x in r["layers"] if x["index"] == index + 1)
        seconds = layer["solve"] + layer["target"] + layer["forward"]
        print(f"  {tag} conv layer alone, {solver}: {seconds:.3f} s = {seconds / limit:.2f}x the flop-bound limit "
              f"({fmt_flops(flops)}: {limit:.3f} s at {rate:.1f} GFLOP/s), {seconds / (limit + traffic / stream):.2f}x "
              f"the flop + memory limit ({limit + traffic / stream:.3f} s)")
        results.put(f"{tag}_conv_layer_s_{solver}", seconds)
        results.put(f"{tag}_conv_layer_limit_ratio_{solver}", seconds / limit)
        results.put(f"{tag}_conv_layer_roofline_ratio_{solver}", seconds / (limit + traffic / stream))
