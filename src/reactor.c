#include "src/reactor.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "src/log.h"

#define REACTOR_RING_ENTRIES 256
#define REACTOR_MAX_EVENTS   64

struct reactor_msg {
        void (*fn)(void *arg);
        void *arg;
        struct reactor_msg *next;
};

struct reactor {
        unsigned index;
        int epfd;
        pthread_t thread;
        bool running;
        bool stop_requested;
        struct io_uring ring;
        unsigned ring_pending; /* SQEs prepared but not yet submitted */
        struct reactor_fd ring_rfd;
        int ring_efd;
        /* cross-thread messages */
        pthread_mutex_t msg_lock;
        struct reactor_msg *msg_head, *msg_tail;
        struct reactor_fd msg_rfd;
        int msg_efd;
        struct reactor_timer *timers; /* sorted by deadline */
        struct reactor_deferred *deferred_head, *deferred_tail;
        /* The epoll batch being dispatched: an fd deleted by a callback may still have an
         * event further on in it, whose rfd its owner has freed by then. */
        struct epoll_event *batch;
        int batch_next, batch_n;
};

uint64_t reactor_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void drain_eventfd(int fd)
{
        uint64_t v;
        while (read(fd, &v, sizeof(v)) == sizeof(v))
                ;
}

static void ring_reap(struct reactor *r)
{
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
                struct reactor_io *io = io_uring_cqe_get_data(cqe);
                int res = cqe->res;
                /* Mark seen before the callback: it may submit more work. */
                io_uring_cqe_seen(&r->ring, cqe);
                if (io)
                        io->cb(io, res);
        }
}

static void ring_event(struct reactor_fd *rfd, uint32_t events)
{
        struct reactor *r = rfd->ctx;
        drain_eventfd(r->ring_efd);
        ring_reap(r);
}

static void msg_event(struct reactor_fd *rfd, uint32_t events)
{
        struct reactor *r = rfd->ctx;
        drain_eventfd(r->msg_efd);
        pthread_mutex_lock(&r->msg_lock);
        struct reactor_msg *m = r->msg_head;
        r->msg_head = r->msg_tail = NULL;
        pthread_mutex_unlock(&r->msg_lock);
        while (m) {
                struct reactor_msg *next = m->next;
                m->fn(m->arg);
                free(m);
                m = next;
        }
}

struct reactor *reactor_create(unsigned index)
{
        struct reactor *r = calloc(1, sizeof(*r));
        if (!r)
                return NULL;
        r->index = index;
        r->epfd = epoll_create1(EPOLL_CLOEXEC);
        r->ring_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r->msg_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        pthread_mutex_init(&r->msg_lock, NULL);
        if (r->epfd < 0 || r->ring_efd < 0 || r->msg_efd < 0)
                goto fail;
        int rc = io_uring_queue_init(REACTOR_RING_ENTRIES, &r->ring, 0);
        if (rc < 0) {
                log_err("reactor %u: io_uring_queue_init: %s", index, strerror(-rc));
                goto fail;
        }
        io_uring_register_eventfd(&r->ring, r->ring_efd);
        r->ring_rfd = (struct reactor_fd){.fd = r->ring_efd, .cb = ring_event, .ctx = r};
        r->msg_rfd = (struct reactor_fd){.fd = r->msg_efd, .cb = msg_event, .ctx = r};
        if (reactor_add_fd(r, &r->ring_rfd) || reactor_add_fd(r, &r->msg_rfd))
                goto fail;
        return r;
fail:
        log_err("reactor %u: cannot create: %s", index, strerror(errno));
        reactor_destroy(r);
        return NULL;
}

void reactor_destroy(struct reactor *r)
{
        if (!r)
                return;
        if (r->ring.ring_fd > 0)
                io_uring_queue_exit(&r->ring);
        if (r->epfd >= 0)
                close(r->epfd);
        if (r->ring_efd >= 0)
                close(r->ring_efd);
        if (r->msg_efd >= 0)
                close(r->msg_efd);
        struct reactor_msg *m = r->msg_head;
        while (m) {
                struct reactor_msg *next = m->next;
                free(m);
                m = next;
        }
        pthread_mutex_destroy(&r->msg_lock);
        free(r);
}

bool reactor_running(const struct reactor *r)
{
        return r->running;
}

unsigned reactor_index(const struct reactor *r)
{
        return r->index;
}

int reactor_add_fd(struct reactor *r, struct reactor_fd *rfd)
{
        struct epoll_event ev = {.events = rfd->events ? rfd->events : EPOLLIN, .data.ptr = rfd};
        rfd->events = ev.events;
        return epoll_ctl(r->epfd, EPOLL_CTL_ADD, rfd->fd, &ev);
}

int reactor_mod_fd(struct reactor *r, struct reactor_fd *rfd, uint32_t events)
{
        if (rfd->events == events)
                return 0;
        struct epoll_event ev = {.events = events, .data.ptr = rfd};
        rfd->events = events;
        return epoll_ctl(r->epfd, EPOLL_CTL_MOD, rfd->fd, &ev);
}

void reactor_del_fd(struct reactor *r, struct reactor_fd *rfd)
{
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, rfd->fd, NULL);
        for (int i = r->batch_next; i < r->batch_n; i++)
                if (r->batch[i].data.ptr == rfd)
                        r->batch[i].data.ptr = NULL; /* skipped: rfd may be freed by then */
}

struct io_uring_sqe *reactor_get_sqe(struct reactor *r)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        if (!sqe) {
                /* Submission queue full: push what is queued and try once more. */
                io_uring_submit(&r->ring);
                sqe = io_uring_get_sqe(&r->ring);
        }
        if (sqe)
                r->ring_pending++;
        return sqe;
}

void reactor_ring_submit(struct reactor *r)
{
        if (!r->ring_pending)
                return;
        r->ring_pending = 0;
        int rc = io_uring_submit(&r->ring);
        if (rc < 0)
                log_err("reactor %u: io_uring_submit: %s", r->index, strerror(-rc));
}

void reactor_timer_arm(struct reactor *r, struct reactor_timer *t, uint64_t delay_ns)
{
        if (t->armed)
                reactor_timer_cancel(r, t);
        t->deadline_ns = reactor_now_ns() + delay_ns;
        struct reactor_timer **pp = &r->timers;
        while (*pp && (*pp)->deadline_ns <= t->deadline_ns)
                pp = &(*pp)->next;
        t->next = *pp;
        *pp = t;
        t->armed = true;
}

void reactor_timer_cancel(struct reactor *r, struct reactor_timer *t)
{
        if (!t->armed)
                return;
        for (struct reactor_timer **pp = &r->timers; *pp; pp = &(*pp)->next) {
                if (*pp == t) {
                        *pp = t->next;
                        break;
                }
        }
        t->armed = false;
        t->next = NULL;
}

void reactor_defer(struct reactor *r, struct reactor_deferred *d)
{
        if (d->queued)
                return;
        d->queued = true;
        d->next = NULL;
        if (r->deferred_tail)
                r->deferred_tail->next = d;
        else
                r->deferred_head = d;
        r->deferred_tail = d;
}

void reactor_defer_cancel(struct reactor *r, struct reactor_deferred *d)
{
        if (!d->queued)
                return;
        struct reactor_deferred *prev = NULL;
        for (struct reactor_deferred *x = r->deferred_head; x; prev = x, x = x->next) {
                if (x != d)
                        continue;
                if (prev)
                        prev->next = d->next;
                else
                        r->deferred_head = d->next;
                if (r->deferred_tail == d)
                        r->deferred_tail = prev;
                break;
        }
        d->queued = false;
        d->next = NULL;
}

static void run_deferred(struct reactor *r)
{
        while (r->deferred_head) {
                struct reactor_deferred *d = r->deferred_head;
                r->deferred_head = d->next;
                if (!r->deferred_head)
                        r->deferred_tail = NULL;
                d->queued = false;
                d->next = NULL;
                d->cb(d);
        }
}

static int next_timeout_ms(struct reactor *r)
{
        if (r->deferred_head)
                return 0;
        if (!r->timers)
                return 1000;
        uint64_t now = reactor_now_ns();
        if (r->timers->deadline_ns <= now)
                return 0;
        uint64_t ms = (r->timers->deadline_ns - now + 999999) / 1000000;
        return ms > 1000 ? 1000 : (int)ms;
}

static void run_timers(struct reactor *r)
{
        uint64_t now = reactor_now_ns();
        while (r->timers && r->timers->deadline_ns <= now) {
                struct reactor_timer *t = r->timers;
                r->timers = t->next;
                t->armed = false;
                t->next = NULL;
                t->cb(t);
        }
}

void reactor_poll_once(struct reactor *r, int max_wait_ms)
{
        struct epoll_event events[REACTOR_MAX_EVENTS];
        reactor_ring_submit(r);
        int timeout = next_timeout_ms(r);
        if (max_wait_ms >= 0 && timeout > max_wait_ms)
                timeout = max_wait_ms;
        int n = epoll_wait(r->epfd, events, REACTOR_MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
                log_err("reactor %u: epoll_wait: %s", r->index, strerror(errno));
                return;
        }
        r->batch = events;
        r->batch_n = n;
        for (int i = 0; i < n; i++) {
                struct reactor_fd *rfd = events[i].data.ptr;
                r->batch_next = i + 1;
                if (rfd)
                        rfd->cb(rfd, events[i].events);
        }
        r->batch_n = 0;
        r->batch = NULL;
        run_deferred(r);
        ring_reap(r);
        run_deferred(r);
        run_timers(r);
        run_deferred(r);
}

static void *reactor_loop(void *arg)
{
        struct reactor *r = arg;
        while (!__atomic_load_n(&r->stop_requested, __ATOMIC_ACQUIRE))
                reactor_poll_once(r, -1);
        return NULL;
}

int reactor_start(struct reactor *r)
{
        int rc = pthread_create(&r->thread, NULL, reactor_loop, r);
        if (rc) {
                log_err("reactor %u: pthread_create: %s", r->index, strerror(rc));
                return -1;
        }
        r->running = true;
        return 0;
}

static void stop_flag(void *arg)
{
        struct reactor *r = arg;
        __atomic_store_n(&r->stop_requested, true, __ATOMIC_RELEASE);
}

void reactor_stop(struct reactor *r)
{
        if (!r->running)
                return;
        reactor_call(r, stop_flag, r);
        pthread_join(r->thread, NULL);
        r->running = false;
}

int reactor_call(struct reactor *r, void (*fn)(void *arg), void *arg)
{
        struct reactor_msg *m = malloc(sizeof(*m));
        if (!m)
                return -1;
        *m = (struct reactor_msg){.fn = fn, .arg = arg};
        pthread_mutex_lock(&r->msg_lock);
        if (r->msg_tail)
                r->msg_tail->next = m;
        else
                r->msg_head = m;
        r->msg_tail = m;
        pthread_mutex_unlock(&r->msg_lock);
        uint64_t one = 1;
        if (write(r->msg_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                return -1;
        return 0;
}

void reactor_post(struct reactor *r, void (*fn)(void *arg), void *arg)
{
        while (reactor_call(r, fn, arg) < 0)
                usleep(1000); /* out of memory for the message: wait, never drop it */
}

struct sync_call {
        void (*fn)(void *arg);
        void *arg;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
};

static void run_sync_call(void *arg)
{
        struct sync_call *sc = arg;
        sc->fn(sc->arg);
        pthread_mutex_lock(&sc->lock);
        sc->done = true;
        pthread_cond_signal(&sc->cond);
        pthread_mutex_unlock(&sc->lock);
}

int reactor_call_sync(struct reactor *r, void (*fn)(void *arg), void *arg)
{
        struct sync_call sc = {.fn = fn, .arg = arg};
        pthread_mutex_init(&sc.lock, NULL);
        pthread_cond_init(&sc.cond, NULL);
        int rc = reactor_call(r, run_sync_call, &sc);
        if (rc == 0) {
                pthread_mutex_lock(&sc.lock);
                while (!sc.done)
                        pthread_cond_wait(&sc.cond, &sc.lock);
                pthread_mutex_unlock(&sc.lock);
        }
        pthread_cond_destroy(&sc.cond);
        pthread_mutex_destroy(&sc.lock);
        return rc;
}
