/* gate.c - the connection gate and the connection watchdog of dae-server
 * (see gate.h): accepting, reading request heads with MSG_PEEK, answering
 * malformed ones with the JSON error, admission with headroom for the
 * probes, and the deadlines of the connections libmicrohttpd holds. */
#include "gate.h"

#include "clients.h"
#include "httphead.h"
#include "proxies.h"
#include "utf8.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/* Connections answered and closing (lingering for the client to read the
 * answer) are held until the client has sent nothing for this long, and
 * at most CLOSING_MOST_S in all; at most CLOSING_MAX at once. */
#define CLOSING_LINGER_S 2.0
#define CLOSING_MOST_S 30.0
#define CLOSING_MAX 256
/* Bytes read and dropped from a connection the gate answered, at most. */
#define CLOSING_DISCARD_MAX (256 * 1024)
/* How often the watchdog looks at the connections libmicrohttpd holds. */
#define WATCH_PERIOD_MS 100

/* ------------------------------------------------------------ records */

/* A connection in the gate: its head is being read, or it was answered
 * and is closing. */
typedef struct pending {
    int fd;
    int closing;
    double t_accept;       /* closing: the time it may be closed at */
    double t_cut;          /* closing: when it is closed whatever it sends */
    size_t discarded, discard_max;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct pending *prev, *next;
} pending;

typedef struct {
    pending *head, *tail; /* oldest first */
    int n;
} pending_list;

/* A connection libmicrohttpd holds. */
typedef struct conn_rec {
    int fd;
    unsigned long long id;
    struct MHD_Connection *conn; /* NULL until libmicrohttpd started it */
    srv_conn_phase phase;
    double t_phase;              /* when the phase began */
    double t_idle;               /* IDLE/HEAD: when the connection went idle */
    int kept_alive;              /* it has answered a request: what waits on it now is a new one */
    double t_unwritable;         /* STREAM: since when it cannot be written; 0: writable */
    int rdhup_ticks;             /* watchdog ticks the peer has been seen gone */
    int doomed;                  /* shut down by the watchdog or evicted */
    int counted;                 /* counts in admitted (and in its client's connections) */
    size_t linger_bytes;         /* answered before its body came: bytes to drop as it closes (0: none) */
    srv_client *client;          /* a reference, or NULL */
    void (*kick)(void *);        /* the event stream, or NULL */
    srv_client *stream_client;   /* a reference to the client its share counts the stream in, or NULL */
    void *kick_arg;
    struct conn_rec *prev, *next;
} conn_rec;

struct srv_gate {
    const srv_config *cfg;
    srv_metrics *metrics;
    struct MHD_Daemon *daemon;
    int listen_fd, epfd, wake_fd;
    int port;
    pthread_t thread, watchdog;
    int thread_started, watchdog_started;
    atomic_int stop, quiesce;
    /* The gate thread's own state. */
    pending_list heads, closing;
    atomic_long n_closing;     /* closing.n, for /metrics */
    pending *retired;          /* left the lists this round; freed after its events */
    pending *handed;           /* closed by libmicrohttpd, to linger (under mu) */
    char peek[SRV_HEAD_MAX + 1];
    /* Shared with the libmicrohttpd threads and the watchdog. */
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* wakes the watchdog at stop */
    conn_rec *recs_head, *recs_tail;
    conn_rec **by_fd;
    int fd_cap;
    int admitted, streams;
    unsigned long long next_id;
    atomic_long n_heads;       /* heads in the gate, for srv_gate_connections */
    srv_clients *clients;      /* who each connection's client is */
};

static void list_push(pending_list *l, pending *p) {
    p->next = NULL;
    p->prev = l->tail;
    if (l->tail != NULL) l->tail->next = p;
    else l->head = p;
    l->tail = p;
    l->n++;
}

static void list_remove(pending_list *l, pending *p) {
    if (p->prev != NULL) p->prev->next = p->next;
    else l->head = p->next;
    if (p->next != NULL) p->next->prev = p->prev;
    else l->tail = p->prev;
    p->prev = p->next = NULL;
    l->n--;
}

/* ------------------------------------------------------------ answers from the gate */

static const char *reason(int status) {
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Takes p out of the gate for good (its fd closed or handed over). It is
 * freed only after the round of epoll events it may still appear in: an
 * answer or an accept can close another connection whose event comes
 * later in the same round, and that event must find a record marked gone
 * (fd -1), not freed memory (800 aborted uploads made it a double free). */
static void retire(srv_gate *g, pending *p) {
    p->fd = -1;
    p->next = g->retired;
    g->retired = p;
}

static void free_retired(srv_gate *g) {
    while (g->retired != NULL) {
        pending *p = g->retired;
        g->retired = p->next;
        free(p);
    }
}

static void close_pending(srv_gate *g, pending *p) {
    list_remove(p->closing ? &g->closing : &g->heads, p);
    atomic_fetch_sub(p->closing ? &g->n_closing : &g->n_heads, 1);
    /* Out of the epoll set first: closing the descriptor does not take it
     * out while another one shares its socket (libmicrohttpd's, of a
     * connection handed over to linger, may not be closed yet). */
    epoll_ctl(g->epfd, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    retire(g, p);
}

/* Starts p's lingering close: the write side is shut (its answer sent),
 * and whatever the client still sends, up to discard_max bytes, is read
 * and dropped until it stops sending for a moment, so that the answer is
 * not lost to a reset. */
static void start_closing(srv_gate *g, pending *p, size_t discard_max) {
    shutdown(p->fd, SHUT_WR);
    if (g->closing.n >= CLOSING_MAX) close_pending(g, g->closing.head);
    double now = dae_now_s();
    p->closing = 1;
    p->discard_max = discard_max;
    p->t_accept = now + CLOSING_LINGER_S;
    p->t_cut = now + CLOSING_MOST_S;
    list_push(&g->closing, p);
    atomic_fetch_add(&g->n_closing, 1);
}

/* Answers p with the service's JSON error and starts its lingering close
 * (start_closing). The message is made here, not from request bytes, but
 * may hold quotes: it is escaped. */
static void answer_pending(srv_gate *g, pending *p, int status, const char *code, const char *message,
                           const srv_head *hi) {
    char body[512], head[256], out[800], escaped[384];
    size_t en = 0;
    srv_json_escape(escaped, sizeof escaped, &en, message);
    escaped[en] = '\0';
    int bn = snprintf(body, sizeof body, "{\"error\":{\"status\":%d,\"code\":\"%s\",\"message\":\"%s\"}}\n", status,
                      code, escaped);
    if (bn < 0 || (size_t)bn >= sizeof body) bn = (int)strlen(body);
    char retry[48] = "";
    if (status == 503) snprintf(retry, sizeof retry, "Retry-After: %d\r\n", g->cfg->retry_after_s);
    snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s"
                      "Connection: close\r\n\r\n",
                      status, reason(status), bn, retry);
    int on = snprintf(out, sizeof out, "%s%s", head, body);
    if (on > 0) {
        ssize_t sent = send(p->fd, out, (size_t)on, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent; /* an empty send buffer takes it whole; a client that left does not need it */
    }
    double now = dae_now_s();
    srv_metrics_request(g->metrics, SRV_ROUTE_UNKNOWN, status, now - p->t_accept);
    if (status == 408) srv_metrics_reject(g->metrics, SRV_REJECT_TIMEOUT);
    if (status == 503) srv_metrics_reject(g->metrics, SRV_REJECT_CONNECTIONS);
    char remote[INET6_ADDRSTRLEN];
    srv_addr_text((const struct sockaddr *)&p->addr, remote);
    srv_access a = {remote, hi != NULL ? hi->method : "-", hi != NULL ? hi->path : "-", "unknown", status,
                    (size_t)bn, now - p->t_accept, NULL, code, NULL, NULL};
    srv_access_log(g->cfg->log_format, &a, 0);
    list_remove(&g->heads, p);
    atomic_fetch_sub(&g->n_heads, 1);
    start_closing(g, p, CLOSING_DISCARD_MAX);
}

/* Reads and drops what a closing connection sent; closes it at its end.
 * A client still sending gets CLOSING_LINGER_S more from now. */
static void drain_closing(srv_gate *g, pending *p) {
    char buf[16384];
    size_t got = 0;
    while (1) {
        ssize_t n = recv(p->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            p->discarded += (size_t)n;
            if (p->discarded > p->discard_max) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (got > 0) {
                /* To the list's end, which stays in order of deadline
                 * (but for one held to t_cut, at most CLOSING_LINGER_S late). */
                double until = dae_now_s() + CLOSING_LINGER_S;
                p->t_accept = until < p->t_cut ? until : p->t_cut;
                list_remove(&g->closing, p);
                list_push(&g->closing, p);
            }
            return;
        }
        break; /* the client closed, or an error */
    }
    close_pending(g, p);
}

/* Lingers on the connections libmicrohttpd answered before their body
 * came and has closed (srv_gate_conn_closed). */
static void take_handed(srv_gate *g) {
    pthread_mutex_lock(&g->mu);
    pending *p = g->handed;
    g->handed = NULL;
    pthread_mutex_unlock(&g->mu);
    while (p != NULL) {
        pending *next = p->next;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p};
        if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, p->fd, &ev) != 0) {
            close(p->fd);
            free(p);
        } else {
            start_closing(g, p, p->discard_max);
            drain_closing(g, p); /* what came before epoll watched it */
        }
        p = next;
    }
}

/* ------------------------------------------------------------ admission */

/* Under the lock: r no longer counts as one of the connections admitted. */
static void uncount(srv_gate *g, conn_rec *r) {
    if (!r->counted) return;
    r->counted = 0;
    g->admitted--;
    if (r->client != NULL) r->client->connections--;
}

/* Under the lock: r's event stream no longer counts. */
static void stream_uncount(srv_gate *g, conn_rec *r) {
    g->streams--;
    if (r->stream_client != NULL) r->stream_client->streams--;
}

static void rec_unlink(srv_gate *g, conn_rec *r) {
    if (r->prev != NULL) r->prev->next = r->next;
    else g->recs_head = r->next;
    if (r->next != NULL) r->next->prev = r->prev;
    else g->recs_tail = r->prev;
    if (r->fd >= 0 && r->fd < g->fd_cap && g->by_fd[r->fd] == r) g->by_fd[r->fd] = NULL;
    uncount(g, r);
    if (r->kick != NULL) stream_uncount(g, r);
}

/* Frees an unlinked record (the gate's lock need not be held). */
static void rec_free(srv_gate *g, conn_rec *r) {
    srv_clients_put(g->clients, r->client);
    srv_clients_put(g->clients, r->stream_client);
    free(r);
}

/* Under the lock: shuts rec's socket so libmicrohttpd sees the connection
 * end at once; an event stream is woken so it gets there. */
static void doom(srv_gate *g, conn_rec *r, int timeout) {
    if (r->doomed) return;
    r->doomed = 1;
    shutdown(r->fd, SHUT_RDWR);
    if (r->kick != NULL) r->kick(r->kick_arg);
    if (timeout) srv_metrics_reject(g->metrics, SRV_REJECT_TIMEOUT);
}

/* Under the lock: closes the oldest kept-alive connection that is between
 * requests or reading its next head, to make room. Returns 1 if one was
 * found. Its slot is free at once (the close completes in libmicrohttpd).
 * A new connection is never one: the gate admitted it with its whole
 * request head, which libmicrohttpd may not have read yet. */
static int evict_idle(srv_gate *g) {
    conn_rec *best = NULL;
    for (conn_rec *r = g->recs_head; r != NULL; r = r->next)
        if (r->counted && !r->doomed && r->conn != NULL && r->kept_alive &&
            (r->phase == SRV_CONN_IDLE || r->phase == SRV_CONN_HEAD) && (best == NULL || r->t_idle < best->t_idle))
            best = r;
    if (best == NULL) return 0;
    doom(g, best, 0);
    uncount(g, best);
    return 1;
}

/* Under the lock, when every connection is in use by requests: closes
 * one connection of the client holding the most, if that is more than
 * the newcomer's client (cl, NULL: none) holds, so that no one client
 * can keep the others out. Its connection that has waited longest for a
 * request head or body goes first, then the one longest answering (an
 * event stream never). Returns 1 if one was closed. */
static int evict_for(srv_gate *g, const srv_client *cl) {
    conn_rec *best = NULL;
    int have = cl != NULL ? cl->connections : 0;
    for (conn_rec *r = g->recs_head; r != NULL; r = r->next) {
        if (!r->counted || r->doomed || r->conn == NULL || r->client == NULL || r->phase == SRV_CONN_STREAM ||
            r->client->connections <= have)
            continue;
        if (best == NULL || r->client->connections > best->client->connections) {
            best = r;
            continue;
        }
        if (r->client != best->client) continue;
        int late = r->phase == SRV_CONN_ANSWER, best_late = best->phase == SRV_CONN_ANSWER;
        if (late < best_late || (late == best_late && r->t_phase < best->t_phase)) best = r;
    }
    if (best == NULL) return 0;
    doom(g, best, 0);
    uncount(g, best);
    srv_metrics_reject(g->metrics, SRV_REJECT_CLIENT_SHARE);
    return 1;
}

/* Hands p (its head complete) to libmicrohttpd when there is room. */
static void admit(srv_gate *g, pending *p, const srv_head *hi) {
    int limit = g->cfg->max_connections + (hi->probe ? SRV_GATE_PROBE_HEADROOM : 0);
    srv_client *cl = srv_clients_get(g->clients, (const struct sockaddr *)&p->addr);
    pthread_mutex_lock(&g->mu);
    if (g->admitted >= limit && !evict_idle(g) && !evict_for(g, cl)) {
        pthread_mutex_unlock(&g->mu);
        srv_clients_put(g->clients, cl);
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the server has its maximum of %d connections open, and no client holds more of them than you; "
                 "retry shortly",
                 g->cfg->max_connections);
        answer_pending(g, p, 503, "too_many_connections", msg, hi);
        return;
    }
    conn_rec *r = calloc(1, sizeof *r);
    if (r == NULL || p->fd >= g->fd_cap) {
        pthread_mutex_unlock(&g->mu);
        srv_clients_put(g->clients, cl);
        free(r);
        answer_pending(g, p, 503, "out_of_memory", "the server is out of memory; retry shortly", hi);
        return;
    }
    /* A record left on this fd number belongs to a connection that
     * libmicrohttpd dropped without a notice: forget it. */
    conn_rec *stale = g->by_fd[p->fd];
    if (stale != NULL) rec_unlink(g, stale);
    double now = dae_now_s();
    r->fd = p->fd;
    r->id = ++g->next_id;
    r->phase = SRV_CONN_HEAD;
    r->t_phase = now;
    r->t_idle = p->t_accept;
    r->counted = 1;
    r->client = cl;
    if (cl != NULL) cl->connections++;
    r->prev = g->recs_tail;
    if (g->recs_tail != NULL) g->recs_tail->next = r;
    else g->recs_head = r;
    g->recs_tail = r;
    g->by_fd[p->fd] = r;
    g->admitted++;
    pthread_mutex_unlock(&g->mu);
    if (stale != NULL) rec_free(g, stale);
    epoll_ctl(g->epfd, EPOLL_CTL_DEL, p->fd, NULL);
    int fd = p->fd;
    list_remove(&g->heads, p);
    atomic_fetch_sub(&g->n_heads, 1);
    if (MHD_add_connection(g->daemon, fd, (const struct sockaddr *)&p->addr, p->addrlen) != MHD_YES) {
        /* libmicrohttpd closed the socket; no other thread accepts, so the
         * fd number cannot have been reused yet. */
        pthread_mutex_lock(&g->mu);
        int mine = g->by_fd[fd] == r;
        if (mine) rec_unlink(g, r);
        pthread_mutex_unlock(&g->mu);
        if (mine) rec_free(g, r);
    }
    retire(g, p);
}

/* Looks at what p has sent so far (events: its epoll events). */
static void examine(srv_gate *g, pending *p, unsigned events) {
    ssize_t n = recv(p->fd, g->peek, sizeof g->peek, MSG_PEEK | MSG_DONTWAIT);
    int gone = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_pending(g, p); /* closed (or reset) before a whole head: nothing to answer */
        return;
    }
    if (n < 0) {
        if (gone) close_pending(g, p);
        return;
    }
    srv_head hi;
    srv_head_result res = srv_head_parse(g->peek, (size_t)n, &hi);
    if (res == SRV_HEAD_INCOMPLETE) {
        if (gone) close_pending(g, p); /* the head can never complete */
        return;
    }
    if (res == SRV_HEAD_ERROR) {
        answer_pending(g, p, hi.status, hi.code, hi.message, &hi);
        return;
    }
    if (gone) {
        /* The client has stopped sending: hand it over only if the whole
         * request is here (a half-closed but complete request). */
        int avail = 0;
        if (hi.chunked || ioctl(p->fd, FIONREAD, &avail) != 0 || (long long)avail < (long long)hi.len + (hi.body > 0 ? hi.body : 0)) {
            close_pending(g, p);
            return;
        }
    }
    admit(g, p, &hi);
}

/* Accepts what the listening socket has, making room by turning away the
 * oldest head still being read when the gate holds --max-connections. */
static void accept_all(srv_gate *g) {
    for (int k = 0; k < 256; k++) {
        pending *p = calloc(1, sizeof *p);
        if (p == NULL) return;
        p->addrlen = sizeof p->addr;
        int fd = accept4(g->listen_fd, (struct sockaddr *)&p->addr, &p->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            free(p);
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: shed the oldest head to recover. */
                if (g->heads.head != NULL) close_pending(g, g->heads.head);
                else if (g->closing.head != NULL) close_pending(g, g->closing.head);
            }
            return;
        }
        p->fd = fd;
        p->t_accept = dae_now_s();
        if (g->heads.n >= g->cfg->max_connections) {
            answer_pending(g, g->heads.head, 503, "too_many_connections",
                           "the server holds too many connections that are still sending their request head; "
                           "retry shortly",
                           NULL);
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p};
        if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(p);
            continue;
        }
        list_push(&g->heads, p);
        atomic_fetch_add(&g->n_heads, 1);
    }
}

/* The gate thread: accepts, reads heads, answers, admits, and enforces
 * the head deadline. */
static void *gate_main(void *arg) {
    srv_gate *g = arg;
    struct epoll_event evs[64];
    while (!atomic_load(&g->stop)) {
        double now = dae_now_s(), next = now + 1.0;
        if (g->heads.head != NULL && g->heads.head->t_accept + g->cfg->header_timeout_s < next)
            next = g->heads.head->t_accept + g->cfg->header_timeout_s;
        if (g->closing.head != NULL && g->closing.head->t_accept < next) next = g->closing.head->t_accept;
        int wait_ms = next > now ? (int)((next - now) * 1000.0) + 1 : 0;
        int n = epoll_wait(g->epfd, evs, 64, wait_ms);
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &g->wake_fd) {
                uint64_t v;
                ssize_t rd = read(g->wake_fd, &v, sizeof v);
                (void)rd;
                if (atomic_load(&g->quiesce) && g->listen_fd >= 0) {
                    epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->listen_fd, NULL);
                    close(g->listen_fd);
                    g->listen_fd = -1;
                }
                take_handed(g);
            } else if (ptr == &g->listen_fd) {
                if (g->listen_fd >= 0) accept_all(g);
            } else {
                pending *p = ptr;
                if (p->fd < 0) continue; /* retired earlier this round */
                if (p->closing) drain_closing(g, p);
                else examine(g, p, evs[i].events);
            }
        }
        now = dae_now_s();
        while (g->heads.head != NULL && now - g->heads.head->t_accept > g->cfg->header_timeout_s) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request head did not arrive within %d s", g->cfg->header_timeout_s);
            answer_pending(g, g->heads.head, 408, "request_timeout", msg, NULL);
        }
        while (g->closing.head != NULL && g->closing.head->t_accept <= now) close_pending(g, g->closing.head);
        free_retired(g);
    }
    while (g->heads.head != NULL) close_pending(g, g->heads.head);
    while (g->closing.head != NULL) close_pending(g, g->closing.head);
    free_retired(g);
    return NULL;
}

/* ------------------------------------------------------------ the watchdog */

/* The watchdog thread: every WATCH_PERIOD_MS, polls the connections
 * libmicrohttpd holds (POLLRDHUP: the client went away; POLLOUT: an event
 * stream can be written) and applies the phase deadlines. */
static void *watchdog_main(void *arg) {
    srv_gate *g = arg;
    struct pollfd *fds = NULL;
    conn_rec **who = NULL;
    size_t cap = 0;
    const srv_config *cfg = g->cfg;
    pthread_mutex_lock(&g->mu);
    while (!atomic_load(&g->stop)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WATCH_PERIOD_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (atomic_load(&g->stop)) break;
        size_t n = 0;
        for (conn_rec *r = g->recs_head; r != NULL; r = r->next) {
            if (r->doomed || r->conn == NULL || r->phase == SRV_CONN_ANSWER) continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                struct pollfd *nf = realloc(fds, nc * sizeof *nf);
                if (nf == NULL) break;
                fds = nf;
                conn_rec **nw = realloc(who, nc * sizeof *nw);
                if (nw == NULL) break;
                who = nw;
                cap = nc;
            }
            fds[n] = (struct pollfd){.fd = r->fd, .events = POLLRDHUP | (r->phase == SRV_CONN_STREAM ? POLLOUT : 0)};
            who[n++] = r;
        }
        if (n == 0) continue;
        if (poll(fds, n, 0) < 0) continue;
        double now = dae_now_s();
        for (size_t i = 0; i < n; i++) {
            conn_rec *r = who[i];
            short rev = fds[i].revents;
            int gone = (rev & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
            r->rdhup_ticks = gone ? r->rdhup_ticks + 1 : 0;
            switch (r->phase) {
            case SRV_CONN_IDLE:
                /* Kept alive: the next request may take the idle time to
                 * start, but not longer in total however it trickles in. */
                if (gone || now - r->t_idle > cfg->timeout_s) doom(g, r, !gone);
                break;
            case SRV_CONN_HEAD:
                /* (A client that half-closed after a whole request passes
                 * through this phase in microseconds: two ticks.) */
                if (r->rdhup_ticks >= 2) doom(g, r, 0);
                else if (now - r->t_phase > cfg->header_timeout_s || now - r->t_idle > cfg->timeout_s) doom(g, r, 1);
                break;
            case SRV_CONN_BODY:
                /* A client that closed mid-upload can never complete it.
                 * Two ticks in a row: a half-closed client whose whole
                 * body is already here leaves this phase first. */
                if (r->rdhup_ticks >= 2) doom(g, r, 0);
                else if (now - r->t_phase > cfg->body_timeout_s) doom(g, r, 1);
                break;
            case SRV_CONN_STREAM:
                if (gone) {
                    doom(g, r, 0);
                    break;
                }
                if (fds[i].revents & POLLOUT) {
                    r->t_unwritable = 0;
                } else if (r->t_unwritable == 0) {
                    r->t_unwritable = now;
                } else if (now - r->t_unwritable > cfg->timeout_s) {
                    doom(g, r, 1); /* the client stopped reading */
                }
                break;
            default: break;
            }
        }
    }
    pthread_mutex_unlock(&g->mu);
    free(fds);
    free(who);
    return NULL;
}

/* ------------------------------------------------------------ hooks */

static void wake(srv_gate *g) {
    uint64_t one = 1;
    if (g->wake_fd >= 0) {
        ssize_t w = write(g->wake_fd, &one, sizeof one);
        (void)w;
    }
}

void srv_gate_conn_started(srv_gate *g, struct MHD_Connection *c, void **socket_context) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    *socket_context = NULL;
    if (ci == NULL) return;
    int fd = ci->connect_fd;
    pthread_mutex_lock(&g->mu);
    conn_rec *r = fd >= 0 && fd < g->fd_cap ? g->by_fd[fd] : NULL;
    if (r != NULL && r->conn == NULL) {
        r->conn = c;
        *socket_context = r;
    }
    pthread_mutex_unlock(&g->mu);
}

/* A connection answered before its body came is handed to the gate thread
 * to linger: libmicrohttpd has sent the answer and shut the write side,
 * and closes its descriptor after this notice, so the gate keeps a copy. */
void srv_gate_conn_closed(srv_gate *g, void **socket_context) {
    conn_rec *r = *socket_context;
    if (r == NULL) return;
    *socket_context = NULL;
    pending *p = r->linger_bytes > 0 ? calloc(1, sizeof *p) : NULL;
    pthread_mutex_lock(&g->mu);
    if (p != NULL && !r->doomed && !atomic_load(&g->stop) && (p->fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0)) >= 0) {
        p->discard_max = r->linger_bytes;
        p->next = g->handed;
        g->handed = p;
    } else {
        free(p);
        p = NULL;
    }
    rec_unlink(g, r);
    pthread_mutex_unlock(&g->mu);
    rec_free(g, r);
    if (p != NULL) wake(g);
}

void srv_gate_linger(srv_gate *g, void *ctx, size_t discard_max) {
    conn_rec *r = ctx;
    if (r == NULL) return;
    pthread_mutex_lock(&g->mu);
    r->linger_bytes = discard_max;
    pthread_mutex_unlock(&g->mu);
}

void srv_gate_phase(srv_gate *g, void *ctx, srv_conn_phase phase) {
    conn_rec *r = ctx;
    if (r == NULL) return;
    double now = dae_now_s();
    pthread_mutex_lock(&g->mu);
    if (phase == SRV_CONN_IDLE) r->t_idle = now, r->kept_alive = 1;
    r->phase = phase;
    r->t_phase = now;
    r->rdhup_ticks = 0;
    r->t_unwritable = 0;
    pthread_mutex_unlock(&g->mu);
}

unsigned long long srv_gate_stream_begin(srv_gate *g, void *ctx, srv_client *client, void (*kick)(void *),
                                         void *arg) {
    conn_rec *r = ctx;
    unsigned long long token = 0;
    srv_client *ref = srv_clients_ref(g->clients, client); /* the clients' lock is never taken under the gate's */
    pthread_mutex_lock(&g->mu);
    int share = (int)srv_config_client_part(g->cfg, g->cfg->max_streams);
    if (r != NULL && r->kick == NULL && g->streams < g->cfg->max_streams && (ref == NULL || ref->streams < share)) {
        g->streams++;
        if (ref != NULL) ref->streams++;
        r->stream_client = ref;
        ref = NULL;
        r->kick = kick;
        r->kick_arg = arg;
        r->phase = SRV_CONN_STREAM;
        r->t_phase = dae_now_s();
        r->t_unwritable = 0;
        token = r->id;
    }
    pthread_mutex_unlock(&g->mu);
    srv_clients_put(g->clients, ref); /* when the stream did not begin */
    return token;
}

void srv_gate_stream_end(srv_gate *g, unsigned long long token) {
    if (token == 0) return;
    srv_client *ref = NULL;
    pthread_mutex_lock(&g->mu);
    for (conn_rec *r = g->recs_head; r != NULL; r = r->next)
        if (r->id == token) {
            if (r->kick != NULL) stream_uncount(g, r);
            r->kick = NULL;
            r->kick_arg = NULL;
            ref = r->stream_client;
            r->stream_client = NULL;
            if (r->phase == SRV_CONN_STREAM) r->phase = SRV_CONN_ANSWER;
            break;
        }
    pthread_mutex_unlock(&g->mu);
    srv_clients_put(g->clients, ref);
}

srv_client *srv_gate_client(void *ctx) {
    const conn_rec *r = ctx;
    /* Set before libmicrohttpd was given the connection, and not changed
     * until the record is freed after its close notice. */
    return r != NULL ? r->client : NULL;
}

srv_clients *srv_gate_clients(srv_gate *g) { return g->clients; }

long srv_gate_connections(srv_gate *g) {
    pthread_mutex_lock(&g->mu);
    long n = g->admitted;
    pthread_mutex_unlock(&g->mu);
    return n + atomic_load(&g->n_heads);
}

long srv_gate_closing(srv_gate *g) { return atomic_load(&g->n_closing); }

/* ------------------------------------------------------------ life cycle */

unsigned srv_gate_engine_limit(const srv_config *cfg) {
    return 2u * ((unsigned)cfg->max_connections + SRV_GATE_PROBE_HEADROOM) + 64u;
}

/* Raises the soft open-file limit to what the connection limits can use:
 * heads in the gate, connections in libmicrohttpd, closing ones, files. */
static int raise_fd_limit(const srv_config *cfg) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
    rlim_t want = (rlim_t)cfg->max_connections + srv_gate_engine_limit(cfg) + CLOSING_MAX + 256;
    if (rl.rlim_cur < want) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = old;
        if (rl.rlim_cur < want)
            srv_log("warning: the open-file limit is %llu, below the %llu that --max-connections %d can use",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)want, cfg->max_connections);
    }
    return rl.rlim_cur > (1u << 22) ? 1 << 22 : (int)rl.rlim_cur;
}

srv_gate *srv_gate_open(const srv_config *cfg, srv_metrics *metrics, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sslen;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    int dual = 0;
    if (inet_pton(AF_INET, cfg->bind, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
        sslen = sizeof *v4;
    } else if (inet_pton(AF_INET6, cfg->bind, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        sslen = sizeof *v6;
        /* "::" takes IPv4 clients too, as 0.0.0.0 would. */
        dual = IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr);
    } else {
        snprintf(err, errlen, "--bind %s: not an IPv4 or IPv6 address", cfg->bind);
        return NULL;
    }
    srv_gate *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->cfg = cfg;
    g->metrics = metrics;
    g->epfd = g->wake_fd = -1;
    g->fd_cap = raise_fd_limit(cfg);
    g->by_fd = calloc((size_t)g->fd_cap, sizeof *g->by_fd);
    g->clients = srv_clients_new();
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, v6only = !dual;
    if (g->listen_fd >= 0) setsockopt(g->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (g->listen_fd >= 0 && ss.ss_family == AF_INET6)
        setsockopt(g->listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    if (g->by_fd == NULL || g->clients == NULL || g->listen_fd < 0 || bind(g->listen_fd, (struct sockaddr *)&ss, sslen) != 0 ||
        listen(g->listen_fd, 1024) != 0) {
        if (errno == EADDRINUSE)
            snprintf(err, errlen,
                     "port %d of %s is already in use (another dae-server?); choose another with --port N or "
                     "DAE_PORT=N",
                     cfg->port, cfg->bind);
        else
            snprintf(err, errlen, "cannot listen on %s port %d: %s (not an address of this machine?)", cfg->bind,
                     cfg->port, strerror(errno));
        if (g->listen_fd >= 0) close(g->listen_fd);
        g->listen_fd = -1;
        srv_gate_free(g);
        return NULL;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(g->listen_fd, (struct sockaddr *)&bound, &blen);
    g->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return g;
}

int srv_gate_port(const srv_gate *g) { return g->port; }

int srv_gate_start(srv_gate *g, struct MHD_Daemon *daemon, char *err, size_t errlen) {
    g->daemon = daemon;
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &g->wake_fd};
    if (g->epfd < 0 || g->wake_fd < 0 || epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->listen_fd, &lev) != 0 ||
        epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->wake_fd, &wev) != 0) {
        snprintf(err, errlen, "cannot start the connection gate: %s", strerror(errno));
        return -1;
    }
    if (pthread_create(&g->thread, NULL, gate_main, g) != 0) {
        snprintf(err, errlen, "cannot start the connection gate thread");
        return -1;
    }
    g->thread_started = 1;
    if (pthread_create(&g->watchdog, NULL, watchdog_main, g) != 0) {
        snprintf(err, errlen, "cannot start the connection watchdog thread");
        return -1;
    }
    g->watchdog_started = 1;
    return 0;
}

void srv_gate_quiesce(srv_gate *g) {
    if (g == NULL) return;
    atomic_store(&g->quiesce, 1);
    wake(g);
    if (!g->thread_started && g->listen_fd >= 0) {
        close(g->listen_fd);
        g->listen_fd = -1;
    }
}

void srv_gate_stop(srv_gate *g) {
    if (g == NULL) return;
    atomic_store(&g->stop, 1);
    wake(g);
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->thread_started) pthread_join(g->thread, NULL);
    if (g->watchdog_started) pthread_join(g->watchdog, NULL);
    g->thread_started = g->watchdog_started = 0;
}

void srv_gate_free(srv_gate *g) {
    if (g == NULL) return;
    srv_gate_stop(g);
    while (g->recs_head != NULL) {
        conn_rec *r = g->recs_head;
        rec_unlink(g, r);
        rec_free(g, r);
    }
    while (g->handed != NULL) {
        pending *p = g->handed;
        g->handed = p->next;
        close(p->fd);
        free(p);
    }
    srv_clients_free(g->clients);
    if (g->listen_fd >= 0) close(g->listen_fd);
    if (g->epfd >= 0) close(g->epfd);
    if (g->wake_fd >= 0) close(g->wake_fd);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->by_fd);
    free(g);
}
