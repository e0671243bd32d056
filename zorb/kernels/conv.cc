// The Conv2D layer's forward pass and the normal equations of its gram solve, without the
// patch matrix: kernels written once for a vector width and compiled for AVX-512, AVX2 and the
// x86-64 baseline, row blocks on the pool's threads. Python side: conv.py.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// ---- Conv2D forward (NHWC, valid padding) ------------------------------------------------------
//
// out[n, i, j, :] = b + sum over (di, dj, c) of x[n, i s + di, j s + dj, c] kernel[di, dj, c, :].
// XLA's float64 convolution runs at about 20 GFLOP/s on two cores (1,280 32x32x3 images, 32
// 3x3 filters: 101 ms); the patch rows (dj, c) of one kernel row lie side by side in NHWC
// memory, so each output pixel is k rows of k C products into F accumulators held in vector
// registers, and the output is written once. Row blocks of the output go to the pool.

namespace zorb {
namespace {

struct ConvParams {
  const double* x;
  const double* kernel;
  const double* bias;  // F values or nullptr
  double* out;
  int64_t h, w, c, k, stride, ho, wo, f;
};

constexpr int64_t kConvBlock = 32;  // output channels accumulated at once

// Contracted multiply-adds (the rest of this file is compiled without: -ffp-contract=off).
#define ZORB_FMA __attribute__((optimize("fp-contract=fast")))

// The kernels below are written once for a vector of V::lanes doubles and compiled for three
// instruction sets: AVX-512 (8 lanes), AVX2 + FMA (4) and the x86-64 baseline (2), picked at
// run time. A vector wider than the target's registers is not split into registers by GCC but
// kept in memory (the AVX2 clone of an 8-lane version ran conv1's forward in 1,054 ms where
// XLA takes 166), so each instruction set gets its own width and register blocking.
template <int Lanes>
struct Vec {
  typedef double type __attribute__((vector_size(8 * Lanes)));
  static constexpr int lanes = Lanes;
};

template <typename V>
__attribute__((always_inline)) inline typename V::type load(const double* from) {
  typename V::type v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

template <typename V>
__attribute__((always_inline)) inline void store(double* to, const typename V::type& v) {
  std::memcpy(to, &v, sizeof v);
}

template <typename V>
ZORB_FMA __attribute__((always_inline)) inline void conv_rows_impl(const ConvParams& p, int64_t row_begin, int64_t row_end) {
  using T = typename V::type;
  constexpr int L = V::lanes, kBlock = kConvBlock / L, kEight = 8 / L;  // vectors per 32 and per 8 channels
  const int64_t taps = p.k * p.c;  // one kernel row: (dj, c), contiguous in x
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / p.ho, i = r % p.ho;
    for (int64_t j = 0; j < p.wo; ++j) {
      double* o = p.out + (r * p.wo + j) * p.f;
      int64_t f0 = 0;
      for (; f0 + kConvBlock <= p.f; f0 += kConvBlock) {
        T acc[kBlock];  // set lane by lane, so that it stays in registers (`= {}` zeroed it in memory)
        for (int v = 0; v < kBlock; ++v) acc[v] = p.bias != nullptr ? load<V>(p.bias + f0 + v * L) : T{};
        for (int64_t di = 0; di < p.k; ++di) {
          const double* xs = p.x + ((n * p.h + i * p.stride + di) * p.w + j * p.stride) * p.c;
          const double* ws = p.kernel + di * taps * p.f + f0;
          for (int64_t t = 0; t < taps; ++t) {
            const double* wt = ws + t * p.f;
            const T x = T{} + xs[t];  // a broadcast (GCC's own idiom for it)
            for (int v = 0; v < kBlock; ++v) acc[v] += x * load<V>(wt + v * L);
          }
        }
        for (int v = 0; v < kBlock; ++v) store<V>(o + f0 + v * L, acc[v]);
      }
      for (; f0 + 8 <= p.f; f0 += 8) {  // blocks of 8 channels
        T acc[kEight];
        for (int v = 0; v < kEight; ++v) acc[v] = p.bias != nullptr ? load<V>(p.bias + f0 + v * L) : T{};
        for (int64_t di = 0; di < p.k; ++di) {
          const double* xs = p.x + ((n * p.h + i * p.stride + di) * p.w + j * p.stride) * p.c;
          const double* ws = p.kernel + di * taps * p.f + f0;
          for (int64_t t = 0; t < taps; ++t)
            for (int v = 0; v < kEight; ++v) acc[v] += (T{} + xs[t]) * load<V>(ws + t * p.f + v * L);
        }
        for (int v = 0; v < kEight; ++v) store<V>(o + f0 + v * L, acc[v]);
      }
      for (; f0 < p.f; ++f0) {  // fewer than 8 channels left
        double acc = p.bias != nullptr ? p.bias[f0] : 0.0;
        for (int64_t di = 0; di < p.k; ++di) {
          const double* xs = p.x + ((n * p.h + i * p.stride + di) * p.w + j * p.stride) * p.c;
          const double* ws = p.kernel + di * taps * p.f + f0;
          for (int64_t t = 0; t < taps; ++t) acc += xs[t] * ws[t * p.f];
        }
        o[f0] = acc;
      }
    }
  }
}

// The instruction set the kernels run with: 8, 4 or 2 lanes, the widest this CPU has, or fewer
// where ZORB_VECTOR_LANES asks (the tests run every width the machine can).
int supported_lanes() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  if (__builtin_cpu_supports("avx512f")) return 8;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 4;
#endif
  return 2;
}

}  // namespace

int vector_lanes() {
  static const int lanes = [] {
    int widest = supported_lanes();
    const char* asked = std::getenv("ZORB_VECTOR_LANES");
    const int wanted = asked != nullptr ? std::atoi(asked) : 0;
    return (wanted == 2 || wanted == 4 || wanted == 8) && wanted < widest ? wanted : widest;
  }();
  return lanes;
}

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ZORB_AVX512 __attribute__((target("avx512f")))
#define ZORB_AVX2 __attribute__((target("avx2,fma")))
#else
#define ZORB_AVX512
#define ZORB_AVX2
#endif

ZORB_AVX512 ZORB_FMA void conv_rows_8(const ConvParams& p, int64_t b, int64_t e) { conv_rows_impl<Vec<8>>(p, b, e); }
ZORB_AVX2 ZORB_FMA void conv_rows_4(const ConvParams& p, int64_t b, int64_t e) { conv_rows_impl<Vec<4>>(p, b, e); }
ZORB_FMA void conv_rows_2(const ConvParams& p, int64_t b, int64_t e) { conv_rows_impl<Vec<2>>(p, b, e); }

void conv_rows(const ConvParams& p, int64_t row_begin, int64_t row_end) {
  switch (vector_lanes()) {
    case 8: return conv_rows_8(p, row_begin, row_end);
    case 4: return conv_rows_4(p, row_begin, row_end);
    default: return conv_rows_2(p, row_begin, row_end);
  }
}

// x (N, H, W, C), kernel (k, k, C, F), bias (F, or empty without bias) -> out (N, H', W', F).
ffi::Error Conv2dImpl(ffi::Buffer<ffi::F64> x, ffi::Buffer<ffi::F64> kernel, ffi::Buffer<ffi::F64> bias,
                      ffi::ResultBuffer<ffi::F64> out, int64_t stride) {
  auto xd = x.dimensions();
  auto kd = kernel.dimensions();
  auto od = out->dimensions();
  if (xd.size() != 4 || kd.size() != 4 || kd[0] != kd[1] || kd[2] != xd[3] || stride < 1)
    return ffi::Error::InvalidArgument("zorb conv2d: needs NHWC images and a (k, k, C, F) kernel");
  ConvParams p{x.typed_data(), kernel.typed_data(), bias.element_count() ? bias.typed_data() : nullptr,
               out->typed_data(), xd[1], xd[2], xd[3], kd[0], stride, od[1], od[2], kd[3]};
  if (p.bias != nullptr && static_cast<int64_t>(bias.element_count()) != p.f)
    return ffi::Error::InvalidArgument("zorb conv2d: the bias needs one value per filter");
  if (od.size() != 4 || od[0] != xd[0] || od[3] != p.f || (p.ho - 1) * stride + p.k > p.h ||
      (p.wo - 1) * stride + p.k > p.w)
    return ffi::Error::InvalidArgument("zorb conv2d: output shape does not match");
  const int64_t rows = xd[0] * p.ho;
  if (rows == 0 || p.wo == 0 || p.f == 0) return ffi::Error::Success();
  const int workers = static_cast<int>(std::min<int64_t>(worker_count(rows * p.wo * p.f), rows));
  struct Blocks {
    const ConvParams* p;
    int64_t rows;
    int workers;
  } blocks{&p, rows, workers};
  pool().run(workers, [](void* context, int w) {
    const auto* b = static_cast<const Blocks*>(context);
    conv_rows(*b->p, b->rows * w / b->workers, b->rows * (w + 1) / b->workers);
  }, &blocks);
  return ffi::Error::Success();
}

// ---- Conv2D normal equations without the patch matrix -------------------------------------------
//
// The gram solve of a conv layer needs M^T M and M^T T for the patch matrix M (N H' W' rows of
// d = k k C values) and the target rows T (F values per output pixel): 1.15 million x 27 for
// conv1, a 249 MB copy that XLA assembles from k^2 strided slices (51 ms) before dsyrk and
// dgemm read it again as skinny matrices (20-40 GFLOP/s). Here each worker gathers 64 patches
// at a time into a small buffer that stays in cache and multiplies it into register blocks
// of the two moments; the workers' sums are added at the end. Outputs, with the bias column:
// gram (d + 1) x (d + 1) (exactly symmetric) and moment (d + 1) x F.

struct MomentParams {
  const double* x;
  const double* t;
  int64_t h, w, c, k, stride, ho, wo, f, d, padded;  // padded: d rounded up to 8
};

constexpr int64_t kPatchBlock = 64;

// acc (rows of `padded` ... ) += P^T Q for a block of `count` patches P (count x padded) and
// rows Q (count x width, row stride q_stride): Rows rows of the result at a time, Vectors vectors
// of V::lanes columns each (Rows x Vectors accumulators held in registers).

template <typename V, int Rows, int Vectors>
ZORB_FMA __attribute__((always_inline)) inline void add_products(const double* p, int64_t padded, int64_t count,
                                                        const double* q, int64_t q_stride, int64_t column,
                                                        double* acc, int64_t acc_stride) {
  using T = typename V::type;
  constexpr int L = V::lanes;
  for (int64_t a0 = 0; a0 < padded; a0 += Rows) {
    T sum[Rows][Vectors];
    for (int r = 0; r < Rows; ++r)
      for (int v = 0; v < Vectors; ++v) sum[r][v] = T{};
    for (int64_t b = 0; b < count; ++b) {
      T row[Vectors];
      for (int v = 0; v < Vectors; ++v) row[v] = load<V>(q + b * q_stride + column + L * v);
      const double* pb = p + b * padded + a0;
      for (int r = 0; r < Rows; ++r) {
        const T scale = T{} + pb[r];
        for (int v = 0; v < Vectors; ++v) sum[r][v] += scale * row[v];
      }
    }
    for (int r = 0; r < Rows; ++r)
      for (int v = 0; v < Vectors; ++v) {
        double* target = acc + (a0 + r) * acc_stride + column + L * v;
        store<V>(target, load<V>(target) + sum[r][v]);
      }
  }
}

// acc (padded x width) += P^T Q; `padded` and `width` are multiples of 8. The register block:
// 4 x 32 columns (16 of AVX-512's 32 registers), then 4 x 8; 4 x 8 with AVX2 (8 of 16); 2 x 8
// with the baseline's 2-lane vectors (8 of 16).
template <typename V>
ZORB_FMA __attribute__((always_inline)) inline void add_block(const double* p, int64_t padded, int64_t count,
                                                     const double* q, int64_t width, double* acc) {
  constexpr int L = V::lanes;
  int64_t column = 0;
  if (L == 8)
    for (; column + 32 <= width; column += 32) add_products<V, 4, 4>(p, padded, count, q, width, column, acc, width);
  for (; column < width; column += 8) add_products<V, L == 2 ? 2 : 4, 8 / L>(p, padded, count, q, width, column, acc, width);
}

// Pixels [begin, end) into gram (padded x padded) and moment (padded x f_padded). Each patch
// row carries a 1 after its d values (the bias column), so the sums come with the products.
template <typename V>
ZORB_FMA __attribute__((always_inline)) inline void conv_moments_impl(const MomentParams& p, int64_t begin, int64_t end,
                                                             double* gram, double* moment, int64_t f_padded) {
  std::vector<double> patches(kPatchBlock * p.padded, 0.0), rows(kPatchBlock * f_padded, 0.0);
  for (int64_t b = 0; b < kPatchBlock; ++b) patches[b * p.padded + p.d] = 1.0;
  const int64_t taps = p.k * p.c;
  for (int64_t first = begin; first < end; first += kPatchBlock) {
    const int64_t count = std::min(kPatchBlock, end - first);
    for (int64_t b = 0; b < count; ++b) {
      const int64_t pixel = first + b, n = pixel / (p.ho * p.wo), i = (pixel / p.wo) % p.ho, j = pixel % p.wo;
      double* patch = patches.data() + b * p.padded;
      for (int64_t di = 0; di < p.k; ++di)
        std::memcpy(patch + di * taps, p.x + ((n * p.h + i * p.stride + di) * p.w + j * p.stride) * p.c,
                    sizeof(double) * taps);
      std::memcpy(rows.data() + b * f_padded, p.t + pixel * p.f, sizeof(double) * p.f);
    }
    add_block<V>(patches.data(), p.padded, count, patches.data(), p.padded, gram);
    add_block<V>(patches.data(), p.padded, count, rows.data(), f_padded, moment);
  }
}

ZORB_AVX512 ZORB_FMA void conv_moments_8(const MomentParams& p, int64_t b, int64_t e, double* g, double* m, int64_t f) {
  conv_moments_impl<Vec<8>>(p, b, e, g, m, f);
}
ZORB_AVX2 ZORB_FMA void conv_moments_4(const MomentParams& p, int64_t b, int64_t e, double* g, double* m, int64_t f) {
  conv_moments_impl<Vec<4>>(p, b, e, g, m, f);
}
ZORB_FMA void conv_moments_2(const MomentParams& p, int64_t b, int64_t e, double* g, double* m, int64_t f) {
  conv_moments_impl<Vec<2>>(p, b, e, g, m, f);
}

void conv_moments(const MomentParams& p, int64_t begin, int64_t end, double* gram, double* moment, int64_t f_padded) {
  switch (vector_lanes()) {
    case 8: return conv_moments_8(p, begin, end, gram, moment, f_padded);
    case 4: return conv_moments_4(p, begin, end, gram, moment, f_padded);
    default: return conv_moments_2(p, begin, end, gram, moment, f_padded);
  }
}

// x (N, H, W, C), t (N, H', W', F); attrs k, stride -> gram (d + 1)^2, moment (d + 1) x F.
ffi::Error ConvMomentsImpl(ffi::Buffer<ffi::F64> x, ffi::Buffer<ffi::F64> t, ffi::ResultBuffer<ffi::F64> gram_out,
                           ffi::ResultBuffer<ffi::F64> moment_out, int64_t k, int64_t stride) {
  auto xd = x.dimensions();
  auto td = t.dimensions();
  if (xd.size() != 4 || td.size() != 4 || td[0] != xd[0] || k < 1 || stride < 1 || (td[1] - 1) * stride + k > xd[1] ||
      (td[2] - 1) * stride + k > xd[2])
    return ffi::Error::InvalidArgument("zorb conv moments: needs NHWC images and their (N, H', W', F) targets");
  MomentParams p{x.typed_data(), t.typed_data(), xd[1], xd[2], xd[3], k, stride, td[1], td[2], td[3], k * k * xd[3], 0};
  p.padded = (p.d + 1 + 7) / 8 * 8;  // the d values and the bias column's 1
  const int64_t f_padded = (p.f + 7) / 8 * 8, pixels = xd[0] * p.ho * p.wo, side = p.d + 1, f = p.f;
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(
      worker_count(pixels * p.d), pixels / kPatchBlock)));
  std::vector<std::vector<double>> grams(workers, std::vector<double>(p.padded * p.padded, 0.0)),
      moments(workers, std::vector<double>(p.padded * f_padded, 0.0));
  struct Work {
    const MomentParams* p;
    std::vector<std::vector<double>>*grams, *moments;
    int64_t pixels, f_padded;
    int workers;
  } work{&p, &grams, &moments, pixels, f_padded, workers};
  pool().run(workers, [](void* context, int w) {
    auto* job = static_cast<Work*>(context);
    conv_moments(*job->p, job->pixels * w / job->workers, job->pixels * (w + 1) / job->workers,
                 (*job->grams)[w].data(), (*job->moments)[w].data(), job->f_padded);
  }, &work);
  double* gram = gram_out->typed_data();
  double* moment = moment_out->typed_data();
  std::fill(gram, gram + side * side, 0.0);
  std::fill(moment, moment + side * f, 0.0);
  for (int w = 0; w < workers; ++w)
    for (int64_t a = 0; a < side; ++a) {
      for (int64_t b = a; b < side; ++b) gram[a * side + b] += grams[w][a * p.padded + b];
      for (int64_t q = 0; q < f; ++q) moment[a * f + q] += moments[w][a * f_padded + q];
    }
  for (int64_t a = 0; a < side; ++a)
    for (int64_t b = 0; b < a; ++b) gram[a * side + b] = gram[b * side + a];
  return ffi::Error::Success();
}

}  // namespace
}  // namespace zorb

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbConvMoments, zorb::ConvMomentsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("stride"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbConv2d, zorb::Conv2dImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("stride"));
