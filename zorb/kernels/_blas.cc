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

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Dgemm = void(char*, char*, int*, int*, int*, double*, const double*, int*, const double*, int*,
                   double*, double*, int*);
using Dsyrk = void(char*, char*, int*, int*, double*, const double*, int*, double*, double*, int*);

using Dsyevd = void(char*, char*, int*, double*, int*, double*, double*, int*, int*, int*, int*);
using Dtrsm = void(char*, char*, char*, char*, int*, int*, double*, const double*, int*, double*, int*);
using Dsytrd = void(char*, int*, double*, int*, double*, double*, double*, double*, int*, int*);
using Dsterf = void(int*, double*, double*, int*);
using Dstemr = void(char*, char*, int*, double*, double*, double*, double*, int*, int*, int*, double*, double*, int*,
                    int*, int*, int*, double*, int*, int*, int*, int*);
using Dstedc = void(char*, int*, double*, double*, double*, int*, double*, int*, int*, int*, int*);
using Dormtr = void(char*, char*, char*, int*, int*, double*, int*, double*, double*, int*, double*, int*, int*);
using Dpotrf = void(char*, int*, double*, int*, int*);

Dgemm* dgemm = nullptr;
Dsyrk* dsyrk = nullptr;
Dsyevd* dsyevd = nullptr;
Dtrsm* dtrsm = nullptr;
Dsytrd* dsytrd = nullptr;
Dsterf* dsterf = nullptr;
Dstemr* dstemr = nullptr;
Dstedc* dstedc = nullptr;
Dormtr* dormtr = nullptr;
Dpotrf* dpotrf = nullptr;


// ---- One pool of worker threads for OpenBLAS's parallel jobs and the one-pass inverse --------
//
// OpenBLAS's own worker threads spin (sched_yield) for 2^28 cycles, about 0.1 s, after every
// threaded call before they sleep. XLA's loops and the one-pass inverse run between BLAS calls,
// on the same two cores, so they ran at half speed beside a spinning thread: 10,000 x 600
// Tanh inverse 8.6 ms alone, 20-30 ms right after a product. OpenBLAS (0.3.28 and later) can
// hand its parallel jobs to a callback instead (openblas_set_threads_callback_function); this
// pool runs them, and the inverse's row blocks, on workers that spin only briefly (long enough
// to catch LAPACK's bursts of small threaded calls) and then block.
//
// OpenBLAS's rules for the callback: all jobs of a call must run at once (its threaded level-3
// kernels wait on each other's progress flags), and jobs of concurrent calls must not share a
// job index (its scratch buffers are indexed by it). So each call holds one mutex and hands
// job i > 0 to worker i - 1, job 0 to the caller.

class WorkerPool {
 public:
  using Job = void (*)(void* context, int index);

  // job(context, i) for every i in [0, jobs), concurrently; returns when all are done.
  void run(int jobs, Job job, void* context) {
    if (jobs <= 1) {
      if (jobs == 1) job(context, 0);
      return;
    }
    std::lock_guard<std::mutex> call(call_mutex_);
    while (static_cast<int>(workers_.size()) < jobs - 1) workers_.push_back(start_worker());
    remaining_.store(jobs - 1, std::memory_order_relaxed);
    for (int i = 1; i < jobs; ++i) {
      Worker* worker = workers_[i - 1];
      worker->job = job;
      worker->context = context;
      worker->index = i;
      {
        std::lock_guard<std::mutex> lock(worker->mutex);
        worker->pending.store(true, std::memory_order_release);
      }
      worker->wakeup.notify_one();
    }
    job(context, 0);
    Deadline spinning(spin_);
    while (remaining_.load(std::memory_order_acquire) != 0) {
      if (spinning.running())
        relax();
      else
        sched_yield();
    }
  }

  // After fork() only the forking thread exists in the child: forget the workers (their
  // objects are left behind, never touched again) and start new ones on the next call.
  void reset_after_fork() {
    new (&call_mutex_) std::mutex();
    workers_ = std::vector<Worker*>();
  }

  std::mutex& call_mutex() { return call_mutex_; }
  int workers() const { return static_cast<int>(workers_.size()); }
  void set_spin(std::chrono::nanoseconds spin) { spin_ = spin; }

 private:
  struct Worker {
    std::mutex mutex;
    std::condition_variable wakeup;
    std::atomic<bool> pending{false};
    Job job = nullptr;
    void* context = nullptr;
    int index = 0;
  };

  // Whether `spin` has passed since construction; the clock is read every 64th question only
  // (a clock read costs about as much as the pause between two questions).
  class Deadline {
   public:
    explicit Deadline(std::chrono::nanoseconds spin) : end_(std::chrono::steady_clock::now() + spin) {}
    bool running() {
      if ((++asked_ & 63) == 0) running_ = std::chrono::steady_clock::now() < end_;
      return running_;
    }

   private:
    std::chrono::steady_clock::time_point end_;
    unsigned asked_ = 0;
    bool running_ = true;
  };

  static void relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  Worker* start_worker() {
    Worker* worker = new Worker();  // never freed: a worker lives as long as the process
    try {
      std::thread(&WorkerPool::serve, this, worker).detach();
    } catch (...) {
      // Jobs already handed out would wait for this one forever.
      std::fprintf(stderr, "zorb: cannot start a BLAS worker thread\n");
      std::abort();
    }
    return worker;
  }

  void serve(Worker* worker) {
    for (;;) {
      Deadline spinning(spin_);
      while (!worker->pending.load(std::memory_order_acquire)) {
        if (spinning.running()) {
          relax();
          continue;
        }
        std::unique_lock<std::mutex> lock(worker->mutex);
        worker->wakeup.wait(lock, [worker] { return worker->pending.load(std::memory_order_acquire); });
      }
      worker->pending.store(false, std::memory_order_relaxed);
      worker->job(worker->context, worker->index);
      remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex call_mutex_;
  std::vector<Worker*> workers_;
  std::atomic<int> remaining_{0};
  std::chrono::nanoseconds spin_{std::chrono::microseconds(100)};
};

WorkerPool& pool() {
  static WorkerPool* instance = new WorkerPool();  // never destroyed: no thread meets a destructor at exit
  return *instance;
}

// OpenBLAS's callback types (cblas.h, 0.3.28 and later).
using OpenblasJob = void (*)(int thread_num, void* job_data, int job_argument);
using OpenblasThreads = void (*)(int sync, OpenblasJob job, int jobs, size_t job_size, void* job_data,
                                 int job_argument);
using OpenblasSetThreads = void (*)(OpenblasThreads);

struct OpenblasCall {
  OpenblasJob job;
  char* data;
  size_t size;
  int argument;
};

void run_openblas_job(void* context, int index) {
  auto* call = static_cast<OpenblasCall*>(context);
  call->job(index, call->data + index * call->size, call->argument);
}

void openblas_threads(int, OpenblasJob job, int jobs, size_t job_size, void* job_data, int job_argument) {
  OpenblasCall call{job, static_cast<char*>(job_data), job_size, job_argument};
  pool().run(jobs, run_openblas_job, &call);
}

OpenblasSetThreads installed_in = nullptr;  // the setter the callback went through, if any
using OpenblasSetCount = void (*)(int);
using OpenblasGetCount = int (*)();
OpenblasSetCount set_thread_count = nullptr;  // OpenBLAS's openblas_set/get_num_threads, where found
OpenblasGetCount get_thread_count = nullptr;

void before_fork() { pool().call_mutex().lock(); }
void after_fork_parent() { pool().call_mutex().unlock(); }
void after_fork_child() { pool().reset_after_fork(); }

bool fits_int(int64_t value) { return value >= 0 && value <= std::numeric_limits<int>::max(); }

// The cores this process may run on.
int affinity_cores() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

// Held by every call split into one-thread parts (Gram matrices, products): each sets
// OpenBLAS's process-wide thread count to 1 and back, and two interleaved ones could restore
// the other's 1 for good.
std::mutex& split_mutex() {
  static std::mutex mutex;
  return mutex;
}

// The parts a split call runs in: `parts_now()` asked again under split_mutex (another split
// may have changed the thread count meanwhile); `lock` holds the mutex while more than one.
template <typename PartsNow>
int lock_split(std::unique_lock<std::mutex>& lock, PartsNow parts_now) {
  int parts = parts_now();
  if (parts > 1) {
    lock.lock();
    parts = parts_now();
  }
  return parts;
}

// job(context, i) for every part on the pool, OpenBLAS set to one thread meanwhile and back.
void run_one_thread_parts(int parts, WorkerPool::Job job, void* context) {
  const int previous = get_thread_count();
  set_thread_count(1);
  pool().run(parts, job, context);
  set_thread_count(previous);
}

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

// C (m x n) = op(A) @ op(B), op = transpose when asked.
ffi::Error MatmulImpl(ffi::Buffer<ffi::F64> a, ffi::Buffer<ffi::F64> b, ffi::ResultBuffer<ffi::F64> c,
                      bool transpose_a, bool transpose_b) {
  if (dgemm == nullptr) return ffi::Error::Internal("zorb blas: dgemm was not set (zorb.kernels.blas not initialised)");
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

// G = A^T A (d x d for A r x d) or, with `rows`, A A^T (r x r): one triangle by dsyrk, then
// mirrored.
ffi::Error GramImpl(ffi::Buffer<ffi::F64> a, ffi::ResultBuffer<ffi::F64> g, bool rows) {
  if (dsyrk == nullptr) return ffi::Error::Internal("zorb blas: dsyrk was not set (zorb.kernels.blas not initialised)");
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

// The eigenvalues (ascending) of a symmetric n x n matrix, without its eigenvectors: LAPACK
// dsyevd with jobz = 'N' (a tridiagonal reduction, about half the time of the eigenvectors;
// jax's eigvalsh computes them and drops them). NaN where LAPACK fails.
ffi::Error EigvalshImpl(ffi::Buffer<ffi::F64> a, ffi::ResultBuffer<ffi::F64> w) {
  if (dsyevd == nullptr) return ffi::Error::Internal("zorb blas: dsyevd was not set (zorb.kernels.blas not initialised)");
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
  if (dsytrd == nullptr) return ffi::Error::Internal("zorb blas: LAPACK was not set (zorb.kernels.blas not initialised)");
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbEigvalsh, EigvalshImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbGramSolve, GramSolveImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());

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

// log 2 in two parts and the series of log(m) = 2 atanh(s) in s^2, set from Python (zorb.kernels.special:
// the same constants, so both compute the same function).
constexpr int kSeriesTerms = 7;
struct LogConstants {
  double ln2_hi = 0.0, ln2_lo = 0.0;
  double series[kSeriesTerms] = {};  // Horner order: highest power first
};
LogConstants log_constants;

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

int worker_count(int64_t elements) {
  const int64_t by_size = elements / (1 << 17);  // at least 128k entries per thread
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({affinity_cores(), by_size, 16})));
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbSquashInverse, SquashInverseImpl,
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbExtrema, ExtremaImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>());


// ---- Conv2D forward (NHWC, valid padding) ------------------------------------------------------
//
// out[n, i, j, :] = b + sum over (di, dj, c) of x[n, i s + di, j s + dj, c] kernel[di, dj, c, :].
// XLA's float64 convolution runs at about 20 GFLOP/s on two cores (1,280 32x32x3 images, 32
// 3x3 filters: 101 ms); the patch rows (dj, c) of one kernel row lie side by side in NHWC
// memory, so each output pixel is k rows of k C products into F accumulators held in vector
// registers, and the output is written once. Row blocks of the output go to the pool.

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

int vector_lanes() {
  static const int lanes = [] {
    int widest = supported_lanes();
    const char* asked = std::getenv("ZORB_VECTOR_LANES");
    const int wanted = asked != nullptr ? std::atoi(asked) : 0;
    return (wanted == 2 || wanted == 4 || wanted == 8) && wanted < widest ? wanted : widest;
  }();
  return lanes;
}

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

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbConvMoments, ConvMomentsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("stride"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ZorbConv2d, Conv2dImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("stride"));

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

// Hands OpenBLAS's parallel jobs to the pool: finds the library that holds dgemm (SciPy's
// OpenBLAS) and its callback setter, under the names SciPy's builds give it. False when there
// is none (another BLAS, or an OpenBLAS older than 0.3.28).
PyObject* share_threads(PyObject*, PyObject*) {
  if (installed_in != nullptr) Py_RETURN_TRUE;
  Dl_info info;
  if (dgemm == nullptr || dladdr(reinterpret_cast<void*>(dgemm), &info) == 0 || info.dli_fname == nullptr)
    Py_RETURN_FALSE;
  void* library = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (library == nullptr) Py_RETURN_FALSE;
  void* setter = nullptr;
  for (const char* name : {"scipy_openblas_set_threads_callback_function", "openblas_set_threads_callback_function"}) {
    setter = dlsym(library, name);
    if (setter != nullptr) break;
  }
  if (setter == nullptr) Py_RETURN_FALSE;
  static bool fork_handlers = pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
  if (!fork_handlers) Py_RETURN_FALSE;
  void* set_count = dlsym(library, "scipy_openblas_set_num_threads");
  void* get_count = dlsym(library, "scipy_openblas_get_num_threads");
  if (set_count == nullptr || get_count == nullptr) {
    set_count = dlsym(library, "openblas_set_num_threads");
    get_count = dlsym(library, "openblas_get_num_threads");
  }
  if (set_count != nullptr && get_count != nullptr) {
    set_thread_count = reinterpret_cast<OpenblasSetCount>(set_count);
    get_thread_count = reinterpret_cast<OpenblasGetCount>(get_count);
  }
  installed_in = reinterpret_cast<OpenblasSetThreads>(setter);
  installed_in(openblas_threads);
  Py_RETURN_TRUE;
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

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_blas", "XLA FFI handlers for BLAS dgemm/dsyrk and LAPACK dsyevd.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__blas(void) { return PyModule_Create(&module); }
