"""The worker pool the native kernels share (pool.cc): OpenBLAS's parallel jobs run on it with the same
results, ZORB_BLAS_POOL=0 leaves OpenBLAS its own threads, and a forked child starts a fresh pool."""

import os

from kernel_fixtures import run_python


POOL_CHECK = """
import os, threading
import numpy as np, jax, jax.numpy as jnp, zorb.core
from zorb.kernels import native, _native
import scipy.linalg.blas as sb
rng = np.random.default_rng(0)
a, b = rng.random((700, 600)), rng.random((600, 500))
def worst(got, want):
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())
errors = [worst(sb.dgemm(1.0, a, b), a @ b)]
s = a.T @ a + np.eye(600)
w, v = jnp.linalg.eigh(jnp.asarray(s))  # jaxlib's LAPACK kernels call the same OpenBLAS
errors.append(float(jnp.abs(jnp.asarray(s) @ v - v * w).max()) / np.abs(s).max())
errors.append(worst(jnp.linalg.cholesky(jnp.asarray(s)) @ jnp.linalg.cholesky(jnp.asarray(s)).T, s))
results = [None] * 4
def product(i):
    results[i] = worst(sb.dgemm(1.0, a * (i + 1), b), (i + 1) * (a @ b))
threads = [threading.Thread(target=product, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
errors += results
print(native.SHARED_POOL, _native.pool_workers(), max(errors))
"""


def test_openblas_runs_its_jobs_on_zorbs_pool_with_the_same_results():
    """OpenBLAS's parallel jobs (dgemm, and jaxlib's LAPACK calls into the same library) go to
    zorb's pool, also from four threads at once; the results equal numpy's own OpenBLAS."""
    shared, workers, error = run_python(POOL_CHECK)
    assert shared == "True"
    assert int(workers) >= (1 if len(os.sched_getaffinity(0)) > 1 else 0)
    assert float(error) < 1e-12


def test_zorb_blas_pool_0_leaves_openblas_its_own_threads():
    shared, workers, error = run_python(POOL_CHECK, ZORB_BLAS_POOL="0")
    assert (shared, workers) == ("False", "0")
    assert float(error) < 1e-12


def test_a_forked_child_gets_a_fresh_pool_and_its_blas_works():
    """After fork() only the forking thread exists: the child must not wait for the parent's
    workers. The child's threaded dgemm finishes (the timeout would fail it) and is right."""
    code = """
import os, numpy as np
from zorb.kernels import native, _native
import scipy.linalg.blas as sb
rng = np.random.default_rng(0)
a, b = rng.random((700, 600)), rng.random((600, 500))
sb.dgemm(1.0, a, b)
parent_workers = _native.pool_workers()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    before = _native.pool_workers()
    error = float(np.abs(sb.dgemm(1.0, a, b) - a @ b).max())
    os.write(write, f"{before} {error}".encode())
    os._exit(0)
os.waitpid(pid, 0)
print(parent_workers, os.read(read, 100).decode())
"""
    parent_workers, child_before, error = run_python(code, timeout=60)
    assert child_before == "0"
    assert int(parent_workers) >= (1 if len(os.sched_getaffinity(0)) > 1 else 0)
    assert float(error) < 1e-9
