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

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
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


// ---- Sigmoid/Tanh relaxed inverse in one pass -------------------------------------------------
//
// out = f^-1(z) - shift, z = a + (t - lo) * ((b - a) / (hi - lo)) (the middle (a + b) / 2 when
// hi == lo), f^-1 = atanh (Tanh) or logit (Sigmoid), exactly the arithmetic of zorb/special.py
// and SquashingLayer.inverse_in_range, operation for operation (compiled without FMA
// contraction). XLA splits that chain into three loops (it will not fuse a division with several
// consumers), each a round trip through memory; here it is one read of t and one write.

namespace {

constexpr double kSeries[10] = {2.0 / 21, 2.0 / 19, 2.0 / 17, 2.0 / 15, 2.0 / 13,
                                2.0 / 11, 2.0 / 9,  2.0 / 7,  2.0 / 5,  2.0 / 3};
double ln2_hi = 0.0, ln2_lo = 0.0;  // set from Python (zorb.special), the same split

__attribute__((always_inline)) inline double from_bits(uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

__attribute__((always_inline)) inline uint64_t to_bits(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

__attribute__((always_inline)) inline double log1p_nonnegative(double u, double ln2h, double ln2l) {
  const double w = 1 + u;
  const double u_part = w - 1;
  const double one_part = w - u_part;
  const double error = (u - u_part) + (1 - one_part);
  const uint64_t bits = to_bits(w);
  double m = from_bits((bits & ((uint64_t{1} << 52) - 1)) | (uint64_t{1023} << 52));  // in [1, 2)
  // The biased exponent (0..2047) as a double without an integer conversion: 2^52 + k - 2^52.
  const double biased = from_bits((bits >> 52) | (uint64_t{0x433} << 52)) - 4503599627370496.0;
  const bool high = m > 1.4142135623730951;
  m *= high ? 0.5 : 1.0;  // exact either way
  const double e = (biased + (high ? 1.0 : 0.0)) - 1023;  // small integers: exact
  const double f = m - 1;
  const double s = f / (2 + f);
  const double z = s * s;
  double series = kSeries[0];
  for (int k = 1; k < 10; ++k) series = series * z + kSeries[k];
  series = series * z;
  const double half_f2 = 0.5 * f * f;
  const double log_w = e * ln2h - ((half_f2 - (s * (half_f2 + series) + (e * ln2l + error / w))) - f);
  // u itself for inf and NaN (u - u is 0 only for finite u)
  return (u - u == 0) ? log_w : u;
}

struct SquashParams {
  const double* t;
  const double* shift;  // k values or nullptr
  double* out;
  int64_t cols;
  double lo, a, scale, middle;
  bool constant, tanh;
};

template <bool Tanh, bool Constant, bool Shift>
__attribute__((always_inline)) inline void squash_row(const double* __restrict t, const double* __restrict shift, double* __restrict out,
                       int64_t cols, double lo, double a, double scale, double middle, double ln2h, double ln2l) {
  for (int64_t c = 0; c < cols; ++c) {
    const double z = Constant ? middle : a + (t[c] - lo) * scale;
    double value;
    if (Tanh) {
      const double abs_z = std::fabs(z);
      value = std::copysign(0.5 * log1p_nonnegative(2 * abs_z / (1 - abs_z), ln2h, ln2l), z);
    } else {
      const double d = 2 * z - 1;
      const double smaller = z < 1 - z ? z : 1 - z;
      value = std::copysign(log1p_nonnegative(std::fabs(d) / smaller, ln2h, ln2l), d);
    }
    out[c] = Shift ? value - shift[c] : value;
  }
}

template <bool Tanh, bool Constant, bool Shift>
__attribute__((always_inline)) inline void squash_block(const SquashParams& p, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r)
    squash_row<Tanh, Constant, Shift>(p.t + r * p.cols, p.shift, p.out + r * p.cols, p.cols, p.lo, p.a, p.scale,
                                      p.middle, ln2_hi, ln2_lo);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void squash_rows(const SquashParams& p, int64_t row_begin, int64_t row_end) {
  const bool shift = p.shift != nullptr;
  if (p.tanh) {
    if (p.constant) shift ? squash_block<true, true, true>(p, row_begin, row_end)
                          : squash_block<true, true, false>(p, row_begin, row_end);
    else shift ? squash_block<true, false, true>(p, row_begin, row_end)
               : squash_block<true, false, false>(p, row_begin, row_end);
  } else {
    if (p.constant) shift ? squash_block<false, true, true>(p, row_begin, row_end)
                          : squash_block<false, true, false>(p, row_begin, row_end);
    else shift ? squash_block<false, false, true>(p, row_begin, row_end)
               : squash_block<false, false, false>(p, row_begin, row_end);
  }
}

int worker_count(int64_t elements) {
  cpu_set_t set;
  int cores = 1;
  if (sched_getaffinity(0, sizeof set, &set) == 0) cores = CPU_COUNT(&set);
  const int64_t by_size = elements / (1 << 17);  // at least 128k entries per thread
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({cores, by_size, 16})));
}

// t (N x k), range = [lo, hi], shift (k; ignored unless has_shift); attrs: the margins a < b of
// the function's range and which function.
ffi::Error SquashInverseImpl(ffi::Buffer<ffi::F64> t, ffi::Buffer<ffi::F64> range, ffi::Buffer<ffi::F64> shift,
                             ffi::ResultBuffer<ffi::F64> out, double a, double b, bool tanh, bool has_shift) {
  auto td = t.dimensions();
  if (td.size() != 2) return ffi::Error::InvalidArgument("zorb squash inverse: needs a 2-D target");
  if (range.element_count() != 2) return ffi::Error::InvalidArgument("zorb squash inverse: range needs 2 values");
  if (has_shift && static_cast<int64_t>(shift.element_count()) != td[1])
    return ffi::Error::InvalidArgument("zorb squash inverse: shift needs one value per column");
  const double lo = range.typed_data()[0], hi = range.typed_data()[1];
  SquashParams p;
  p.t = t.typed_data();
  p.shift = has_shift ? shift.typed_data() : nullptr;
  p.out = out->typed_data();
  p.cols = td[1];
  const double span = hi - lo;
  p.lo = lo;
  p.a = a;
  p.scale = (b - a) / (span > 0 ? span : 1);
  p.middle = (a + b) / 2;
  p.constant = !(span > 0);
  p.tanh = tanh;
  const int64_t rows = td[0];
  if (rows == 0 || p.cols == 0) return ffi::Error::Success();
  const int workers = static_cast<int>(std::min<int64_t>(worker_count(rows * p.cols), rows));
  if (workers <= 1) {
    squash_rows(p, 0, rows);
    return ffi::Error::Success();
  }
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int w = 1; w < workers; ++w)
    threads.emplace_back(squash_rows, std::cref(p), rows * w / workers, rows * (w + 1) / workers);
  squash_rows(p, 0, rows / workers);
  for (auto& thread : threads) thread.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbSquashInverse, SquashInverseImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<double>("a")
                                  .Attr<double>("b")
                                  .Attr<bool>("tanh")
                                  .Attr<bool>("has_shift"));

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

PyObject* set_ln2(PyObject*, PyObject* args) {
  if (!PyArg_ParseTuple(args, "dd", &ln2_hi, &ln2_lo)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* handlers(PyObject*, PyObject*) {
  return Py_BuildValue("{s:N,s:N,s:N,s:N}", "zorb_squash_inverse_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbSquashInverse), nullptr, nullptr), "zorb_matmul_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbMatmul), nullptr, nullptr), "zorb_gram_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbGram), nullptr, nullptr), "zorb_eigvalsh_f64",
                       PyCapsule_New(reinterpret_cast<void*>(ZorbEigvalsh), nullptr, nullptr));
}

PyMethodDef methods[] = {
    {"set_blas", set_blas, METH_VARARGS,
     "set_blas(dgemm, dsyrk, dsyevd): the Fortran BLAS/LAPACK functions (scipy.linalg.cython_blas / "
     "cython_lapack capsules) to call."},
    {"set_ln2", set_ln2, METH_VARARGS, "set_ln2(hi, lo): log 2 split as zorb.special splits it."},
    {"handlers", handlers, METH_NOARGS, "handlers() -> {target name: PyCapsule of its XLA FFI handler}."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_blas", "XLA FFI handlers for BLAS dgemm/dsyrk and LAPACK dsyevd.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__blas(void) { return PyModule_Create(&module); }
