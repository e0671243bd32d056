"""Adam (optax, jit, batch 32) on the same data and initial weights, to ZORB's training error:
the speed-up is Adam's time to reach it over ZORB's fit time (Adam's whole time if it never
does). Its error curve is measured on fixed training rows, evaluations off the clock."""

from __future__ import annotations

from benchmarks.common import ADAM_LR, make_data, network_specs, peak_rss_gib, run_worker, section
from benchmarks.dense import data_cfg


def work_adam(cfg):
    """Worker: train Adam for ``cfg["steps"]`` and find when it reaches each ZORB error."""
    import zorb
    from zorb.baselines.adam import speedup, train_adam

    x, y = make_data(cfg)
    net = zorb.build_network(network_specs(cfg["network"]), x.shape[1:], output_dim=y.shape[1], seed=cfg["seed"])
    steps = cfg["steps"]
    _, report = train_adam(net, x, y, learning_rate=cfg["lr"], steps=steps, loss=cfg["loss"], seed=cfg["seed"],
                           eval_every=max(1, steps // cfg["curve_points"]), eval_rows=cfg["eval_rows"])
    targets = {}
    for solver, (zorb_seconds, zorb_error) in cfg["targets"].items():
        targets[solver] = {"reached_seconds": report.time_to_reach(zorb_error),
                           "speedup": speedup(report, zorb_seconds, zorb_error),
                           "reached_step": next((s for s, _, e in report.curve if e <= zorb_error), None)}
    return {"fit_seconds": report.fit_seconds, "compile_seconds": report.compile_seconds,
            "final_error": report.final_error, "steps": steps, "curve": report.curve, "targets": targets,
            "peak_rss_gib": peak_rss_gib()}


def adam_section(results):
    args = results.args
    steps = args.adam_steps or (50 if args.quick else 20_000)
    section(f"Adam (optax, jit, batch 32, {steps:,} steps) to ZORB's training error, same data and initial "
            f"weights; curve on {args.eval_rows:,} fixed training rows, evaluation off the clock")
    cases = [(net, out, rows, (784,), args.dataset, "sse") for net, (out, rows) in results.dense.items()]
    cases += [(net, out, images, (32, 32, 3), "random", "cross_entropy") for net, (out, images) in results.conv.items()]
    for network, zorb_results, rows, shape, dataset, loss in cases:
        cfg = data_cfg(args, network, rows, shape, dataset)
        cfg.update(task="adam", steps=steps, lr=ADAM_LR[network], loss=loss, curve_points=args.curve_points,
                   targets={s: (r["fit_seconds"], r["train_error_eval_rows"]) for s, r in zorb_results.items()})
        r = run_worker(cfg)
        print(f"{network}: Adam lr {ADAM_LR[network]:g}, loss {loss}: {r['fit_seconds']:.1f} s for {steps:,} steps "
              f"(compile {r['compile_seconds']:.1f} s), error {r['curve'][0][2]:.4f} -> {r['final_error']:.4f}")
        results.put(f"adam_s_{network}", r["fit_seconds"])
        for solver, t in r["targets"].items():
            z = zorb_results[solver]
            how = (f"never reached in {steps:,} steps: whole {r['fit_seconds']:.1f} s counts"
                   if t["reached_seconds"] is None else
                   f"reached at step {t['reached_step']:,} after {t['reached_seconds']:.2f} s")
            print(f"  vs ZORB {solver:4s} (error {z['train_error_eval_rows']:.4f}, {z['fit_seconds']:.2f} s): "
                  f"{how}; speed-up {t['speedup']:.1f}x")
            results.put(f"adam_speedup_{network}_{solver}", t["speedup"])
            results.put(f"adam_reached_{network}_{solver}", 0 if t["reached_seconds"] is None else 1)
