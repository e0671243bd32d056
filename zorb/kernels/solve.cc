// The eigenvalues of a symmetric matrix and the normal equations with the eigenvalue cut,
// through LAPACK (SciPy's, reached through scipy.linalg.cython_lapack). Python side: solve.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace zorb {
namespace {

// The eigenvalues (ascending) of a symmetric n x n matrix, without its eigenvectors: LAPACK
// dsyevd with jobz = 'N' (a tridiagonal reduction, about half the time of the eigenvectors;
// jax's eigvalsh computes them and drops them). NaN where LAPACK fails.
ffi::Error EigvalshImpl(ffi::Buffer<ffi::F64> a, ffi::ResultBuffer<ffi::F64> w) {
  if (dsyevd == nullptr) return ffi::Error::Internal("zorb blas: dsyevd was not set (zorb.kernels.native not loaded)");
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


// ---- The normal equations with the eigenvalue cut, in one call ---------------------------------
//
// W (n x k) from G = M^T M (n x n) and B = M^T T (n x k): the eigenvalues of G (one tridiagonal
// reduction, dsytrd, then dsterf) are the squared singular values of M and decide the cut
// s > rcond * s_max. Nothing cut: (G + ridge I) W = B by Cholesky. Otherwise the eigenvectors
// of the kept eigenvalues only, from the same tridiagonal matrix (dstemr; dstedc if it fails),
// back-transformed by dormtr: W = V_r diag(1 / (lambda + ridge)) V_r^T B. Running jnp's eigh
// after the eigenvalues reduced G twice and computed every eigenvector.
//
// Row-major B and W are the column-major k x n matrices B^T and W^T, so the Cholesky branch
// solves W^T (G + ridge I) = B^T from the right and the eigen branch forms
// W^T = (B^T V_r) f V_r^T. spectrum: the n singular values, descending. NaN everywhere when the
// input is not finite or LAPACK fails.

template <typename T>
std::vector<T> workspace_from(double query) {
  return std::vector<T>(static_cast<size_t>(std::max(1.0, query)) + 1);
}

ffi::Error GramSolveImpl(ffi::Buffer<ffi::F64> gram, ffi::Buffer<ffi::F64> moment, ffi::Buffer<ffi::F64> rcond_buffer,
                         ffi::Buffer<ffi::F64> ridge_buffer, ffi::ResultBuffer<ffi::F64> w_out,
                         ffi::ResultBuffer<ffi::F64> spectrum_out) {
  if (dsytrd == nullptr) return ffi::Error::Internal("zorb blas: LAPACK was not set (zorb.kernels.native not loaded)");
  auto gd = gram.dimensions();
  auto md = moment.dimensions();
  if (gd.size() != 2 || gd[0] != gd[1] || md.size() != 2 || md[0] != gd[0])
    return ffi::Error::InvalidArgument("zorb gram solve: needs an n x n Gram matrix and an n x k moment");
  const int64_t n = gd[0], k = md[1];
  double* w = w_out->typed_data();
  double* spectrum = spectrum_out->typed_data();
  if (n == 0) return ffi::Error::Success();
  if (!fits_int(n * n) || !fits_int(n * k)) return ffi::Error::InvalidArgument("zorb gram solve: too large for LAPACK");
  const double* g = gram.typed_data();
  const double* b = moment.typed_data();
  auto fail = [&] {
    std::fill(w, w + n * k, std::numeric_limits<double>::quiet_NaN());
    std::fill(spectrum, spectrum + n, std::numeric_limits<double>::quiet_NaN());
    return ffi::Error::Success();
  };
  if (!std::all_of(g, g + n * n, [](double v) { return std::isfinite(v); }) ||
      !std::all_of(b, b + n * k, [](double v) { return std::isfinite(v); }))
    return fail();
  const double rcond = rcond_buffer.typed_data()[0], ridge = ridge_buffer.typed_data()[0];
  int size = static_cast<int>(n), cols = static_cast<int>(k), info = 0, query_size = -1;
  char lower = 'L';
  double query = 0.0;

  // Tridiagonal reduction: reflectors in `reduced`, diagonal, off-diagonal.
  std::vector<double> reduced(g, g + n * n), diagonal(n), off(n), tau(n);
  dsytrd(&lower, &size, reduced.data(), &size, diagonal.data(), off.data(), tau.data(), &query, &query_size, &info);
  {
    auto work = workspace_from<double>(query);
    int work_size = static_cast<int>(work.size());
    dsytrd(&lower, &size, reduced.data(), &size, diagonal.data(), off.data(), tau.data(), work.data(), &work_size,
           &info);
  }
  if (info != 0) return fail();
  std::vector<double> eigenvalues(diagonal), scratch(off);
  dsterf(&size, eigenvalues.data(), scratch.data(), &info);  // ascending
  if (info != 0) return fail();
  for (int64_t i = 0; i < n; ++i) spectrum[i] = std::sqrt(std::max(eigenvalues[n - 1 - i], 0.0));
  int64_t kept = 0;
  while (kept < n && spectrum[kept] > rcond * spectrum[0]) ++kept;

  if (kept == n) {
    std::vector<double> factor(g, g + n * n);
    for (int64_t i = 0; i < n; ++i) factor[i * (n + 1)] += ridge;
    dpotrf(&lower, &size, factor.data(), &size, &info);
    if (info == 0) {
      if (k == 0) return ffi::Error::Success();
      std::copy(b, b + n * k, w);
      char right = 'R', trans = 'T', no_trans = 'N', non_unit = 'N';
      double one = 1.0;
      dtrsm(&right, &lower, &trans, &non_unit, &cols, &size, &one, factor.data(), &size, w, &cols);
      dtrsm(&right, &lower, &no_trans, &non_unit, &cols, &size, &one, factor.data(), &size, w, &cols);
      return ffi::Error::Success();
    }
    // G + ridge I was not numerically positive definite: the eigenvectors decide instead.
  }
  if (kept == 0 || k == 0) {
    std::fill(w, w + n * k, 0.0);
    return ffi::Error::Success();
  }

  // The kept eigenpairs (the `kept` largest) of the tridiagonal matrix.
  const int r = static_cast<int>(kept);
  int rank = r;
  // A subset of eigenpairs makes dstemr find its eigenvalues by bisection (dlarrd), a Sturm
  // count of n divisions per step, about 50 steps per eigenvalue; all of them take dqds, whose
  // cost does not grow with the subset, and an MRRR eigenvector costs O(n): from a tenth of the
  // spectrum on it is faster to compute every pair and back-transform only the kept ones
  // (1,001^2, rank 367: 89 -> 72 ms; 601^2, rank 371: 46 -> 28 ms).
  const bool all_pairs = 10 * kept >= n;
  const int64_t computed = all_pairs ? n : r;
  std::vector<double> vectors(static_cast<size_t>(n) * computed), values(n);
  double* kept_vectors = vectors.data() + (computed - r) * n;
  double* kept_values = values.data() + (computed - r);
  {
    std::vector<double> d(diagonal), e(off);
    std::vector<int> support(2 * static_cast<size_t>(computed));
    char jobz = 'V', range = all_pairs ? 'A' : 'I';
    double vl = 0.0, vu = 0.0;
    int first = size - r + 1, last = size, found = 0, columns = static_cast<int>(computed), try_accuracy = 1,
        iquery = 0, iquery_size = -1;
    dstemr(&jobz, &range, &size, d.data(), e.data(), &vl, &vu, &first, &last, &found, values.data(), vectors.data(),
           &size, &columns, support.data(), &try_accuracy, &query, &query_size, &iquery, &iquery_size, &info);
    if (info == 0) {
      auto work = workspace_from<double>(query);
      std::vector<int> iwork(std::max(1, iquery) + 1);
      int work_size = static_cast<int>(work.size()), iwork_size = static_cast<int>(iwork.size());
      d = diagonal;
      e = off;
      dstemr(&jobz, &range, &size, d.data(), e.data(), &vl, &vu, &first, &last, &found, values.data(),
             vectors.data(), &size, &columns, support.data(), &try_accuracy, work.data(), &work_size, iwork.data(),
             &iwork_size, &info);
    }
    if (info != 0 || found != columns) {  // MRRR failed: all eigenvectors by divide and conquer, keep the last r
      std::vector<double> all(static_cast<size_t>(n) * n);
      d = diagonal;
      e = off;
      char compz = 'I';
      int iquery2 = 0;
      info = 0;
      dstedc(&compz, &size, d.data(), e.data(), all.data(), &size, &query, &query_size, &iquery2, &query_size, &info);
      if (info != 0) return fail();
      auto work = workspace_from<double>(query);
      std::vector<int> iwork(std::max(1, iquery2) + 1);
      int work_size = static_cast<int>(work.size()), iwork_size = static_cast<int>(iwork.size());
      dstedc(&compz, &size, d.data(), e.data(), all.data(), &size, work.data(), &work_size, iwork.data(),
             &iwork_size, &info);
      if (info != 0) return fail();
      std::copy(all.begin() + (n - r) * n, all.end(), kept_vectors);
      std::copy(d.begin() + (n - r), d.end(), kept_values);
    }
  }
  {
    char left = 'L', no_trans = 'N';
    dormtr(&left, &lower, &no_trans, &size, &rank, reduced.data(), &size, tau.data(), kept_vectors,
           &size, &query, &query_size, &info);
    // dormtr's query leaves out the 64 x 65 block-reflector factor that dormqr also takes from
    // the workspace, and dormqr given only the queried size shrinks its block to (lwork - 4160)
    // / rank: below 2 for a few hundred kept columns, and it falls back to one reflector at a
    // time (dorm2r: one thread, and dlarf scanning MRRR's zero-padded vectors for their last
    // nonzero column). 1,001^2 at rank 50: 13 of 78 ms. Room for dormqr's largest block.
    auto work = workspace_from<double>(std::max(query, 64.0 * rank + 64 * 65));
    int work_size = static_cast<int>(work.size());
    dormtr(&left, &lower, &no_trans, &size, &rank, reduced.data(), &size, tau.data(), kept_vectors,
           &size, work.data(), &work_size, &info);
    if (info != 0) return fail();
  }
  // X = B^T V_r (k x r), its columns scaled by 1 / (lambda + ridge), then W^T = X V_r^T.
  std::vector<double> x(static_cast<size_t>(k) * r);
  char no_trans = 'N', trans = 'T';
  double one = 1.0, zero = 0.0;
  dgemm(&no_trans, &no_trans, &cols, &rank, &size, &one, b, &cols, kept_vectors, &size, &zero, x.data(), &cols);
  for (int j = 0; j < r; ++j) {
    const double f = 1.0 / (kept_values[j] + ridge);
    for (int64_t i = 0; i < k; ++i) x[j * k + i] *= f;
  }
  dgemm(&no_trans, &trans, &cols, &size, &rank, &one, x.data(), &cols, kept_vectors, &size, &zero, w, &cols);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace zorb

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbEigvalsh, zorb::EigvalshImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbGramSolve, zorb::GramSolveImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());
