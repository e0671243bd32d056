"""Least-squares solvers against independent numpy solutions."""

import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.core.solvers import SOLVERS, check_solver_options, gram_min_rcond, pseudoinverse, spectrum_summary


def augmented(a):
    return np.hstack([a, np.ones((len(a), 1))])


def relative(x, y):
    return np.linalg.norm(np.asarray(x) - np.asarray(y)) / np.linalg.norm(np.asarray(y))


def solve(name, a, t, rcond, ridge=0.0, bias=True):
    w, s = SOLVERS[name].solve(jnp.asarray(a), jnp.asarray(t), rcond=jnp.asarray(rcond), ridge=jnp.asarray(ridge),
                               bias=bias)
    assert w.dtype == jnp.float64 and s.dtype == jnp.float64
    return np.asarray(w), np.asarray(s)


@pytest.mark.parametrize("name", ["svd", "qr", "gram"])
def test_well_conditioned_solve_matches_numpy_lstsq(name, rng):
    a, t = rng.normal(size=(300, 12)), rng.normal(size=(300, 4))
    expected, *_ = np.linalg.lstsq(augmented(a), t, rcond=None)
    w, s = solve(name, a, t, 1e-15 if name != "gram" else 1e-6)
    assert w.shape == (13, 4)
    assert relative(w, expected) < 1e-10
    np.testing.assert_allclose(s, np.linalg.svd(augmented(a), compute_uv=False), rtol=1e-10)


def test_dense_layer_fit_matches_numpy_lstsq(rng):
    """The whole fit path of one Dense layer (no activation) is one least-squares solve."""
    a, t = rng.normal(size=(200, 6)), rng.normal(size=(200, 3))
    net = zorb.build_network([{"type": "dense", "units": 3}], (6,), seed=0)
    trained, report = zorb.fit(net, a, t, solver="svd", rcond=1e-15)
    expected, *_ = np.linalg.lstsq(augmented(a), t, rcond=None)
    assert relative(trained.weights[0], expected) < 1e-10
    assert report.layers[0].rank == 7 and report.layers[0].design_shape == (200, 7)


def rank_deficient(rng, rows=120):
    base = rng.normal(size=(rows, 5))
    mix = rng.normal(size=(5, 9))
    return base @ mix, rng.normal(size=(rows, 3))  # rank 5 (+1 for the bias column) of 10


def test_rank_deficient_svd_and_qr_keep_same_rank_and_agree(rng):
    a, t = rank_deficient(rng)
    rcond = 1e-10
    w_svd, s_svd = solve("svd", a, t, rcond)
    w_qr, s_qr = solve("qr", a, t, rcond)
    _, rank_svd, _ = spectrum_summary(s_svd, rcond)
    _, rank_qr, _ = spectrum_summary(s_qr, rcond)
    assert rank_svd == rank_qr == 6
    assert relative(w_qr, w_svd) < 1e-10
    expected = np.linalg.pinv(augmented(a), rcond=rcond) @ t  # minimum-norm solution
    assert relative(w_svd, expected) < 1e-10


def test_gram_agrees_where_allowed_and_refuses_where_not(rng):
    a, t = rank_deficient(rng)
    rcond = 1e-6
    w_svd, _ = solve("svd", a, t, rcond)
    w_gram, s_gram = solve("gram", a, t, rcond)
    assert spectrum_summary(s_gram, rcond)[1] == 6
    assert relative(w_gram, w_svd) < 1e-6
    with pytest.raises(zorb.ConfigError, match="solver=qr"):
        check_solver_options("gram", rcond=1e-15)
    with pytest.raises(zorb.ConfigError, match="solver=qr"):
        zorb.fit(zorb.build_network([{"type": "dense", "units": 3}], (9,)), a, t, solver="gram", rcond=1e-9)
    assert check_solver_options("gram", rcond=gram_min_rcond("float64"))[0] == gram_min_rcond("float64")


@pytest.mark.parametrize("name", ["svd", "qr", "gram"])
def test_ridge_matches_closed_form_tikhonov(name, rng):
    a, t = rng.normal(size=(80, 10)), rng.normal(size=(80, 2))
    m, ridge = augmented(a), 3.5
    expected = np.linalg.solve(m.T @ m + ridge * np.eye(11), m.T @ t)
    w, _ = solve(name, a, t, 1e-6, ridge=ridge)
    assert relative(w, expected) < 1e-10


@pytest.mark.parametrize("name", ["svd", "qr", "gram"])
@pytest.mark.parametrize("rows,cols", [(50, 7), (6, 20), (9, 9)])
def test_spectrum_has_min_rows_cols_values_and_no_bias_variant(name, rows, cols, rng):
    a, t = rng.normal(size=(rows, cols)), rng.normal(size=(rows, 2))
    w, s = solve(name, a, t, 1e-6, bias=False)
    assert w.shape == (cols, 2)
    assert s.shape == (min(rows, cols),)
    assert np.all(np.diff(s) <= 1e-12 * s[0])
    expected = np.linalg.pinv(a, rcond=1e-6) @ t
    assert relative(w, expected) < (1e-6 if name == "gram" else 1e-10)


def test_underdetermined_bias_solve_is_minimum_norm(rng):
    a, t = rng.normal(size=(5, 12)), rng.normal(size=(5, 2))
    for name in ("svd", "qr"):
        w, s = solve(name, a, t, 1e-12)
        assert s.shape == (5,)
        assert relative(w, np.linalg.pinv(augmented(a)) @ t) < 1e-10


@pytest.mark.parametrize("name", ["svd", "qr", "gram"])
@pytest.mark.parametrize("bias", [True, False])
def test_wide_design_works_on_the_small_side_with_cut_and_ridge(name, bias, rng):
    """Fewer rows than columns (the dual route of qr and gram): the cut and the ridge act as
    on numpy's SVD of [A, 1], and the spectrum has ``rows`` values."""
    rows, cols, rank = 40, 300, 30
    a = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, cols))  # rank-deficient: values to cut
    t = rng.normal(size=(rows, 3))
    m = augmented(a) if bias else a
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    rcond = 1e-6 if name == "gram" else 1e-10
    for ridge in (0.0, 1e-2):
        keep = s > rcond * s[0]
        f = np.where(keep, s / (s * s + ridge), 0.0)
        expected = vt.T @ (f[:, None] * (u.T @ t))
        w, spectrum = solve(name, a, t, rcond, ridge=ridge, bias=bias)
        assert w.shape == (cols + bias, 3) and spectrum.shape == (rows,)
        np.testing.assert_allclose(spectrum[:rank], s[:rank], rtol=1e-9)
        assert relative(w, expected) < 1e-9


def test_pseudoinverse_cut_and_summary(rng):
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s = np.array([10.0, 1.0, 1e-3, 1e-9])
    m = u[:, :4] @ np.diag(s) @ v.T
    p = np.asarray(pseudoinverse(jnp.asarray(m), jnp.asarray(1e-6)))
    np.testing.assert_allclose(p, np.linalg.pinv(m, rcond=1e-6), atol=1e-12)
    cutoff, rank, cond = spectrum_summary(s, 1e-6)
    assert cutoff == pytest.approx(1e-5) and rank == 3
    assert cond == pytest.approx(1e4)


@pytest.mark.parametrize("rows,cols,singular", [
    (300, 120, np.linspace(1.0, 0.2, 120)),            # well conditioned: the Gram route
    (120, 300, np.linspace(1.0, 0.2, 120)),            # wide, well conditioned
    (200, 100, np.logspace(0, -4, 100)),               # cond 1e4: the SVD route
    (200, 100, np.r_[np.ones(90), np.full(10, 1e-12)]),  # values under the cut: the SVD route
])
def test_pseudoinverse_matches_numpy_on_both_routes(rows, cols, singular, rng):
    u, _ = np.linalg.qr(rng.normal(size=(rows, len(singular))))
    v, _ = np.linalg.qr(rng.normal(size=(cols, len(singular))))
    m = u @ np.diag(singular) @ v.T
    p = np.asarray(pseudoinverse(jnp.asarray(m), jnp.asarray(1e-9)))
    expected = np.linalg.pinv(m, rcond=1e-9)
    assert relative(p, expected) < 1e-11
    assert relative(m @ p @ m, m) < 1e-11  # a generalised inverse: composing gives m back


@pytest.mark.parametrize("bad,message", [
    (dict(rcond=-1.0), "rcond must be >= 0"),
    (dict(u_rcond=-1e-3), "u_rcond must be >= 0"),
    (dict(rcond=2.0), "rcond must be < 1"),
    (dict(ridge=-1.0), "ridge must be a number >= 0"),
    (dict(solver="lu"), "unknown solver 'lu'"),
])
def test_bad_solver_options_are_refused(bad, message):
    with pytest.raises(zorb.ConfigError, match=message):
        check_solver_options(**bad)


@pytest.mark.parametrize("solver", ["svd", "qr"])
def test_default_rcond_follows_the_dtype_and_cuts_duplicate_columns(solver):
    """Half the input columns repeated exactly: the design [A, 1] has rank d + 1 of its
    1.5 d + 1 columns. The default cut finds that rank in float64 and float32; float64's
    1e-15 kept in float32 (below its epsilon) keeps directions made of rounding alone."""
    assert zorb.default_rcond("float64") == zorb.DEFAULT_RCOND == 1e-15
    eps32, eps64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    assert zorb.default_rcond("float32") == pytest.approx(1e-15 * eps32 / eps64)
    rng = np.random.default_rng(7)
    base = rng.normal(size=(2000, 30))
    x = np.concatenate([base, base[:, :15]], axis=1)
    y = np.eye(3)[rng.integers(0, 3, 2000)]
    specs = [{"type": "dense", "units": 3}, {"type": "softmax"}]
    for dtype in ("float64", "float32"):
        network = zorb.build_network(specs, (45,), output_dim=3, seed=0, dtype=dtype)
        _, report = zorb.fit(network, x, y, solver=solver)
        assert report.layers[0].rank == np.linalg.matrix_rank(np.c_[x, np.ones(len(x))]) == 31
        assert report.layers[0].u_rcond == zorb.default_rcond(dtype)
    _, report = zorb.fit(network, x, y, solver=solver, rcond=1e-15)  # float32 with float64's cut
    assert report.layers[0].rank > 31



def _failing_svd(m, *args, **kwargs):
    """gesdd as some OpenBLAS kernels return it for an exactly rank-deficient matrix: NaN."""
    rows, cols = m.shape
    k = min(rows, cols)
    return jnp.full((rows, k), jnp.nan, m.dtype), jnp.full((k,), jnp.nan, m.dtype), jnp.full((k, cols), jnp.nan, m.dtype)


@pytest.fixture
def fresh_traces():
    """Forgets the compiled programs (JAX's and zorb.core.timing's) around a test that swaps a
    traced function."""
    from zorb.core import solvers

    solvers._forget_compiled()
    yield
    solvers._forget_compiled()


def test_svd_redoes_a_failed_divide_and_conquer_by_qr_iteration(monkeypatch, fresh_traces, rng):
    from zorb.core import solvers

    # 32 units repeating one +-1 column: with the bias a rank-2 design, what sign activations give
    a = np.tile(np.sign(rng.normal(size=(1000, 1))), (1, 32))
    m = augmented(a)
    monkeypatch.setattr(solvers, "_divide_and_conquer_svd", _failing_svd)
    assert not np.isfinite(solvers.svd(jnp.asarray(m))[1]).any()  # outside robust_svd: gesdd alone
    with solvers.robust_svd():
        u, s, vt = (np.asarray(f) for f in solvers.svd(jnp.asarray(m)))
        np.testing.assert_allclose(s, np.linalg.svd(m, compute_uv=False), rtol=0, atol=1e-12 * np.linalg.norm(m, 2))
        np.testing.assert_allclose(u * s @ vt, m, rtol=0, atol=1e-12)
        # the solve goes through it: numpy's least squares with the same cut
        t = rng.normal(size=(1000, 2))
        w, _ = solve("svd", a, t, 1e-10)
        np.testing.assert_allclose(w, np.linalg.lstsq(m, t, rcond=1e-10)[0], rtol=0, atol=1e-10)


def test_svd_falls_back_to_the_gram_eigenvectors_when_both_lapack_routes_fail(monkeypatch, fresh_traces, rng):
    from zorb.core import solvers

    monkeypatch.setattr(solvers, "_divide_and_conquer_svd", _failing_svd)
    monkeypatch.setattr(solvers, "_qr_iteration_svd", _failing_svd)
    for shape in [(400, 12), (12, 400)]:
        # rank 9: three directions below what the Gram matrix resolves come back as 0
        m = rng.normal(size=(shape[0], 9)) @ rng.normal(size=(9, shape[1]))
        with solvers.robust_svd():
            u, s, vt = (np.asarray(f) for f in solvers.svd(jnp.asarray(m)))
        expected = np.linalg.svd(m, compute_uv=False)
        np.testing.assert_allclose(s[:9], expected[:9], rtol=1e-12)
        np.testing.assert_array_equal(s[9:], 0)
        np.testing.assert_allclose(u * s @ vt, m, rtol=0, atol=1e-10 * expected[0])
        np.testing.assert_allclose(u[:, :9].T @ u[:, :9], np.eye(9), atol=1e-10)
    a, t = rng.normal(size=(300, 12)), rng.normal(size=(300, 3))
    with solvers.robust_svd():
        w, _ = solve("svd", a, t, 1e-10)
    np.testing.assert_allclose(w, np.linalg.lstsq(augmented(a), t, rcond=None)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("solver, chunk_rows", [("svd", None), ("qr", None), ("qr", 70)])
def test_the_fit_redoes_a_failed_svd_and_gets_the_same_weights(monkeypatch, fresh_traces, solver, chunk_rows, rng):
    """gesdd failing everywhere (the solves and the pseudoinverses of the layers above): the
    fit redoes each in robust_svd and ends with the weights of a fit where it did not fail."""
    from zorb.core import solvers

    # well conditioned (full-rank designs, weights of order 1): every route gives the same weights
    net = zorb.build_network([{"type": "dense", "units": 12}, {"type": "tanh"}, {"type": "dense", "units": 8},
                              {"type": "tanh"}, {"type": "dense", "units": 2}], (3,), seed=0)
    x = rng.normal(size=(200, 3))
    y = np.tanh(x @ rng.normal(size=(3, 2)))
    expected, expected_report = zorb.fit(net, x, y, solver=solver, chunk_rows=chunk_rows, rcond=1e-10)
    monkeypatch.setattr(solvers, "_divide_and_conquer_svd", _failing_svd)
    solvers._forget_compiled()
    with pytest.raises(zorb.FitError):  # the failure is real outside robust_svd
        solvers_fit_without_retry(monkeypatch, net, x, y, solver, chunk_rows)
    trained, report = zorb.fit(net, x, y, solver=solver, chunk_rows=chunk_rows, rcond=1e-10)
    assert not solvers._ROBUST_SVD
    for got, want in zip(trained.weights, expected.weights):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert [r.rank for r in report.layers] == [r.rank for r in expected_report.layers] == [4, 13, 9]


def solvers_fit_without_retry(monkeypatch, net, x, y, solver, chunk_rows):
    import contextlib

    from zorb.core import fit

    with monkeypatch.context() as patch:
        patch.setattr(fit, "robust_svd", contextlib.nullcontext)
        zorb.fit(net, x, y, solver=solver, chunk_rows=chunk_rows, rcond=1e-10)


def test_a_failed_svd_stops_the_fit_with_one_sentence(monkeypatch, fresh_traces, rng):
    from zorb.core import solvers

    monkeypatch.setattr(solvers, "_divide_and_conquer_svd", _failing_svd)
    monkeypatch.setattr(solvers, "_qr_iteration_svd", _failing_svd)
    monkeypatch.setattr(solvers, "_gram_svd", _failing_svd)
    net = zorb.build_network([{"type": "dense", "units": 4}, {"type": "tanh"}, {"type": "dense", "units": 1}], (3,), seed=0)
    with pytest.raises(zorb.FitError, match=r"^layer 1: its design matrix has no finite singular values .*solver=gram$"):
        zorb.fit(net, rng.normal(size=(50, 3)), rng.normal(size=(50, 1)), solver="svd")
