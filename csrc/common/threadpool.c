#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "threadpool.h"

#define LB_MAX_THREADS 256
#define SPIN_NS 200000   /* 0.2 ms of spinning before blocking: covers the gap between a layer's matmuls */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}
static inline long long now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct {
    pthread_mutex_t call_lock;          /* serializes parallel_for callers (e.g. server threads) */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_t tid[LB_MAX_THREADS];
    int nthreads;                       /* including the caller */
    atomic_int generation;              /* bumped per job; also used to ask workers to exit */
    atomic_int next_task;
    atomic_int busy;                    /* workers still inside the current job */
    int ntasks;
    lb_task_fn fn;
    void *ctx;
    int stop;
    int start_gen;                      /* generation when the workers were created */
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 1};

static void run_tasks(int thread) {
    int t;
    while ((t = atomic_fetch_add(&P.next_task, 1)) < P.ntasks) P.fn(P.ctx, t, thread);
}

static void *worker(void *arg) {
    /* start from the generation current when the pool was built, not when this thread first runs: a job
     * published before the thread gets scheduled must still be seen (else the caller waits forever) */
    int id = (int)(long)arg, seen = P.start_gen;
    for (;;) {
        long long t0 = now_ns();
        int spins = 0;
        while (atomic_load_explicit(&P.generation, memory_order_acquire) == seen) {
            cpu_relax();
            if (++spins % 256 == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&P.mu);
                while (atomic_load(&P.generation) == seen) pthread_cond_wait(&P.wake, &P.mu);
                pthread_mutex_unlock(&P.mu);
                break;
            }
        }
        seen = atomic_load(&P.generation);
        if (P.stop) return NULL;
        run_tasks(id);
        atomic_fetch_sub_explicit(&P.busy, 1, memory_order_release);
    }
}

static void stop_workers(void) {
    if (P.nthreads <= 1) return;
    pthread_mutex_lock(&P.mu);
    P.stop = 1;
    atomic_fetch_add(&P.generation, 1);
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    for (int i = 1; i < P.nthreads; i++) pthread_join(P.tid[i], NULL);
    P.stop = 0;
    P.nthreads = 1;
}

int lb_pool_set_threads(int n) {
    if (n < 1) n = 1;
    if (n > LB_MAX_THREADS) n = LB_MAX_THREADS;
    pthread_mutex_lock(&P.call_lock);
    stop_workers();
    P.start_gen = atomic_load(&P.generation);
    int ok = 0;
    for (int i = 1; i < n; i++) {
        if (pthread_create(&P.tid[i], NULL, worker, (void *)(long)i) != 0) { ok = -1; break; }
        P.nthreads = i + 1;
    }
    pthread_mutex_unlock(&P.call_lock);
    return ok;
}

int lb_pool_threads(void) { return P.nthreads; }

void lb_parallel_for(int ntasks, lb_task_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    pthread_mutex_lock(&P.call_lock);
    if (P.nthreads == 1 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++) fn(ctx, t, 0);
        pthread_mutex_unlock(&P.call_lock);
        return;
    }
    P.fn = fn; P.ctx = ctx; P.ntasks = ntasks;
    atomic_store(&P.next_task, 0);
    atomic_store(&P.busy, P.nthreads - 1);
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add_explicit(&P.generation, 1, memory_order_release);
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    run_tasks(0);
    /* yield now and then: a worker that lost its core to another process must get it back */
    for (int spins = 1; atomic_load_explicit(&P.busy, memory_order_acquire) > 0; spins++) {
        cpu_relax();
        if (spins % 1024 == 0) sched_yield();
    }
    pthread_mutex_unlock(&P.call_lock);
}
