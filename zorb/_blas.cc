// XLA FFI handlers that run zorb's large float64 products through the BLAS that jaxlib's own
// CPU LAPACK kernels use (SciPy's OpenBLAS, reached through scipy.linalg.cython_blas).
//
// Why: on the project's CPU machines XLA's float64 dot runs at 55-66 GFLOP/s on the fit's
// shapes where OpenBLAS's dgemm runs at 75-88, and XLA forms A^T A as a full product where
// dsyrk computes one triangle. zorb/blas.py calls these only on CPU, for float64 matrices.
//
// Arrays arrive row-major. A row-major r x c matrix is the column-major c x r matrix of its
// transpose, so every call below is the Fortran call for the transposed problem.

#include <Python.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Dgemm = void(char*, char*, int*, int*, int*, double*, const double*, int*, const double*, int*,
                   double*, double*, int*);
using Dsyrk = void(char*, char*, int*, int*, double*, const double*, int*, double*, double*, int*);

using Dsyevd = void(char*, char*, int*, double*, int*, double*, double*, int*, int*, int*, int*);

Dgemm* dgemm = nullptr;
Dsyrk* dsyrk = nullptr;
Dsyevd* dsyevd = nullptr;

bool fits_int(int64_t value) { return value >= 0 && value <= std::numeric_limits<int>::max(); }

// C (m x n) = op(A) @ op(B), op = transpose when asked.
ffi::Error MatmulImpl(ffi::Buffer<ffi::F64> a, ffi::Buffer<ffi::F64> b, ffi::ResultBuffer<ffi::F64> c,
                      bool transpose_a, bool transpose_b) {
  if (dgemm == nullptr) return ffi::Error::Internal("zorb blas: dgemm was not set (zorb.blas not initialised)");
  auto ad = a.dimensions();
  auto bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2) return ffi::Error::InvalidArgument("zorb blas: matmul needs 2-D arrays");
  const int64_t m = transpose_a ? ad[1] : ad[0], k = transpose_a ? ad[0] : ad[1];
  const int64_t kb = transpose_b ? bd[1] : bd[0], n = transpose_b ? bd[0] : bd[1];
  if (k != kb) return ffi::Error::InvalidArgument("zorb blas: matmul contraction sizes differ");
  double* out = c->typed_data();
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::memset(out, 0, sizeof(double) * m * n);
    return ffi::Error::Success();
  }
  if (!fits_int(m) || !fits_int(n) || !fits_int(k) || !fits_int(ad[1]) || !fits_int(bd[1]))
    return ffi::Error::InvalidArgument("zorb blas: a dimension exceeds the BLAS integer range");
  // Row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T.
  char trans_b = transpose_b ? 'T' : 'N', trans_a = transpose_a ? 'T' : 'N';
  int rows = static_cast<int>(n), cols = static_cast<int>(m), inner = static_cast<int>(k);
  int ld_b = static_cast<int>(bd[1]), ld_a = static_cast<int>(ad[1]), ld_c = static_cast<int>(n);
  double one = 1.0, zero = 0.0;
  dgemm(&trans_b, &trans_a, &rows, &cols, &inner, &one, b.typed_data(), &ld_b, a.typed_data(), &ld_a, &zero, out,
        &ld_c);
  return ffi::Error::Success();
}

// G = A^T A (d x d for A r x d) or, with `rows`, A A^T (r x r): one triangle by dsyrk, then
// mirrored.
ffi::Error GramImpl(ffi::Buffer<ffi::F64> a, ffi::ResultBuffer<ffi::F64> g, bool rows) {
  if (dsyrk == nullptr) return ffi::Error::Internal("zorb blas: dsyrk was not set (zorb.blas not initialised)");
  auto ad = a.dimensions();
  if (ad.size() != 2) return ffi::Error::InvalidArgument("zorb blas: gram needs a 2-D array");
  const int64_t n = rows ? ad[0] : ad[1], k = rows ? ad[1] : ad[0];
  double* out = g->typed_data();
  if (n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::memset(out, 0, sizeof(double) * n * n);
    return ffi::Error::Success();
  }
  if (!fits_int(n) || !fits_int(k) || !fits_int(ad[1]))
    return ffi::Error::InvalidArgument("zorb blas: a dimension exceeds the BLAS integer range");
  // Column-major view of row-major A is A^T (d x r): A^T A = V V^T ('N'), A A^T = V^T V ('T').
  char uplo = 'U', trans = rows ? 'T' : 'N';
  int size = static_cast<int>(n), inner = static_cast<int>(k), ld_a = static_cast<int>(ad[1]), ld_g = size;
  double one = 1.0, zero = 0.0;
  dsyrk(&uplo, &trans, &size, &inner, &one, a.typed_data(), &ld_a, &zero, out, &ld_g);
  // The upper triangle (column-major) is out[i + j n] for i <= j; copy it to out[j + i n].
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < j; ++i) out[j + i * n] = out[i + j * n];
  return ffi::Error::Success();
}

// The eigenvalues (ascending) of a symmetric n x n matrix, without its eigenvectors: LAPACK
// dsyevd with jobz = 'N' (a tridiagonal reduction, about half the time of the eigenvectors;
// jax's eigvalsh computes them and drops them). NaN where LAPACK fails.
ffi::Error EigvalshImpl(ffi::Buffer<ffi::F64> a, ffi::ResultBuffer<ffi::F64> w) {
  if (dsyevd == nullptr) return ffi::Error::Internal("zorb blas: dsyevd was not set (zorb.blas not initialised)");
  auto ad = a.dimensions();
  if (ad.size() != 2 || ad[0] != ad[1]) return ffi::Error::InvalidArgument("zorb blas: eigvalsh needs a square matrix");
  const int64_t n = ad[0];
  double* out = w->typed_data();
  if (n == 0) return ffi::Error::Success();
  if (!fits_int(n) || !fits_int(n * n)) return ffi::Error::InvalidArgument("zorb blas: matrix too large for LAPACK");
  std::vector<double> copy(a.typed_data(), a.typed_data() + n * n);  // dsyevd overwrites its input
  char jobz = 'N', uplo = 'U';  // column-major upper = the row-major lower triangle
  int size = static_cast<int>(n), lda = size, info = 0, lwork = -1, liwork = -1, iwork_query = 0;
  double work_query = 0.0;
  dsyevd(&jobz, &uplo, &size, copy.data(), &lda, out, &work_query, &lwork, &iwork_query, &liwork, &info);
  if (info == 0) {
    lwork = static_cast<int>(work_query) + 1;
    liwork = iwork_query > 1 ? iwork_query : 1;
    std::vector<double> work(lwork);
    std::vector<int> iwork(liwork);
    dsyevd(&jobz, &uplo, &size, copy.data(), &lda, out, work.data(), &lwork, iwork.data(), &liwork, &info);
  }
  if (info != 0)
    for (int64_t i = 0; i < n; ++i) out[i] = std::numeric_limits<double>::quiet_NaN();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbEigvalsh, EigvalshImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbMatmul, MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbGram, GramImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>().Attr<bool>(
                                  "rows"));

namespace {

void* capsule_pointer(PyObject* capsule) {
  if (!PyCapsule_CheckExact(capsule)) {
    PyErr_SetString(PyExc_TypeError, "expected a PyCapsule holding a BLAS function");
    return nullptr;
  }
  return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
}

PyObject* set_blas(PyObject*, PyObject* args) {
  PyObject *gemm_capsule, *syrk_capsule, *syevd_capsule;
  if (!PyArg_ParseTuple(args, "OOO", &gemm_capsule, &syrk_capsule, &syevd_capsule)) return nullptr;
  void* gemm = capsule_pointer(gemm_capsule);
  if (gemm == nullptr) return nullptr;
  void* syrk = capsule_pointer(syrk_capsule);
  if (syrk == nullptr) return nullptr;
  void* syevd = capsule_pointer(syevd_capsule);
  if (syevd == nullptr) return nullptr;
  dgemm = reinterpret_cast<Dgemm*>(gemm);
  dsyrk = reinterpret_cast<Dsyrk*>(syrk);
  dsyevd = reinterpret_cast<Dsyevd*>(syevd);
  Py_RETURN_NONE;
}

PyObject* handlers(PyObject*, PyObject*) {
  return Py_BuildValue("{s:N,s:N,s:N}", "zorb_matmul_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbMatmul), nullptr, nullptr), "zorb_gram_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbGram), nullptr, nullptr), "zorb_eigvalsh_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbEigvalsh), nullptr, nullptr));
}

PyMethodDef methods[] = {
    {"set_blas", set_blas, METH_VARARGS,
     "set_blas(dgemm, dsyrk, dsyevd): the Fortran BLAS/LAPACK functions (scipy.linalg.cython_blas / "
     "cython_lapack capsules) to call."},
    {"handlers", handlers, METH_NOARGS, "handlers() -> {target name: PyCapsule of its XLA FFI handler}."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_blas", "XLA FFI handlers for BLAS dgemm/dsyrk and LAPACK dsyevd.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__blas(void) { return PyModule_Create(&module); }
