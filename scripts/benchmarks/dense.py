"""ZORB fits against the flop-bound limit: one network, every solver, each solver in its own
worker; the dense section (mnist_6, mnist_11) and the thread-settings section.

Each configuration is fitted once to compile (its compile time is reported), then timed on
``--warm-fits`` warm fits: the best is reported, the first beside it (the first warm fits
still grow the heap: page faults, costly on a virtual machine). ``limit_ratio`` = fit time /
(flops / GEMM rate), the rate sampled in the fit's own worker after each warm fit (the best
sample); ``limit_ratio_first_rate`` takes the rate of the run's first section instead.
"""

from __future__ import annotations

import time

from benchmarks.common import (HIDDEN, RCOND, ONE_THREAD, current_rss_gib, gemm_sampler, make_data,
                               network_specs, peak_rss_gib, run_worker, section)
from benchmarks.flops import fit_flops, fmt_flops, layer_plan


def eval_subset(n: int, eval_rows: int | None, seed: int):
    """The rows ``zorb.baselines.train_adam`` evaluates its curve on (the same draw), or None for all."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from zorb.baselines.adam import _EVAL_STREAM

    if eval_rows is None or eval_rows >= n:
        return None
    key = jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM)
    return np.asarray(jnp.sort(jax.random.permutation(key, n)[:eval_rows]))


def train_errors(network, x, y, eval_rows, seed):
    """(error on all rows, error on Adam's evaluation rows, accuracy) of a trained network."""
    import numpy as np
    import zorb

    pred = zorb.predict(network, x, batch_size=5000)
    full = zorb.scores(pred, y, task="regression")["error"]
    rows = eval_subset(len(x), eval_rows, seed)
    sub = full if rows is None else zorb.scores(pred[rows], np.asarray(y)[rows], task="regression")["error"]
    return full, sub, float(np.mean(pred.argmax(axis=1) == np.asarray(y).argmax(axis=1)))


def layer_rows(report, cold=None):
    """Per-layer stage seconds of ``report``; compile seconds from ``cold`` (the first fit) if given."""
    compile_seconds = {r.index: r.compile_seconds for r in (cold or report).layers}
    return [{"index": r.index, "kind": r.kind, "design": list(r.design_shape), "solve": r.solve_seconds,
             "target": r.target_seconds, "forward": r.forward_seconds, "compile": compile_seconds[r.index],
             "rank": r.rank, "cond": r.cond} for r in report.layers]


def work_zorb(cfg):
    """Worker: fit once to compile, then time the warm fits, for each entry of ``cfg["runs"]``
    (one solver each; several share this process, and so its peak RSS, in quick mode)."""
    import zorb

    x, y = make_data(cfg)
    net = zorb.build_network(network_specs(cfg["network"]), x.shape[1:], output_dim=y.shape[1], seed=cfg["seed"])
    rss_before = current_rss_gib()
    sample_gemm = gemm_sampler(cfg.get("gemm_size", 4000))
    out = {}
    for run in cfg["runs"]:
        options = dict(solver=run["solver"], rcond=run["rcond"])
        start = time.perf_counter()
        _, cold = zorb.fit(net, x, y, **options)
        cold_wall = time.perf_counter() - start
        walls, rates, peak = [], [], None
        for _ in range(cfg.get("warm_fits", 1)):
            start = time.perf_counter()
            trained, report = zorb.fit(net, x, y, **options)
            walls.append(time.perf_counter() - start)
            if walls[-1] == min(walls):
                warm = report
            peak = peak_rss_gib() if peak is None else peak  # before the GEMM sample's matrices exist
            rates.append(sample_gemm())
        full, sub, accuracy = train_errors(trained, x, y, cfg.get("eval_rows"), cfg["seed"])
        out[run["solver"]] = {
            "fit_seconds": min(walls), "first_warm_seconds": walls[0], "warm_fits": len(walls),
            "report_fit_seconds": warm.fit_seconds, "compile_seconds": cold.compile_seconds,
            "cold_wall_seconds": cold_wall, "train_error": full, "train_error_eval_rows": sub,
            "train_accuracy": accuracy, "layers": layer_rows(warm, cold), "rss_before_fit_gib": rss_before,
            "peak_rss_gib": peak, "gemm_samples": rates}
        del trained
    return out


def data_cfg(args, network, rows, shape, dataset):
    return {"network": network, "rows": rows, "shape": list(shape), "dataset": dataset, "data_dir": args.data_dir,
            "seed": args.seed, "eval_rows": args.eval_rows}


def beside_rate(results, result) -> float:
    """The best GEMM rate sampled beside a fit's warm fits (the run's first rate if none)."""
    return max(result.get("gemm_samples") or [results.gemm_rate])


def ranks(result) -> dict:
    """Layer index -> the rank its solve kept, from a worker's result."""
    return {layer["index"]: layer["rank"] for layer in result["layers"]}


def fit_network(results, network, rows, shape, dataset, *, rcond=None, tag=None, env=None, cores=None, quiet=False):
    """Fit ``network`` with every solver of ``--solvers``; print time, limit ratio, memory and
    the per-stage breakdown; record the keys. ``rcond``: one for every solver, or a dict by
    solver (default ``RCOND``); ``env``, ``cores``: the workers' (``run_worker``). Returns
    {solver: worker result}."""
    args, tag = results.args, tag or network
    plan = layer_plan(network_specs(network), shape)
    flops = fit_flops(plan, rows)
    limit = flops["total"] / (results.gemm_rate * 1e9)
    print(f"{tag}: {rows:,} samples of {'x'.join(map(str, shape))} ({dataset}); flops if nothing is cut: "
          f"{fmt_flops(flops['total'])} = refresh {flops['refresh'] / 1e9:.1f} + forward {flops['forward'] / 1e9:.1f}"
          f" + targets {flops['targets'] / 1e9:.1f} + pinv {flops['pinv'] / 1e9:.1f} + solve (gram "
          f"{flops['solve_gram'] / 1e9:.1f}, moment {flops['solve_moment'] / 1e9:.1f}, eigenvalues + Cholesky "
          f"{flops['solve_small'] / 1e9:.1f}); flop-bound limit {limit:.2f} s at the run's first GEMM rate")
    results.put(f"gflop_{tag}", flops["total"] / 1e9)
    results.put(f"limit_s_{tag}", limit)
    rconds = rcond if isinstance(rcond, dict) else dict.fromkeys(RCOND, rcond) if rcond is not None else RCOND
    runs = [{"solver": s, "rcond": rconds[s]} for s in args.solvers]
    out = {}
    for batch in [runs] if args.quick else [[run] for run in runs]:  # one process per solver: its own peak RSS
        cfg = data_cfg(args, network, rows, shape, dataset)
        cfg.update(task="zorb", runs=batch, warm_fits=args.warm_fits, gemm_size=1000 if args.quick else 4000)
        out.update(run_worker(cfg, env_extra=env, cores=cores))
    for run in runs:
        solver, r = run["solver"], out[run["solver"]]
        rate = beside_rate(results, r)
        done = fit_flops(plan, rows, solver, ranks(r))  # the gram route at the ranks this solve kept
        ratio = r["fit_seconds"] / (done["total"] / (rate * 1e9))
        first_ratio = r["fit_seconds"] / (done["total"] / (results.gemm_rate * 1e9))
        xla_ratio = r["fit_seconds"] / (done["total"] / (results.xla_rate * 1e9))
        print(f"  {solver:4s} rcond {run['rcond']:.0e}: fit {r['fit_seconds']:7.2f} s (best of {r['warm_fits']} warm; "
              f"first {r['first_warm_seconds']:.2f} s)  {ratio:5.2f}x the limit of {fmt_flops(done['total'])} at "
              f"{rate:.1f} GFLOP/s (the rate beside the fits; {first_ratio:4.2f}x at the first rate, {xla_ratio:4.2f}x"
              f" at XLA's)  compile {r['compile_seconds']:5.1f} s  peak RSS {r['peak_rss_gib']:.2f} GiB (before fit "
              f"{r['rss_before_fit_gib']:.2f})  train error {r['train_error']:.4f} acc {r['train_accuracy']:.3f}")
        if not quiet:
            print_layers(r["layers"], done["layers"], rate)
        for key, value in (("fit_s", r["fit_seconds"]), ("compile_s", r["compile_seconds"]),
                           ("gflop", done["total"] / 1e9), ("gemm_gflops_beside", rate), ("limit_ratio", ratio),
                           ("limit_ratio_first_rate", first_ratio), ("limit_ratio_xla", xla_ratio),
                           ("peak_rss_gib", r["peak_rss_gib"]), ("train_error", r["train_error"])):
            results.put(f"{key}_{tag}_{solver}", value)
    return out


def print_layers(layers, model, gemm_rate):
    """Per parametric layer, the FitReport's stage seconds beside their flop-bound limits;
    ``route/min`` is the flops of the solver's own route over the gram route's. Seconds
    include what each stage does besides flops (elementwise passes, patch extraction, copies)."""
    rate = gemm_rate * 1e9
    print(f"    {'layer':>5s} {'design [A,1]':>17s} {'rank':>6s} {'solve s':>8s} {'(limit)':>8s} {'route/min':>9s} "
          f"{'targets s':>9s} {'(limit)':>8s} {'forward s':>9s} {'(limit)':>8s} {'compile s':>9s}")
    for r in layers:
        m = model[r["index"]]
        print(f"    {r['index']:5d} {r['design'][0]:>9,d}x{r['design'][1]:<7,d} {r['rank']:6d} {r['solve']:8.3f} "
              f"{m['solve'] / rate:8.3f} {m['route_solve'] / m['solve']:9.2f} {r['target']:9.3f} "
              f"{m['targets'] / rate:8.3f} {r['forward']:9.3f} {m['forward'] / rate:8.3f} {r['compile']:9.2f}")
    total = {s: sum(r[s] for r in layers) for s in ("solve", "target", "forward", "compile")}
    limits = {s: sum(m[k] for m in model.values()) / rate for s, k in
              (("solve", "solve"), ("target", "targets"), ("forward", "forward"))}
    print(f"    {'all':>5s} {'':17s} {'':6s} {total['solve']:8.3f} {limits['solve']:8.3f} {'':9s} "
          f"{total['target']:9.3f} {limits['target']:8.3f} {total['forward']:9.3f} {limits['forward']:8.3f} "
          f"{total['compile']:9.2f}")


def dense_section(results):
    args = results.args
    rows = args.rows or (1_200 if args.quick else 10_000)
    section(f"ZORB on the dense networks ({rows:,} rows; rcond svd/qr 1e-15, gram 1e-7: the normal equations "
            f"honour nothing below ~7.5e-8 in float64)")
    for network in args.networks:
        if network in HIDDEN:
            results.dense[network] = (fit_network(results, network, rows, (784,), args.dataset), rows)


THREAD_VARIANTS = {
    "default": {},
    "openblas1": {"OPENBLAS_NUM_THREADS": "1"},
    "xla1": {"XLA_FLAGS": ONE_THREAD["XLA_FLAGS"]},
    "all1": ONE_THREAD,
}


def threads_section(results):
    """One dense network under each thread setting, each in a fresh process."""
    args = results.args
    rows = args.rows or (1_200 if args.quick else 10_000)
    network = next((n for n in args.networks if n in HIDDEN), "mnist_6")
    section(f"Thread settings: {network} on {rows:,} rows, each variant in a fresh process (environment set "
            f"before import)")
    for name, env in THREAD_VARIANTS.items():
        print(f"  -- {name}: {' '.join(f'{k}={v!r}' for k, v in env.items()) or '(environment as inherited)'}")
        out = fit_network(results, network, rows, (784,), args.dataset, tag=f"threads_{name}_{network}", env=env,
                          quiet=True)
        for solver, r in out.items():
            stages = {s: sum(x[s] for x in r["layers"]) for s in ("solve", "target", "forward")}
            print(f"     {solver:4s} stages: solve {stages['solve']:.2f} s, targets {stages['target']:.2f} s, "
                  f"forward {stages['forward']:.2f} s")
    for name in ("openblas1", "xla1"):
        r = run_worker({"task": "gemm", "size": 1500 if args.quick else 4000, "repeats": 3},
                       env_extra=THREAD_VARIANTS[name])
        print(f"  GEMM with {name}: numpy {r['numpy_gflops']:.1f} GFLOP/s, XLA {r['xla_gflops']:.1f} GFLOP/s")
        results.put(f"threads_gemm_numpy_{name}", r["numpy_gflops"])
        results.put(f"threads_gemm_xla_{name}", r["xla_gflops"])
