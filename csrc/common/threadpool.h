#ifndef LOWBIT_THREADPOOL_H
#define LOWBIT_THREADPOOL_H
/* A small pool that shares the CPU politely: workers spin briefly after a job (the next layer's call comes
 * within microseconds during decode), then block on a condition variable. One job runs at a time. */
typedef void (*lb_task_fn)(void *ctx, int task, int thread);
int lb_pool_set_threads(int n);      /* returns 0, or -1 if threads could not be created */
int lb_pool_threads(void);
void lb_parallel_for(int ntasks, lb_task_fn fn, void *ctx);
#endif
