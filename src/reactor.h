/* reactor: one event loop per thread (epoll), with an io_uring for backend I/O, timers and a
 * cross-thread message queue. Owns its thread, its epoll set, its ring and its timer list.
 * Everything registered on a reactor runs on that reactor's thread only. */
#ifndef ISERGW_REACTOR_H
#define ISERGW_REACTOR_H

#include <stdbool.h>
#include <stdint.h>

struct reactor;
struct io_uring_sqe;

/* An fd watched by a reactor. The callback gets the epoll event mask. */
struct reactor_fd {
        int fd;
        uint32_t events;
        void (*cb)(struct reactor_fd *rfd, uint32_t events);
        void *ctx;
};

/* A completion on the reactor's io_uring: set cb, put the pointer in sqe user_data. */
struct reactor_io {
        void (*cb)(struct reactor_io *io, int res);
};

/* A one-shot timer; re-arm from the callback for periodic work. */
struct reactor_timer {
        uint64_t deadline_ns;
        void (*cb)(struct reactor_timer *t);
        void *ctx;
        struct reactor_timer *next;
        bool armed;
};

/* Work to run at the end of the current loop iteration, after the event that queued it
 * returned: lets a callee complete things without re-entering its caller. */
struct reactor_deferred {
        void (*cb)(struct reactor_deferred *d);
        struct reactor_deferred *next;
        bool queued;
};

struct reactor *reactor_create(unsigned index);
void reactor_destroy(struct reactor *r);
int reactor_start(struct reactor *r); /* spawns the thread */
void reactor_stop(struct reactor *r); /* asks the loop to end and joins it */
/* Whether r's thread runs (between reactor_start and reactor_stop). Ask from the thread that
 * starts and stops r: shutdown code uses it to know whether r can still run a reactor_call. */
bool reactor_running(const struct reactor *r);
unsigned reactor_index(const struct reactor *r);
/* One loop iteration on the calling thread (tests drive an unstarted reactor this way). */
void reactor_poll_once(struct reactor *r, int max_wait_ms);

int reactor_add_fd(struct reactor *r, struct reactor_fd *rfd);
int reactor_mod_fd(struct reactor *r, struct reactor_fd *rfd, uint32_t events);
void reactor_del_fd(struct reactor *r, struct reactor_fd *rfd);

/* An SQE on the reactor's ring (NULL only if the ring is wedged). Queued SQEs are
 * submitted once per loop iteration, so several I/Os go in one system call. */
struct io_uring_sqe *reactor_get_sqe(struct reactor *r);
void reactor_ring_submit(struct reactor *r);

uint64_t reactor_now_ns(void);
void reactor_timer_arm(struct reactor *r, struct reactor_timer *t, uint64_t delay_ns);
void reactor_timer_cancel(struct reactor *r, struct reactor_timer *t);

/* Queues d (no-op if already queued); only from r's own thread. */
void reactor_defer(struct reactor *r, struct reactor_deferred *d);
void reactor_defer_cancel(struct reactor *r, struct reactor_deferred *d);

/* Runs fn(arg) on reactor r's thread, soon. Safe from any thread. */
int reactor_call(struct reactor *r, void (*fn)(void *arg), void *arg);

/* reactor_call for a message that must not be lost (a completion): retries until the queue
 * takes it. Any thread. */
void reactor_post(struct reactor *r, void (*fn)(void *arg), void *arg);
/* Runs fn(arg) on r's thread and waits for it to return (not from r's own thread). */
int reactor_call_sync(struct reactor *r, void (*fn)(void *arg), void *arg);

#endif
