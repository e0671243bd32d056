// What each kernel family's file gives the Python module (module.cc): its XLA FFI handlers and
// the settings and queries the module exposes.

#ifndef ZORB_KERNELS_KERNELS_H_
#define ZORB_KERNELS_KERNELS_H_

#include <cstdint>

#include "xla/ffi/api/c_api.h"

// products.cc
extern "C" XLA_FFI_Error* ZorbMatmul(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* ZorbGram(XLA_FFI_CallFrame* call_frame);
// solve.cc
extern "C" XLA_FFI_Error* ZorbEigvalsh(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* ZorbGramSolve(XLA_FFI_CallFrame* call_frame);
// squash.cc
extern "C" XLA_FFI_Error* ZorbSquashInverse(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* ZorbExtrema(XLA_FFI_CallFrame* call_frame);
// conv.cc
extern "C" XLA_FFI_Error* ZorbConv2d(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* ZorbConvMoments(XLA_FFI_CallFrame* call_frame);

namespace zorb {

// products.cc: how many one-thread calls a product / Gram matrix is split into now.
int split_gemm_parts(int64_t n, int64_t m, int64_t k);
int split_gram_parts(int64_t n, int64_t k);

// squash.cc: log 2 in two parts and the series of log(m) = 2 atanh(s) in s^2, set from Python
// (zorb.kernels.special: the same constants, so both compute the same function).
constexpr int kSeriesTerms = 7;
struct LogConstants {
  double ln2_hi = 0.0, ln2_lo = 0.0;
  double series[kSeriesTerms] = {};  // Horner order: highest power first
};
extern LogConstants log_constants;

// conv.cc: doubles per vector in the conv kernels (8 AVX-512, 4 AVX2, 2 baseline).
int vector_lanes();

}  // namespace zorb

#endif  // ZORB_KERNELS_KERNELS_H_
