"""``ridge="auto"``: GCV read off the solve's factorisation, against the criterion computed
from the explicit hat matrix, and the fit it leads to against a fit at that fixed ridge."""

import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.core.solvers import RIDGE_GRID, SOLVERS


def hat_matrix_gcv(m, t, ridge):
    """``n ||(I - H) T||^2 / tr(I - H)^2`` with the hat matrix ``H = M (M^T M + ridge I)^-1 M^T``
    formed; for a wide ``M`` as ``I - H = ridge (M M^T + ridge I)^-1``, the same matrix with the
    small side inverted."""
    n, d = m.shape
    if n <= d:
        complement = ridge * np.linalg.inv(m @ m.T + ridge * np.eye(n))
    else:
        complement = np.eye(n) - m @ np.linalg.solve(m.T @ m + ridge * np.eye(d), m.T)
    return n * np.sum((complement @ t) ** 2) / np.trace(complement) ** 2


def noisy_problem(rng, rows, cols, noise):
    a = rng.normal(size=(rows, cols)) * np.logspace(0, -2, cols)  # a spread of singular values
    t = a @ rng.normal(size=(cols, 3)) + noise * rng.normal(size=(rows, 3))
    return a, t


@pytest.mark.parametrize("name", ["svd", "qr", "gram"])
@pytest.mark.parametrize("rows,cols", [(60, 12), (15, 40)])
def test_gcv_curve_and_choice_match_the_hat_matrix(name, rows, cols, rng):
    a, t = noisy_problem(rng, rows, cols, noise=0.3)
    w, s, choice = SOLVERS[name].solve(jnp.asarray(a), jnp.asarray(t), rcond=jnp.asarray(1e-7), ridge="auto")
    m = np.hstack([a, np.ones((rows, 1))])
    s_max = np.linalg.svd(m, compute_uv=False)[0]
    grid = np.asarray(RIDGE_GRID) * s_max ** 2
    np.testing.assert_allclose(np.asarray(choice.grid), grid, rtol=1e-9)
    # the explicit inverse loses digits as the ridge falls below the design's small singular values
    usable = grid >= 1e-8 * s_max ** 2
    brute = np.array([hat_matrix_gcv(m, t, r) for r in grid[usable]])
    np.testing.assert_allclose(np.asarray(choice.score)[usable], brute, rtol=1e-6)
    best = int(np.argmin(brute))
    assert float(choice.ridge) == pytest.approx(grid[usable][best], rel=1e-9)
    expected = np.linalg.solve(m.T @ m + grid[usable][best] * np.eye(cols + 1), m.T @ t)
    np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-7, atol=1e-9)


def test_gcv_prefers_more_ridge_for_noisier_targets(rng):
    a = rng.normal(size=(200, 30)) * np.logspace(0, -3, 30)
    signal = a @ rng.normal(size=(30, 2))
    chosen = []
    for noise in (1e-4, 1e-1, 10.0):
        t = signal + noise * rng.normal(size=signal.shape)
        chosen.append(float(SOLVERS["svd"].solve(jnp.asarray(a), jnp.asarray(t), rcond=jnp.asarray(1e-15),
                                                 ridge="auto")[2].ridge))
    assert chosen[0] < chosen[1] < chosen[2]


@pytest.mark.parametrize("solver,rcond", [("svd", 1e-15), ("qr", 1e-15), ("gram", 1e-7)])
def test_auto_fit_equals_the_fit_at_the_chosen_ridges(solver, rcond, rng):
    x = rng.uniform(-1, 1, size=(300, 4))
    y = np.eye(3)[(x[:, 0] + x[:, 1] ** 2 > 0.3).astype(int) + (x[:, 2] > 0.5)]
    spec = [{"type": "dense", "units": 20}, {"type": "sigmoid"}, {"type": "dense", "units": 10}, {"type": "tanh"},
            {"type": "dense", "units": 3}, {"type": "softmax"}]
    net = zorb.build_network(spec, (4,), seed=3)
    auto, report = zorb.fit(net, x, y, solver=solver, rcond=rcond, ridge="auto")
    chosen = {r.index: {"ridge": r.ridge} for r in report.layers}
    assert all(r.ridge_grid.shape == r.ridge_score.shape == (len(RIDGE_GRID),) for r in report.layers)
    assert all(r.ridge == r.ridge_grid[np.argmin(r.ridge_score)] for r in report.layers)
    fixed, fixed_report = zorb.fit(net, x, y, solver=solver, rcond=rcond, per_layer=chosen)
    assert fixed_report.layers[0].ridge_grid is None
    # gram with a fixed ridge solves by Cholesky, with "auto" by eigenvectors: the two agree to
    # about cond^2 * eps, and the sigmoid layers here are ill-conditioned
    tolerance = 1e-3 if solver == "gram" else 1e-9
    for w_auto, w_fixed in zip(auto.weights, fixed.weights):
        assert np.linalg.norm(w_auto - w_fixed) <= tolerance * np.linalg.norm(w_fixed)


@pytest.mark.parametrize("solver", ["qr", "gram"])
def test_auto_ridge_streamed_in_chunks_chooses_as_in_memory(solver, rng):
    x = rng.normal(size=(400, 6))
    y = np.tanh(x @ rng.normal(size=(6, 2))) + 0.1 * rng.normal(size=(400, 2))
    net = zorb.build_network([{"type": "dense", "units": 8}, {"type": "sigmoid"}, {"type": "dense", "units": 2}],
                             (6,), seed=0)
    whole, whole_report = zorb.fit(net, x, y, solver=solver, rcond=1e-7, ridge="auto")
    chunked, chunked_report = zorb.fit(net, x, y, solver=solver, rcond=1e-7, ridge="auto", chunk_rows=128)
    for a, b in zip(whole_report.layers, chunked_report.layers):
        np.testing.assert_allclose(a.ridge_score, b.ridge_score, rtol=1e-8)
        assert a.ridge == pytest.approx(b.ridge, rel=1e-12)
    for a, b in zip(whole.weights, chunked.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10)


def test_ridge_setting_is_checked():
    with pytest.raises(zorb.ConfigError, match="'auto'"):
        zorb.check_solver_options("svd", ridge="gcv")
    assert zorb.check_solver_options("gram", rcond=1e-7, ridge="auto")[2] == "auto"
