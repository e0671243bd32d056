// What every kernel family of the extension shares (pool.cc): the BLAS/LAPACK functions,
// set from SciPy's capsules by zorb/kernels/native.py; one pool of worker threads for
// OpenBLAS's parallel jobs and the kernels' own row blocks; and the helpers that split a call
// between them.
//
// Arrays arrive row-major. A row-major r x c matrix is the column-major c x r matrix of its
// transpose, so every BLAS/LAPACK call of the kernels is the Fortran call for the transposed
// problem.

#ifndef ZORB_KERNELS_POOL_H_
#define ZORB_KERNELS_POOL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

namespace zorb {

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

// nullptr until set_blas (module.cc) sets them.
extern Dgemm* dgemm;
extern Dsyrk* dsyrk;
extern Dsyevd* dsyevd;
extern Dtrsm* dtrsm;
extern Dsytrd* dsytrd;
extern Dsterf* dsterf;
extern Dstemr* dstemr;
extern Dstedc* dstedc;
extern Dormtr* dormtr;
extern Dpotrf* dpotrf;


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
  void run(int jobs, Job job, void* context);

  // After fork() only the forking thread exists in the child: forget the workers (their
  // objects are left behind, never touched again) and start new ones on the next call.
  void reset_after_fork();

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

  Worker* start_worker();
  void serve(Worker* worker);

  std::mutex call_mutex_;
  std::vector<Worker*> workers_;
  std::atomic<int> remaining_{0};
  std::chrono::nanoseconds spin_{std::chrono::microseconds(100)};
};

WorkerPool& pool();

// Runs OpenBLAS's parallel jobs on the pool: finds the library that holds dgemm (SciPy's
// OpenBLAS) and its callback setter, under the names SciPy's builds give it. False when there
// is none (another BLAS, or an OpenBLAS older than 0.3.28).
bool share_openblas_threads();

// OpenBLAS's thread-count functions (openblas_set/get_num_threads), found by
// share_openblas_threads; `installed_in` is the callback setter it went through. All nullptr
// until then.
using OpenblasJob = void (*)(int thread_num, void* job_data, int job_argument);
using OpenblasThreads = void (*)(int sync, OpenblasJob job, int jobs, size_t job_size, void* job_data,
                                 int job_argument);
using OpenblasSetThreads = void (*)(OpenblasThreads);
using OpenblasSetCount = void (*)(int);
using OpenblasGetCount = int (*)();
extern OpenblasSetThreads installed_in;
extern OpenblasSetCount set_thread_count;
extern OpenblasGetCount get_thread_count;

inline bool fits_int(int64_t value) { return value >= 0 && value <= std::numeric_limits<int>::max(); }

// The cores this process may run on.
int affinity_cores();

// How many of the pool's threads a pass over `elements` values takes: at least 128k values
// each, at most one per core and 16.
int worker_count(int64_t elements);

// Held by every call split into one-thread parts (Gram matrices, products): each sets
// OpenBLAS's process-wide thread count to 1 and back, and two interleaved ones could restore
// the other's 1 for good.
std::mutex& split_mutex();

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
void run_one_thread_parts(int parts, WorkerPool::Job job, void* context);

}  // namespace zorb

#endif  // ZORB_KERNELS_POOL_H_
