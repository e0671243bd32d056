// The Sigmoid/Tanh layers' inverse and the global extremes it maps from, each in one pass
// over the array on the pool's threads. Python side: squash.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// ---- Sigmoid/Tanh relaxed inverse in one pass -------------------------------------------------
//
// out = f^-1(z) - shift, z = a + (t - lo) * ((b - a) / (hi - lo)) (the middle (a + b) / 2 when
// hi == lo), f^-1 = atanh (Tanh) or logit (Sigmoid), exactly the arithmetic of zorb/kernels/special.py
// and SquashingLayer.inverse_in_range, operation for operation (compiled without FMA
// contraction). XLA splits that chain into three loops (it will not fuse a division with several
// consumers), each a round trip through memory; here it is one read of t and one write.

namespace zorb {

LogConstants log_constants;

namespace {

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

__attribute__((always_inline)) inline double log1p_nonnegative(double u, const LogConstants& c) {
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
  double series = c.series[0];
  for (int k = 1; k < kSeriesTerms; ++k) series = series * z + c.series[k];
  series = series * z;
  const double half_f2 = 0.5 * f * f;
  const double log_w = e * c.ln2_hi - ((half_f2 - (s * (half_f2 + series) + (e * c.ln2_lo + error / w))) - f);
  // u itself for inf and NaN (u - u is 0 only for finite u)
  return (u - u == 0) ? log_w : u;
}

struct SquashParams {
  const double* t;
  const double* shift;  // k values (one per column) or N values (one per row), or nullptr
  double* out;
  int64_t cols;
  double lo, a, scale, middle;
  bool constant, tanh, shift_rows;
};

enum ShiftMode { kNoShift, kColumnShift, kRowShift };

// Rows are streamed in blocks of kSquashBlock values, each after a software prefetch of the
// block kSquashAhead values further on: without it the loop stalled on its loads (on this
// project's virtual machines the hardware prefetcher left a 10,000 x 1,000 Tanh inverse at
// 26 ms, 2.6 ns an entry on two cores; with it 13.7 ms). Prefetching the output as well was
// slower (15.9 ms), prefetching further ahead no faster.
constexpr int64_t kSquashBlock = 256, kSquashAhead = 1024;

template <bool Tanh, bool Constant, ShiftMode Shift>
__attribute__((always_inline)) inline void squash_span(const double* __restrict t, const double* __restrict shift,
                                                       double* __restrict out, int64_t begin, int64_t end, double lo,
                                                       double a, double scale, double middle, const LogConstants& constants,
                                                       double row_shift) {
  for (int64_t c = begin; c < end; ++c) {
    const double z = Constant ? middle : a + (t[c] - lo) * scale;
    double value;
    if (Tanh) {
      const double abs_z = std::fabs(z);
      value = std::copysign(0.5 * log1p_nonnegative(2 * abs_z / (1 - abs_z), constants), z);
    } else {
      const double d = 2 * z - 1;
      const double smaller = z < 1 - z ? z : 1 - z;
      value = std::copysign(log1p_nonnegative(std::fabs(d) / smaller, constants), d);
    }
    out[c] = Shift == kColumnShift ? value - shift[c] : Shift == kRowShift ? value - row_shift : value;
  }
}


// `shift` points at the k column shifts (kColumnShift) or at this row's one shift (kRowShift).
template <bool Tanh, bool Constant, ShiftMode Shift>
__attribute__((always_inline)) inline void squash_row(const double* __restrict t, const double* __restrict shift, double* __restrict out,
                       int64_t cols, double lo, double a, double scale, double middle, const LogConstants& constants) {
  const double row_shift = Shift == kRowShift ? shift[0] : 0.0;
  for (int64_t start = 0; start < cols; start += kSquashBlock) {
    const int64_t end = std::min(cols, start + kSquashBlock);
    if (!Constant)
      for (int64_t ahead = start + kSquashAhead; ahead < end + kSquashAhead; ahead += 8) __builtin_prefetch(t + ahead);
    squash_span<Tanh, Constant, Shift>(t, shift, out, start, end, lo, a, scale, middle, constants, row_shift);
  }
}

template <bool Tanh, bool Constant, ShiftMode Shift>
__attribute__((always_inline)) inline void squash_block(const SquashParams& p, int64_t row_begin, int64_t row_end) {
  const LogConstants constants = log_constants;  // a local copy: loaded once, not per entry
  for (int64_t r = row_begin; r < row_end; ++r)
    squash_row<Tanh, Constant, Shift>(p.t + r * p.cols, Shift == kRowShift ? p.shift + r : p.shift,
                                      p.out + r * p.cols, p.cols, p.lo, p.a, p.scale, p.middle, constants);
}

template <bool Tanh, bool Constant>
__attribute__((always_inline)) inline void squash_block(const SquashParams& p, int64_t row_begin, int64_t row_end) {
  if (p.shift == nullptr)
    squash_block<Tanh, Constant, kNoShift>(p, row_begin, row_end);
  else if (p.shift_rows)
    squash_block<Tanh, Constant, kRowShift>(p, row_begin, row_end);
  else
    squash_block<Tanh, Constant, kColumnShift>(p, row_begin, row_end);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void squash_rows(const SquashParams& p, int64_t row_begin, int64_t row_end) {
  if (p.tanh)
    p.constant ? squash_block<true, true>(p, row_begin, row_end) : squash_block<true, false>(p, row_begin, row_end);
  else
    p.constant ? squash_block<false, true>(p, row_begin, row_end) : squash_block<false, false>(p, row_begin, row_end);
}

// t (N x k), range = [lo, hi], shift (k, or N with shift_rows; ignored unless has_shift); attrs:
// the margins a < b of the function's range and which function.
ffi::Error SquashInverseImpl(ffi::Buffer<ffi::F64> t, ffi::Buffer<ffi::F64> range, ffi::Buffer<ffi::F64> shift,
                             ffi::ResultBuffer<ffi::F64> out, double a, double b, bool tanh, bool has_shift,
                             bool shift_rows) {
  auto td = t.dimensions();
  if (td.size() != 2) return ffi::Error::InvalidArgument("zorb squash inverse: needs a 2-D target");
  if (range.element_count() != 2) return ffi::Error::InvalidArgument("zorb squash inverse: range needs 2 values");
  if (has_shift && static_cast<int64_t>(shift.element_count()) != td[shift_rows ? 0 : 1])
    return ffi::Error::InvalidArgument("zorb squash inverse: shift needs one value per column (per row with shift_rows)");
  const double lo = range.typed_data()[0], hi = range.typed_data()[1];
  SquashParams p;
  p.t = t.typed_data();
  p.shift = has_shift ? shift.typed_data() : nullptr;
  p.shift_rows = shift_rows;
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
  struct Blocks {
    const SquashParams* p;
    int64_t rows;
    int workers;
  } blocks{&p, rows, workers};
  pool().run(workers, [](void* context, int w) {
    const auto* b = static_cast<const Blocks*>(context);
    squash_rows(*b->p, b->rows * w / b->workers, b->rows * (w + 1) / b->workers);
  }, &blocks);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace zorb

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbSquashInverse, zorb::SquashInverseImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<double>("a")
                                  .Attr<double>("b")
                                  .Attr<bool>("tanh")
                                  .Attr<bool>("has_shift")
                                  .Attr<bool>("shift_rows"));

// ---- Global minimum and maximum in one pass -----------------------------------------------------
//
// The Sigmoid/Tanh inverses map their target onto the function's range from its global
// extremes. XLA reduces min and max in two passes over the array (3.6 ms each per 10^7 entries
// on two cores, at memory speed); here one pass computes both, four lanes of vector registers
// wide, the array split between the pool's workers. Like jnp.min/jnp.max, any NaN makes both
// NaN.

namespace zorb {
namespace {

struct Extremes {
  double lo, hi;
  bool nan;
};

typedef double Lanes __attribute__((vector_size(32)));
typedef int64_t LaneMask __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
Extremes extremes_of(const double* x, int64_t n) {
  constexpr int kLanes = 4, kStep = 4 * kLanes;  // four independent accumulators of four lanes
  Extremes result{std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(), false};
  int64_t i = 0;
  if (n >= kStep) {
    Lanes lo[4], hi[4];
    LaneMask nan = {0, 0, 0, 0};
    for (int j = 0; j < 4; ++j) {
      std::memcpy(&lo[j], x + j * kLanes, sizeof(Lanes));
      hi[j] = lo[j];
    }
    for (; i + kStep <= n; i += kStep) {
      for (int j = 0; j < 4; ++j) {
        Lanes v;
        std::memcpy(&v, x + i + j * kLanes, sizeof(Lanes));
        lo[j] = v < lo[j] ? v : lo[j];
        hi[j] = v > hi[j] ? v : hi[j];
        nan |= v != v;
      }
    }
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < kLanes; ++l) {
        result.lo = std::min(result.lo, lo[j][l]);
        result.hi = std::max(result.hi, hi[j][l]);
      }
    for (int l = 0; l < kLanes; ++l) result.nan |= nan[l] != 0;
  }
  for (; i < n; ++i) {
    result.lo = std::min(result.lo, x[i]);
    result.hi = std::max(result.hi, x[i]);
    result.nan |= std::isnan(x[i]);
  }
  return result;
}

ffi::Error ExtremaImpl(ffi::Buffer<ffi::F64> x, ffi::ResultBuffer<ffi::F64> out) {
  const int64_t n = static_cast<int64_t>(x.element_count());
  double* range = out->typed_data();
  if (n == 0) return ffi::Error::InvalidArgument("zorb extrema: needs at least one value");
  const int workers = worker_count(n);
  std::vector<Extremes> parts(workers);
  struct Blocks {
    const double* x;
    int64_t n;
    int workers;
    Extremes* parts;
  } blocks{x.typed_data(), n, workers, parts.data()};
  pool().run(workers, [](void* context, int w) {
    const auto* b = static_cast<const Blocks*>(context);
    // cache-line aligned shares (8 values), so no two workers read the same line
    const int64_t begin = b->n * w / b->workers / 8 * 8, end = w + 1 == b->workers ? b->n : b->n * (w + 1) / b->workers / 8 * 8;
    b->parts[w] = extremes_of(b->x + begin, end - begin);
  }, &blocks);
  Extremes all = parts[0];
  for (int w = 1; w < workers; ++w) {
    all.lo = std::min(all.lo, parts[w].lo);
    all.hi = std::max(all.hi, parts[w].hi);
    all.nan |= parts[w].nan;
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  range[0] = all.nan ? nan : all.lo;
  range[1] = all.nan ? nan : all.hi;
  return ffi::Error::Success();
}

}  // namespace
}  // namespace zorb

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbExtrema, zorb::ExtremaImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>());
