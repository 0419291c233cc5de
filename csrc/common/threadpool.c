/* Thread pool. Tasks are claimed one at a time with a CAS on a single word (generation << 32 | next task), so
 * the caller never waits for a worker that has not claimed anything: if another process holds a worker's core,
 * the caller simply runs the remaining tasks itself (llama.cpp's spinning pool falls to a fraction of its
 * 1-thread speed in that case). Job descriptions are double-buffered by generation, so a late worker can never
 * run a task of a job it did not claim from. Workers spin briefly after a job, then block. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
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

typedef struct { lb_task_fn fn; void *ctx; uint32_t ntasks; } job_desc;

static struct {
    pthread_mutex_t call_lock;          /* serializes parallel_for callers (e.g. server threads) */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_t tid[LB_MAX_THREADS];
    int nthreads;                       /* including the caller */
    _Atomic uint64_t state;             /* generation << 32 | next unclaimed task of that generation's job */
    atomic_int done;                    /* tasks of the current job finished */
    atomic_int sleepers;
    atomic_int stop;
    uint32_t start_gen;                 /* generation when the workers were created */
    job_desc jobs[2];                   /* jobs[gen & 1] describes generation gen */
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 1};

static inline uint32_t gen_of(uint64_t s) { return (uint32_t)(s >> 32); }

/* Claim and run tasks of generation g until none is left or a newer job appears. */
static void run_tasks(uint32_t g, int thread) {
    const job_desc j = P.jobs[g & 1];   /* valid if any claim below succeeds (the CAS proves g is still current) */
    uint64_t s = atomic_load_explicit(&P.state, memory_order_acquire);
    while (gen_of(s) == g && (uint32_t)s < j.ntasks) {
        if (atomic_compare_exchange_weak_explicit(&P.state, &s, s + 1, memory_order_acq_rel, memory_order_acquire)) {
            j.fn(j.ctx, (int)(uint32_t)s, thread);
            atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
            s = atomic_load_explicit(&P.state, memory_order_acquire);
        }
    }
}

static void *worker(void *arg) {
    const int id = (int)(long)arg;
    /* start from the generation at creation: a job published before this thread first runs is still seen */
    uint32_t seen = P.start_gen;
    for (;;) {
        long long t0 = now_ns();
        int spins = 0;
        while (gen_of(atomic_load_explicit(&P.state, memory_order_acquire)) == seen && !atomic_load(&P.stop)) {
            cpu_relax();
            if (++spins % 256 == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&P.mu);
                atomic_fetch_add(&P.sleepers, 1);
                while (gen_of(atomic_load(&P.state)) == seen && !atomic_load(&P.stop))
                    pthread_cond_wait(&P.wake, &P.mu);
                atomic_fetch_sub(&P.sleepers, 1);
                pthread_mutex_unlock(&P.mu);
                break;
            }
        }
        if (atomic_load(&P.stop)) return NULL;
        seen = gen_of(atomic_load_explicit(&P.state, memory_order_acquire));
        run_tasks(seen, id);
    }
}

static void wake_sleepers(void) {
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.wake);
        pthread_mutex_unlock(&P.mu);
    }
}

static void stop_workers(void) {
    if (P.nthreads <= 1) return;
    atomic_store(&P.stop, 1);
    pthread_mutex_lock(&P.mu);
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    for (int i = 1; i < P.nthreads; i++) pthread_join(P.tid[i], NULL);
    atomic_store(&P.stop, 0);
    P.nthreads = 1;
}

int lb_pool_set_threads(int n) {
    if (n < 1) n = 1;
    if (n > LB_MAX_THREADS) n = LB_MAX_THREADS;
    pthread_mutex_lock(&P.call_lock);
    stop_workers();
    P.start_gen = gen_of(atomic_load(&P.state));
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
    /* Every task of the previous job has finished (we waited for done), so no one can still claim from it. */
    const uint32_t g = gen_of(atomic_load(&P.state)) + 1;
    P.jobs[g & 1] = (job_desc){fn, ctx, (uint32_t)ntasks};
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    atomic_store(&P.state, (uint64_t)g << 32);   /* seq_cst: pairs with the sleepers count in wake_sleepers */
    wake_sleepers();
    run_tasks(g, 0);
    /* Wait only for tasks that workers claimed; yield now and then so a preempted worker gets its core back. */
    for (int spins = 1; atomic_load_explicit(&P.done, memory_order_acquire) < ntasks; spins++) {
        cpu_relax();
        if (spins % 1024 == 0) sched_yield();
    }
    pthread_mutex_unlock(&P.call_lock);
}
