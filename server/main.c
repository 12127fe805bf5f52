/* main.c - dae-server: reads the configuration, loads the models, starts
 * the inference workers and the HTTP daemon, and on SIGTERM or SIGINT
 * drains (readiness off, no new connections, in-flight requests finish
 * within --drain-timeout) and exits 0, at most STOP_GRACE_S after the
 * drain deadline whatever clients do. A second signal cuts the drain
 * short. Exit status: 0 after a clean shutdown, 1 when it cannot start,
 * 2 for a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "clock.h"
#include "config.h"
#include "gemm.h"
#include "http.h"
#include "inference.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "train_http.h"
#include "training.h"

/* Longest the shutdown goes on past the drain deadline: the time to send
 * the 503s of cancelled requests, stop the workers and the training job
 * and close the connections that are left. */
#define STOP_GRACE_S 0.8
/* Of which the 503s of requests cancelled at the deadline get this much. */
#define CANCEL_GRACE_S 0.3

/* SIGTERM and SIGINT are caught by a handler that writes the signal's
 * number into this pipe; main() reads it. A handler (rather than blocking
 * the signals and calling sigwait) works whichever thread the kernel
 * picks, including threads that libraries start before main(), such as
 * OpenBLAS's, which would otherwise die of a signal sent while the main
 * thread is not waiting for one. */
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    ssize_t n = write(signal_pipe[1], &c, 1);
    (void)n; /* a full pipe already holds a signal to act on */
    errno = saved;
}

/* Installs on_signal for SIGTERM and SIGINT, ignores SIGPIPE. Returns 0,
 * or -1 when the pipe cannot be made. */
static int signals_init(void) {
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Waits up to timeout_ms (-1: for ever) for a caught signal; returns its
 * number, or 0 when the time ran out. */
static int wait_signal(int timeout_ms) {
    struct pollfd p = {signal_pipe[0], POLLIN, 0};
    for (;;) {
        int rc = poll(&p, 1, timeout_ms);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) return 0;
        unsigned char c;
        if (read(signal_pipe[0], &c, 1) == 1) return c;
    }
}

/* While a training job runs, a request's wake-up preempts the job's threads. */
static void workers_preempt_training(void *infer, int running) { srv_infer_set_preemptive(infer, running); }

/* Waits up to seconds for every in-flight request to be answered; returns
 * 1 when they were, 0 when the time ran out or another signal came. */
static int wait_in_flight(srv_http *http, double seconds) {
    double deadline = dae_now_s() + seconds;
    while (srv_http_in_flight(http) > 0) {
        double left = deadline - dae_now_s();
        if (left <= 0) return 0;
        int sig = wait_signal(left < 0.01 ? 1 : 10);
        if (sig > 0 && sig != SIGHUP) {
            srv_log("%s again: stopping without waiting", strsignal(sig));
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    srv_config cfg;
    int rc = srv_config_parse(&cfg, argc, argv);
    if (rc == SRV_CONFIG_HELP) return 0;
    if (rc != 0) return 2;
    srv_budget_malloc_policy();

    if (signals_init() != 0) {
        srv_log("cannot start: no pipe for signals: %s", strerror(errno));
        return 1;
    }

    static srv_metrics metrics;
    srv_metrics_init(&metrics);
    char err[DAE_ERR_LEN] = "";
    srv_registry *registry = srv_registry_open(&cfg, err, sizeof err);
    if (registry == NULL) {
        srv_log("cannot start: %s", err);
        return 1;
    }
    srv_infer *infer = srv_infer_start(&cfg, &metrics, err, sizeof err);
    if (infer == NULL) {
        srv_log("cannot start: %s", err);
        srv_registry_free(registry);
        return 1;
    }
    srv_training *training = srv_training_start(&cfg, registry, err, sizeof err);
    srv_train_http *train = training != NULL ? srv_train_http_new(training, &cfg) : NULL;
    if (train == NULL) {
        srv_log("cannot start: %s", training != NULL ? "out of memory" : err);
        srv_training_stop(training, 60);
        srv_training_free(training);
        srv_infer_stop(infer);
        srv_registry_free(registry);
        return 1;
    }
    srv_training_on_running(training, workers_preempt_training, infer);
    srv_http *http = srv_http_start(&cfg, registry, infer, &metrics, train, err, sizeof err);
    if (http == NULL) {
        srv_log("cannot start: %s", err);
        srv_train_http_free(train);
        srv_training_stop(training, 60);
        srv_training_free(training);
        srv_infer_stop(infer);
        srv_registry_free(registry);
        return 1;
    }
    srv_model *def = srv_registry_acquire(registry, NULL);
    int v6 = strchr(cfg.bind, ':') != NULL;
    if (cfg.log_format != SRV_LOG_OFF && srv_access_log_start() != 0)
        srv_log("warning: cannot start the access log's writer thread: each line is written at once");
    char isa_err[160];
    if (dae_isa_env_check(isa_err, sizeof isa_err) != 0) srv_log("warning: %s", isa_err);
    srv_log("dae-server %s listening on http://%s%s%s:%d (default model %s %s, %d model%s, %d worker%s, %d for "
            "small images, max batch %d, %s kernels)",
            DAE_SERVER_VERSION, v6 ? "[" : "", cfg.bind, v6 ? "]" : "", srv_http_port(http), def->name, def->version,
            srv_registry_count(registry), srv_registry_count(registry) == 1 ? "" : "s", cfg.workers,
            cfg.workers == 1 ? "" : "s", cfg.small_workers, cfg.max_batch, dae_isa_name(dae_gemm_isa()));
    srv_model_release(def);

    /* SIGHUP and every --reload-interval: rescan the models directory and
     * follow its ACTIVE file. */
    int sig;
    double next_reload = dae_now_s() + cfg.reload_interval_s;
    for (;;) {
        int ms = -1;
        if (cfg.reload_interval_s > 0) {
            double left = next_reload - dae_now_s();
            ms = left <= 0 ? 0 : (int)(left * 1000) + 1;
        }
        sig = wait_signal(ms);
        if (sig == SIGHUP || sig == 0) {
            if (sig == SIGHUP) srv_log("SIGHUP: rescanning %s", cfg.models_dir);
            srv_registry_reload(registry);
            next_reload = dae_now_s() + cfg.reload_interval_s;
            continue;
        }
        break;
    }
    /* The drain: every step below is bounded, so the process ends by the
     * deadline plus STOP_GRACE_S even with clients that trickle a body,
     * never read an answer, or hold an event stream; the running training
     * job is told to stop at once (jobs are not resumed; it would be
     * recorded interrupted anyway). */
    double deadline = dae_now_s() + cfg.drain_s;
    srv_log("%s: draining (readyz 503, no new connections, up to %d s for %ld in-flight requests)", strsignal(sig),
            cfg.drain_s, srv_http_in_flight(http));
    srv_training_quiesce(training);
    srv_http_drain(http);
    if (!wait_in_flight(http, deadline - dae_now_s())) {
        if (dae_now_s() < deadline) deadline = dae_now_s(); /* a second signal: the deadline is now */
        srv_log("drain deadline: answering %ld unfinished requests 503 and closing the rest", srv_http_in_flight(http));
        srv_infer_cancel_all(infer);
        wait_in_flight(http, CANCEL_GRACE_S);
    }
    /* Workers first (they resume connections), then the daemon (whose last
     * connections give their memory back to the inference budget), then
     * the rest. */
    srv_infer_join(infer);
    double left = deadline + STOP_GRACE_S - 0.3 - dae_now_s(); /* 0.3 s for the daemon's stop and the exit */
    int runner_stopped = srv_training_stop(training, left > 0.05 ? left : 0.05) == 0;
    srv_http_stop(http);
    srv_access_log_stop(); /* the lines still waiting, after the daemon's last */
    srv_train_http_free(train); /* after the daemon: its streams point into it */
    srv_infer_stop(infer);
    if (runner_stopped) {
        srv_training_free(training);
        srv_registry_free(registry);
    } /* else the training thread is inside a step and still uses both: exit without freeing them */
    srv_log("stopped");
    return 0;
}
