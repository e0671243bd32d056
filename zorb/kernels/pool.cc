// The worker pool, OpenBLAS's jobs handed to it, and the helpers that split a call (pool.h).

#include "pool.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>

namespace zorb {

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

namespace {

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

void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

void WorkerPool::run(int jobs, Job job, void* context) {
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

void WorkerPool::reset_after_fork() {
  new (&call_mutex_) std::mutex();
  workers_ = std::vector<Worker*>();
}

WorkerPool::Worker* WorkerPool::start_worker() {
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

void WorkerPool::serve(Worker* worker) {
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

WorkerPool& pool() {
  static WorkerPool* instance = new WorkerPool();  // never destroyed: no thread meets a destructor at exit
  return *instance;
}

OpenblasSetThreads installed_in = nullptr;
OpenblasSetCount set_thread_count = nullptr;
OpenblasGetCount get_thread_count = nullptr;

namespace {

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

void before_fork() { pool().call_mutex().lock(); }
void after_fork_parent() { pool().call_mutex().unlock(); }
void after_fork_child() { pool().reset_after_fork(); }

}  // namespace

bool share_openblas_threads() {
  if (installed_in != nullptr) return true;
  Dl_info info;
  if (dgemm == nullptr || dladdr(reinterpret_cast<void*>(dgemm), &info) == 0 || info.dli_fname == nullptr)
    return false;
  void* library = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (library == nullptr) return false;
  void* setter = nullptr;
  for (const char* name : {"scipy_openblas_set_threads_callback_function", "openblas_set_threads_callback_function"}) {
    setter = dlsym(library, name);
    if (setter != nullptr) break;
  }
  if (setter == nullptr) return false;
  static bool fork_handlers = pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
  if (!fork_handlers) return false;
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
  return true;
}

int affinity_cores() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

int worker_count(int64_t elements) {
  const int64_t by_size = elements / (1 << 17);  // at least 128k entries per thread
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({affinity_cores(), by_size, 16})));
}

std::mutex& split_mutex() {
  static std::mutex mutex;
  return mutex;
}

void run_one_thread_parts(int parts, WorkerPool::Job job, void* context) {
  const int previous = get_thread_count();
  set_thread_count(1);
  pool().run(parts, job, context);
  set_thread_count(previous);
}

}  // namespace zorb
