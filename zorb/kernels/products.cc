// The fit's large float64 products through the BLAS that jaxlib's own CPU LAPACK kernels use
// (SciPy's OpenBLAS, reached through scipy.linalg.cython_blas): op(A) @ op(B) by dgemm and the
// Gram matrix by dsyrk. Python side: products.py.
//
// Why: on the project's CPU machines XLA's float64 dot runs at 55-66 GFLOP/s on the fit's
// shapes where OpenBLAS's dgemm runs at 75-88, and XLA forms A^T A as a full product where
// dsyrk computes one triangle.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace zorb {

// How many one-thread dgemm calls a row-major m x n product over k is split into, each on its
// own columns of the output (1: OpenBLAS's own threaded call). For a product with few output rows
// and many columns (a dense layer's forward and backward on samples-last arrays: m = 100-1,000
// units, n = N), OpenBLAS's threads share one packed panel of the small operand and wait for
// each other at every block; independent halves ran 2-15% faster on a 2-core AVX2 machine
// (10,000 samples, docs/performance.md). The same conditions as the Gram split; ZORB_SPLIT_GEMM=0
// turns it off.
int split_gemm_parts(int64_t n, int64_t m, int64_t k) {
  static const bool enabled = [] {
    const char* value = std::getenv("ZORB_SPLIT_GEMM");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  if (!enabled || installed_in == nullptr || set_thread_count == nullptr || n < 4096 || m < 128 || m > 2048 ||
      k < 64)
    return 1;
  const int threads = get_thread_count();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({threads, affinity_cores(), n / 2048, 8})));
}

namespace {

// C (m x n) = op(A) @ op(B), op = transpose when asked.
ffi::Error MatmulImpl(ffi::Buffer<ffi::F64> a, ffi::Buffer<ffi::F64> b, ffi::ResultBuffer<ffi::F64> c,
                      bool transpose_a, bool transpose_b) {
  if (dgemm == nullptr) return ffi::Error::Internal("zorb blas: dgemm was not set (zorb.kernels.native not loaded)");
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
  const double* b_data = b.typed_data();
  std::unique_lock<std::mutex> split_lock(split_mutex(), std::defer_lock);
  const int parts = lock_split(split_lock, [&] { return split_gemm_parts(n, m, k); });
  if (parts > 1) {
    struct Context {
      char trans_b, trans_a;
      int rows, cols, inner, ld_b, ld_a, ld_c, parts;
      const double *a, *b;
      double* c;
    } context{trans_b, trans_a, rows, cols, inner, ld_b, ld_a, ld_c, parts, a.typed_data(), b_data, out};
    run_one_thread_parts(parts, [](void* raw, int index) {
      auto* c = static_cast<Context*>(raw);
      // column-major rows [begin, end) of C^T: rows of op(B)^T, i.e. entries of B's columns
      // ('N', contiguous) or whole columns ('T', ld_b apart)
      const int64_t begin = static_cast<int64_t>(c->rows) * index / c->parts / 8 * 8;
      const int64_t end = index + 1 == c->parts ? c->rows : static_cast<int64_t>(c->rows) * (index + 1) / c->parts / 8 * 8;
      int rows = static_cast<int>(end - begin), cols = c->cols, inner = c->inner, ld_b = c->ld_b, ld_a = c->ld_a,
          ld_c = c->ld_c;
      char tb = c->trans_b, ta = c->trans_a;
      double one = 1.0, zero = 0.0;
      const double* b = c->b + (tb == 'N' ? begin : begin * ld_b);
      dgemm(&tb, &ta, &rows, &cols, &inner, &one, b, &ld_b, c->a, &ld_a, &zero, c->c + begin, &ld_c);
    }, &context);
    return ffi::Error::Success();
  }
  dgemm(&trans_b, &trans_a, &rows, &cols, &inner, &one, b_data, &ld_b, a.typed_data(), &ld_a, &zero, out, &ld_c);
  return ffi::Error::Success();
}
}  // namespace

// How many one-thread dsyrk calls the Gram matrix of an n x n result over an inner dimension k
// is split into (1: OpenBLAS's own threaded call). Only with zorb's pool running OpenBLAS's jobs
// (so nothing else spins), OpenBLAS set to several threads, and enough rows per part that the
// parts' sum (n^2 per part) is small beside the product; ZORB_SPLIT_GRAM=0 turns it off.
int split_gram_parts(int64_t n, int64_t k) {
  static const bool enabled = [] {
    const char* value = std::getenv("ZORB_SPLIT_GRAM");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  if (!enabled || installed_in == nullptr || set_thread_count == nullptr || n < 128 || k < 2048) return 1;
  const int threads = get_thread_count();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({threads, affinity_cores(), k / 1024, 8})));
}

namespace {

// G = A^T A (d x d for A r x d) or, with `rows`, A A^T (r x r): one triangle by dsyrk, then
// mirrored.
ffi::Error GramImpl(ffi::Buffer<ffi::F64> a, ffi::ResultBuffer<ffi::F64> g, bool rows) {
  if (dsyrk == nullptr) return ffi::Error::Internal("zorb blas: dsyrk was not set (zorb.kernels.native not loaded)");
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
  std::unique_lock<std::mutex> split_lock(split_mutex(), std::defer_lock);
  const int parts = lock_split(split_lock, [&] { return split_gram_parts(n, k); });
  if (parts > 1) {
    // Each worker a one-thread dsyrk on its share of the inner dimension, the parts summed:
    // OpenBLAS's threaded dsyrk synchronises its threads at every block of the inner
    // dimension (10,000 x 1,001: 123 GFLOP/s threaded, 143 as two one-thread halves).
    struct Part {
      const double* a;
      double* g;
      int inner;
    };
    // dsyrk with beta = 0 writes every entry it is asked for: no zero-filled buffer needed
    std::unique_ptr<double[]> extra(new double[static_cast<size_t>(parts - 1) * n * n]);
    std::vector<Part> work(parts);
    for (int p = 0; p < parts; ++p) {
      const int64_t begin = k * p / parts, end = k * (p + 1) / parts;
      // 'T': the inner dimension runs along the rows of the column-major view (contiguous);
      // 'N': along its columns (ld_a apart).
      work[p] = {a.typed_data() + (rows ? begin : begin * ld_a), p == 0 ? out : extra.get() + (p - 1) * n * n,
                 static_cast<int>(end - begin)};
    }
    struct Context {
      std::vector<Part>* work;
      char uplo, trans;
      int size, ld_a;
    } context{&work, uplo, trans, size, ld_a};
    run_one_thread_parts(parts, [](void* raw, int index) {
      auto* c = static_cast<Context*>(raw);
      Part& part = (*c->work)[index];
      double one = 1.0, zero = 0.0;
      int size = c->size, inner = part.inner, ld_a = c->ld_a, ld_g = c->size;
      dsyrk(&c->uplo, &c->trans, &size, &inner, &one, part.a, &ld_a, &zero, part.g, &ld_g);
    }, &context);
    for (int p = 1; p < parts; ++p) {
      const double* add = extra.get() + (p - 1) * n * n;
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i <= j; ++i) out[i + j * n] += add[i + j * n];
    }
  } else {
    dsyrk(&uplo, &trans, &size, &inner, &one, a.typed_data(), &ld_a, &zero, out, &ld_g);
  }
  // The upper triangle (column-major) is out[i + j n] for i <= j; copy it to out[j + i n].
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < j; ++i) out[j + i * n] = out[i + j * n];
  return ffi::Error::Success();
}

}  // namespace

}  // namespace zorb

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbMatmul, zorb::MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbGram, zorb::GramImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>().Attr<bool>(
                                  "rows"));
