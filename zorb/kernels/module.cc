// The Python module zorb.kernels._native, built from the kernel families' files (setup.py):
// sets the BLAS/LAPACK functions and constants the kernels call, hands OpenBLAS's jobs to the
// worker pool, and lists the XLA FFI handlers for zorb/kernels/native.py to register.

#include <Python.h>

#include <chrono>
#include <cstdint>

#include "kernels.h"
#include "pool.h"

namespace zorb {
namespace {

void* capsule_pointer(PyObject* capsule) {
  if (!PyCapsule_CheckExact(capsule)) {
    PyErr_SetString(PyExc_TypeError, "expected a PyCapsule holding a BLAS function");
    return nullptr;
  }
  return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
}

template <typename F>
bool take(PyObject* functions, const char* name, F*& target) {
  PyObject* capsule = PyDict_GetItemString(functions, name);  // borrowed
  if (capsule == nullptr) {
    PyErr_Format(PyExc_KeyError, "set_blas: no %s given", name);
    return false;
  }
  void* pointer = capsule_pointer(capsule);
  if (pointer == nullptr) return false;
  target = reinterpret_cast<F*>(pointer);
  return true;
}

PyObject* set_blas(PyObject*, PyObject* args) {
  PyObject* functions;
  if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &functions)) return nullptr;
  if (!(take(functions, "dgemm", dgemm) && take(functions, "dsyrk", dsyrk) && take(functions, "dtrsm", dtrsm) &&
        take(functions, "dsyevd", dsyevd) && take(functions, "dsytrd", dsytrd) && take(functions, "dsterf", dsterf) &&
        take(functions, "dstemr", dstemr) && take(functions, "dstedc", dstedc) && take(functions, "dormtr", dormtr) &&
        take(functions, "dpotrf", dpotrf)))
    return nullptr;
  Py_RETURN_NONE;
}

// Hands OpenBLAS's parallel jobs to the pool (share_openblas_threads, pool.h).
PyObject* share_threads(PyObject*, PyObject*) {
  if (share_openblas_threads()) Py_RETURN_TRUE;
  Py_RETURN_FALSE;
}

PyObject* set_pool_spin(PyObject*, PyObject* args) {
  double microseconds;
  if (!PyArg_ParseTuple(args, "d", &microseconds)) return nullptr;
  if (!(microseconds >= 0)) {
    PyErr_SetString(PyExc_ValueError, "the spin time must be >= 0 microseconds");
    return nullptr;
  }
  pool().set_spin(std::chrono::nanoseconds(static_cast<int64_t>(microseconds * 1000)));
  Py_RETURN_NONE;
}

PyObject* pool_workers(PyObject*, PyObject*) { return PyLong_FromLong(pool().workers()); }

PyObject* lanes(PyObject*, PyObject*) { return PyLong_FromLong(vector_lanes()); }

PyObject* gram_parts(PyObject*, PyObject* args) {
  long long n, k;
  if (!PyArg_ParseTuple(args, "LL", &n, &k)) return nullptr;
  return PyLong_FromLong(split_gram_parts(n, k));
}

PyObject* gemm_parts(PyObject*, PyObject* args) {
  long long m, n, k;
  if (!PyArg_ParseTuple(args, "LLL", &m, &n, &k)) return nullptr;
  return PyLong_FromLong(split_gemm_parts(n, m, k));
}

PyObject* set_log_constants(PyObject*, PyObject* args) {
  LogConstants c;
  if (!PyArg_ParseTuple(args, "dd(ddddddd)", &c.ln2_hi, &c.ln2_lo, &c.series[0], &c.series[1], &c.series[2],
                        &c.series[3], &c.series[4], &c.series[5], &c.series[6]))
    return nullptr;
  log_constants = c;
  Py_RETURN_NONE;
}

PyObject* handlers(PyObject*, PyObject*) {
  return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N}", "zorb_extrema_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbExtrema), nullptr, nullptr), "zorb_conv_moments_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbConvMoments), nullptr, nullptr), "zorb_conv2d_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbConv2d), nullptr, nullptr), "zorb_gram_solve_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbGramSolve), nullptr, nullptr), "zorb_squash_inverse_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbSquashInverse), nullptr, nullptr), "zorb_matmul_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbMatmul), nullptr, nullptr), "zorb_gram_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbGram), nullptr, nullptr), "zorb_eigvalsh_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbEigvalsh), nullptr, nullptr));
}

PyMethodDef methods[] = {
    {"set_blas", set_blas, METH_VARARGS,
     "set_blas({name: capsule}): the Fortran BLAS/LAPACK functions to call (scipy.linalg.cython_blas / "
     "cython_lapack capsules of dgemm, dsyrk, dtrsm, dsyevd, dsytrd, dsterf, dstemr, dstedc, dormtr, dpotrf)."},
    {"set_log_constants", set_log_constants, METH_VARARGS,
     "set_log_constants(ln2_hi, ln2_lo, series): log 2 in two parts and the 7 series coefficients of zorb.kernels.special."},
    {"share_threads", share_threads, METH_NOARGS,
     "share_threads() -> bool: run the parallel jobs of the OpenBLAS that holds dgemm on zorb's worker pool."},
    {"set_pool_spin", set_pool_spin, METH_VARARGS,
     "set_pool_spin(microseconds): how long an idle worker spins before it blocks."},
    {"pool_workers", pool_workers, METH_NOARGS, "pool_workers() -> int: worker threads started so far."},
    {"vector_lanes", lanes, METH_NOARGS,
     "vector_lanes() -> int: doubles per vector in the conv kernels (8 AVX-512, 4 AVX2, 2 baseline)."},
    {"gram_parts", gram_parts, METH_VARARGS,
     "gram_parts(n, k) -> int: the one-thread dsyrk calls an n x n Gram matrix over k rows is split into now."},
    {"gemm_parts", gemm_parts, METH_VARARGS,
     "gemm_parts(m, n, k) -> int: the one-thread dgemm calls an m x n product over k is split into now (along n)."},
    {"handlers", handlers, METH_NOARGS, "handlers() -> {target name: PyCapsule of its XLA FFI handler}."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                      "zorb's native kernels: XLA FFI handlers and the settings of their worker pool.", -1, methods};

}  // namespace
}  // namespace zorb

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&zorb::module); }
