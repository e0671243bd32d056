"""Flop counts of a ZORB fit, from the shapes alone (pure Python, no JAX).

The flop-bound limit of a fit is these flops at the measured float64 GEMM rate. To be a
true lower bound, every count is at most what the code really performs: each solve at the
cost of the gram route as ``zorb.core.solvers.lstsq_gram`` and the gram solve kernel in
``zorb/kernels/`` run it, each backward pseudoinverse at the cheaper of the Gram and SVD
routes of ``zorb.core.solvers.pseudoinverse``. Elementwise passes (activations, their
inverses, patch extraction) are memory traffic and count nothing.
"""

from __future__ import annotations

import math


def layer_plan(specs, input_shape):
    """Per layer: kind, in/out shapes and, for dense/conv2d, ``positions`` (rows per sample),
    ``d`` (fan-in + the bias column) and ``k`` (outputs). Mirrors zorb's shape rules."""
    shape, plan = tuple(input_shape), []
    for spec in specs:
        kind = spec["type"]
        entry = {"kind": kind, "in_shape": shape}
        if kind == "dense":
            entry.update(positions=1, d=shape[0] + 1, k=spec["units"])
            shape = (spec["units"],)
        elif kind == "conv2d":
            size = spec["kernel_size"]
            h, w, c = shape
            shape = (h - size + 1, w - size + 1, spec["filters"])
            entry.update(positions=shape[0] * shape[1], d=size * size * c + 1, k=spec["filters"])
        elif kind == "flatten":
            shape = (math.prod(shape),)
        entry["out_shape"] = shape
        entry["parametric"] = kind in ("dense", "conv2d")
        plan.append(entry)
    return plan


def gemm(m, n, k) -> float:
    return 2.0 * m * n * k


def svd_flops(m: int, n: int) -> float:
    """Thin SVD with both singular-vector sets of an m x n matrix (a >= b its sides): 4ab^2 +
    8b^3 (bidiagonalisation, forming the vectors, the bidiagonal SVD; a model of gesdd)."""
    a, b = max(m, n), min(m, n)
    return 4.0 * a * b * b + 8.0 * b ** 3


def tridiagonal_flops(n: int) -> float:
    """Householder reduction of a symmetric n x n matrix to tridiagonal form (dsytrd): 4n^3/3.
    The eigenvalues of the tridiagonal matrix (dsterf) are O(n^2) and not counted."""
    return 4.0 * n ** 3 / 3


def cholesky_solve_flops(n: int, k: int) -> float:
    """Cholesky factor of an n x n matrix (n^3/3) and two triangular solves with k columns."""
    return n ** 3 / 3 + 2.0 * n * n * k


def gram_solve_flops(n: int, k: int, rank: int | None = None) -> float:
    """The last step of the gram route on n x n normal equations with k targets: the
    eigenvalues (a tridiagonal reduction), then Cholesky where nothing is cut (``rank`` None
    or n), else the kept eigenvectors back-transformed (2 n^2 rank; MRRR's own vectors are
    O(n) each) and applied to the moment and back (2 products of n x rank with k columns)."""
    if rank is None or rank >= n:
        return tridiagonal_flops(n) + cholesky_solve_flops(n, k)
    return tridiagonal_flops(n) + 2.0 * n * n * rank + 2 * gemm(n, rank, k)


def gram_route_flops(rows: int, d: int, k: int, rank: int | None = None) -> dict:
    """The gram route for a rows x d design and a rows x k target, by part. Tall (rows >= d):
    the symmetric Gram matrix (rows d^2), the moment [A,1]^T T (2 rows d k) and
    ``gram_solve_flops``. Wide: the rows x rows kernel (rows^2 d), a full eigendecomposition
    of it (a tridiagonal reduction and the back-transformation of every eigenvector, 2 n^3;
    divide and conquer's own work, which deflation shrinks, not counted) and
    ``M^T U f(S) U^T T`` (three products)."""
    if rows >= d:
        return {"gram": float(rows) * d * d, "moment": gemm(rows, d, k), "small": gram_solve_flops(d, k, rank)}
    return {"gram": float(rows) * rows * d, "moment": gemm(rows, d, k),
            "small": tridiagonal_flops(rows) + 2.0 * rows ** 3 + 2 * gemm(rows, rows, k)}


def route_solve_flops(solver: str, rows: int, d: int, k: int, rank: int | None = None) -> float:
    """What each zorb solver's route does for one solve."""
    if solver == "gram":
        return sum(gram_route_flops(rows, d, k, rank).values())
    if solver == "qr":
        if rows < d:  # wide: QR of [A, 1]^T (R only), an SVD of the rows x rows triangle, [A, 1]^T x
            return (2.0 * d * rows * rows - 2.0 * rows ** 3 / 3 + svd_flops(rows, rows) + 2 * gemm(rows, rows, k)
                    + gemm(d, rows, k))
        c = d + k  # Householder QR of [A, 1, T] (R only), then an SVD of the small triangle
        qr = 2.0 * rows * c * c - 2.0 * c ** 3 / 3 if rows >= c else 2.0 * rows * rows * c - 2.0 * rows ** 3 / 3
        return qr + svd_flops(d, d) + 2 * gemm(d, d, k)
    t = min(rows, d)  # svd: thin SVD of [A, 1] with U (rows x d), then V diag(f) U^T T
    return svd_flops(rows, d) + gemm(t, rows, k) + gemm(d, t, k)


def pinv_flops(m: int, k: int) -> float:
    """A backward pseudoinverse of an m x k weight matrix, at the cheaper of its two routes:
    the small Gram matrix, its eigenvalues and a Cholesky solve against the matrix (what a
    well-conditioned matrix takes), or the SVD and ``V S^-1 U^T``."""
    a, b = max(m, k), min(m, k)
    by_gram = float(a) * b * b + tridiagonal_flops(b) + cholesky_solve_flops(b, a)
    by_svd = svd_flops(m, k) + gemm(b, b, a)
    return min(by_gram, by_svd)


def fit_flops(plan, n: int, solver: str = "gram", ranks: dict | None = None) -> dict:
    """Flops of the in-memory fit (``zorb.core.fit``) on n samples, by stage.

    - refresh: before each parametric layer's solve, the forward from it to the top (a
      softmax above needs its normalisers for the current input);
    - forward: each parametric layer's forward with its solved weights (not the last);
    - pinv: each backward pseudoinverse, once per layer above the first (cached);
    - targets: (T - b) @ pinv(W') for every parametric layer above the one being solved,
      plus col2im's additions for a conv layer inverted on the way;
    - solve_gram / solve_moment / solve_small: the gram route (``gram_route_flops``).
    ``ranks`` maps a layer's 1-based index to the rank its solve kept (from a FitReport);
    a layer not in it counts as nothing cut. ``layers`` holds per-layer figures, with
    ``route_solve``: what ``solver``'s own route does for that solve.
    """
    ranks = ranks or {}
    params = [i for i, e in enumerate(plan) if e["parametric"]]
    observed = [any(e["kind"] == "softmax" for e in plan[i + 1:]) for i in range(len(plan))]

    def forward(i):
        e = plan[i]
        return gemm(n * e["positions"], e["d"], e["k"])

    def backward(j):
        e = plan[j]
        rows = n * e["positions"]
        flops = gemm(rows, e["k"], e["d"] - 1)
        if e["kind"] == "conv2d":  # col2im: every patch entry added back, then the averaging division
            flops += rows * (e["d"] - 1) + n * math.prod(e["in_shape"])
        return flops

    totals = dict.fromkeys(("refresh", "forward", "pinv", "targets", "solve_gram", "solve_moment", "solve_small"), 0.0)
    layers, prepared = {}, set()
    for i in params:
        e = plan[i]
        own = dict.fromkeys(("forward", "targets", "solve"), 0.0)
        if observed[i]:
            refresh = sum(forward(j) for j in params if j >= i)
            own["forward"] += refresh
            totals["refresh"] += refresh
        for j in params:
            if j > i and j not in prepared:
                prepared.add(j)
                pinv = pinv_flops(plan[j]["d"] - 1, plan[j]["k"])
                totals["pinv"] += pinv
                own["targets"] += pinv
        back = sum(backward(j) for j in params if j > i)
        totals["targets"] += back
        own["targets"] += back
        rows, rank = n * e["positions"], ranks.get(i + 1)
        solve = gram_route_flops(rows, e["d"], e["k"], rank)
        for key, value in solve.items():
            totals[f"solve_{key}"] += value
        own["solve"] = sum(solve.values())
        own["route_solve"] = route_solve_flops(solver, rows, e["d"], e["k"], rank)
        if i != params[-1]:
            totals["forward"] += forward(i)
            own["forward"] += forward(i)
        layers[i + 1] = own
    totals["total"] = sum(totals.values())
    totals["layers"] = layers
    return totals


def chunked_fit_flops(plan, n: int, solver: str) -> float:
    """Flops of the streamed fit (``zorb.fit(chunk_rows=...)``): every pass over the rows
    recomputes the layer input from X through all trained layers below; per parametric layer
    one observation pass (forward to the top), one range pass per Sigmoid/Tanh above (targets
    from the top down to it) and one accumulation pass (targets + the solver's accumulation)."""
    params = [i for i, e in enumerate(plan) if e["parametric"]]
    squash = [i for i, e in enumerate(plan) if e["kind"] in ("sigmoid", "tanh")]

    def forward(i):
        e = plan[i]
        return gemm(n * e["positions"], e["d"], e["k"])

    def targets_to(j):
        return sum(gemm(n * plan[p]["positions"], plan[p]["k"], plan[p]["d"] - 1) for p in params if p > j)

    total = 0.0
    for i in params:
        below = sum(forward(p) for p in params if p < i)
        if any(e["kind"] == "softmax" for e in plan[i + 1:]):
            total += below + sum(forward(p) for p in params if p >= i)
        total += sum(below + targets_to(j) for j in squash if j > i)
        e = plan[i]
        rows = n * e["positions"]
        total += below + targets_to(i)
        if solver == "qr":
            c = e["d"] + e["k"]
            total += 2.0 * rows * c * c + svd_flops(e["d"], e["d"])
        else:
            total += sum(gram_route_flops(rows, e["d"], e["k"]).values())
    return total + sum(pinv_flops(plan[j]["d"] - 1, plan[j]["k"]) for j in params[1:])


def conv_layer_bytes(plan, n: int, index: int) -> float:
    """The least memory traffic of the in-memory fit's step for the conv layer at ``index``
    (0-based), float64, each array written once and read once: its patch matrix (written,
    read by the solve), the target rows the solve reads, its forward twice (the refresh and
    the forward with the solved weights), the refresh through every layer above and the
    backward targets through them. What a kernel fuses away (the patch matrix) still counts."""
    e = plan[index]
    rows = n * e["positions"]

    def size(shape):
        return n * math.prod(shape)

    total = 2 * rows * (e["d"] - 1) + rows * e["k"] + 2 * (size(e["in_shape"]) + rows * e["k"])
    above = plan[index + 1:]
    if any(a["kind"] == "softmax" for a in above):
        total += sum(size(a["in_shape"]) + size(a["out_shape"]) for a in above if a["kind"] != "flatten")
    total += sum(2 * size(a["in_shape"]) for a in above if a["kind"] != "flatten")
    return 8.0 * total


def fmt_flops(flops: float) -> str:
    return f"{flops / 1e9:,.1f} GFLOP"
