/* log.c - stderr messages, one write(2) per line, and the access log. */
#include "log.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "fileio.h"
#include "utf8.h"

/* The date and time to the second is formatted once a second per thread:
 * gmtime_r and strftime on every access-log line were a visible part of
 * a small request's cost. */
void srv_utc_now(char *buf, size_t len) {
    static _Thread_local time_t second = -1;
    static _Thread_local char date[32];
    static _Thread_local size_t date_len;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != second) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        date_len = strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
        second = tv.tv_sec;
    }
    if (len < date_len + 6) { /* ".mmmZ" and the NUL do not fit: as much of the date as does */
        snprintf(buf, len, "%s", date);
        return;
    }
    int ms = (int)(tv.tv_usec / 1000);
    memcpy(buf, date, date_len);
    char *p = buf + date_len;
    p[0] = '.', p[1] = (char)('0' + ms / 100), p[2] = (char)('0' + ms / 10 % 10), p[3] = (char)('0' + ms % 10);
    p[4] = 'Z', p[5] = '\0';
}

static srv_log_format message_format = SRV_LOG_TEXT;

void srv_log_set_format(srv_log_format format) { message_format = format; }

void srv_log(const char *fmt, ...) {
    char msg[1024], ts[40];
    srv_utc_now(ts, sizeof ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[2400];
    size_t len;
    if (message_format == SRV_LOG_JSON) {
        const char *level = strncmp(msg, "warning: ", 9) == 0 ? "warning"
                            : strncmp(msg, "cannot start: ", 14) == 0 ? "error"
                                                                      : "info";
        len = (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level);
        srv_json_escape(line, sizeof line - 4, &len, msg);
        len += (size_t)snprintf(line + len, sizeof line - len, "\"}");
    } else {
        len = (size_t)snprintf(line, sizeof line - 1, "%s dae-server: %s", ts, msg);
    }
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    (void)dae_write_all(2, line, len); /* a log must never stop the server */
}

/* Appends s to buf (room for cap bytes, *used so far) as printable ASCII
 * with \xNN for the rest, and for a space or a backslash, which would
 * split or blur the field. Truncates quietly at cap. */
static void put_escaped(char *buf, size_t cap, size_t *used, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s != '\0' && *used + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c >= 0x7f || c == ' ' || c == '\\') {
            buf[(*used)++] = '\\';
            buf[(*used)++] = 'x';
            buf[(*used)++] = hex[c >> 4];
            buf[(*used)++] = hex[c & 15];
        } else {
            buf[(*used)++] = (char)c;
        }
    }
}

/* The access log's appenders: each adds to buf (room for cap bytes,
 * *used so far) what fits of its text, leaving a byte spare. Not
 * snprintf: OpenBLAS brings in libquadmath, whose printf hooks send every
 * printf of the process down glibc's slow path (a line's eight calls took
 * 0.9 us of a request; these take 0.1). */
static void put_bytes(char *buf, size_t cap, size_t *used, const char *s, size_t n) {
    if (*used + 1 >= cap) return;
    if (n > cap - 1 - *used) n = cap - 1 - *used;
    memcpy(buf + *used, s, n);
    *used += n;
}

static void put_str(char *buf, size_t cap, size_t *used, const char *s) { put_bytes(buf, cap, used, s, strlen(s)); }

static void put_uint(char *buf, size_t cap, size_t *used, unsigned long long v) {
    char digits[24];
    size_t n = sizeof digits;
    do digits[--n] = (char)('0' + v % 10); while ((v /= 10) != 0);
    put_bytes(buf, cap, used, digits + n, sizeof digits - n);
}

/* seconds as milliseconds to 3 decimals, as "%.3f" prints seconds * 1e3:
 * a double times 1000 is exact in a long double (64-bit mantissa), and
 * rintl rounds it to even as printf does. */
static void put_ms(char *buf, size_t cap, size_t *used, double seconds) {
    double ms = seconds * 1e3;
    if (!(ms >= 0.0 && ms < 1e15)) { /* not a duration: as printf has it */
        char text[64];
        put_bytes(buf, cap, used, text, (size_t)snprintf(text, sizeof text, "%.3f", ms));
        return;
    }
    unsigned long long t = (unsigned long long)rintl((long double)ms * 1000.0L);
    char frac[4] = {'.', (char)('0' + t / 100 % 10), (char)('0' + t / 10 % 10), (char)('0' + t % 10)};
    put_uint(buf, cap, used, t / 1000);
    put_bytes(buf, cap, used, frac, sizeof frac);
}

/* The access log's lines waiting to go out, and the thread that writes
 * them out every SRV_ACCESS_LINGER_MS. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    char buf[SRV_ACCESS_BUFFER];
    size_t used;
    int running, stop;
    pthread_t thread;
} waiting = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void write_out_locked(void) {
    if (waiting.used > 0) (void)dae_write_all(1, waiting.buf, waiting.used); /* a log must never stop the server */
    waiting.used = 0;
}

static void access_put(const char *line, size_t len, int busy) {
    pthread_mutex_lock(&waiting.mu);
    if (waiting.used + len > sizeof waiting.buf) write_out_locked();
    memcpy(waiting.buf + waiting.used, line, len);
    waiting.used += len;
    if (!busy || !waiting.running) write_out_locked();
    pthread_mutex_unlock(&waiting.mu);
}

/* What goes before each field of an access-log line (and after the
 * optional ones, and at the end), and how the free-form ones are escaped:
 * the text format and JSON. */
typedef struct {
    const char *time, *remote, *method, *path, *route, *status, *bytes, *duration, *optional[4], *optional_end, *end;
    void (*escape)(char *buf, size_t cap, size_t *used, const char *s);
} line_format;

static const line_format TEXT_LINE = {"", " ", " ", " ", " route=", " status=", " bytes=", " duration_ms=",
                                      {" client=", " model=", " error=", " request_id="}, "", "", put_escaped};
static const line_format JSON_LINE = {"{\"time\":\"", "\",\"remote\":\"", "\",\"method\":\"", "\",\"path\":\"",
                                      "\",\"route\":\"", "\",\"status\":", ",\"bytes\":", ",\"duration_ms\":",
                                      {",\"client\":\"", ",\"model\":\"", ",\"error\":\"", ",\"request_id\":\""},
                                      "\"", "}", srv_json_escape};

void srv_access_log(srv_log_format format, const srv_access *a, int busy) {
    if (format == SRV_LOG_OFF) return;
    const line_format *f = format == SRV_LOG_JSON ? &JSON_LINE : &TEXT_LINE;
    char line[1400], ts[40];
    size_t used = 0, cap = sizeof line - 2;
    srv_utc_now(ts, sizeof ts);
    put_str(line, cap, &used, f->time);
    put_str(line, cap, &used, ts);
    put_str(line, cap, &used, f->remote);
    f->escape(line, cap, &used, a->remote);
    put_str(line, cap, &used, f->method);
    f->escape(line, cap, &used, a->method);
    put_str(line, cap, &used, f->path);
    f->escape(line, cap, &used, a->path);
    put_str(line, cap, &used, f->route);
    put_str(line, cap, &used, a->route);
    put_str(line, cap, &used, f->status);
    put_uint(line, cap, &used, (unsigned)a->status);
    put_str(line, cap, &used, f->bytes);
    put_uint(line, cap, &used, a->bytes);
    put_str(line, cap, &used, f->duration);
    put_ms(line, cap, &used, a->duration_s);
    const char *optional[] = {a->client, a->model, a->error, a->request_id};
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++)
        if (optional[i] != NULL) {
            put_str(line, cap, &used, f->optional[i]);
            put_str(line, cap, &used, optional[i]);
            put_str(line, cap, &used, f->optional_end);
        }
    put_str(line, cap, &used, f->end);
    line[used++] = '\n';
    access_put(line, used, busy);
}

static void *write_out_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&waiting.mu);
    while (!waiting.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SRV_ACCESS_LINGER_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&waiting.wake, &waiting.mu, &ts);
        write_out_locked();
    }
    write_out_locked();
    pthread_mutex_unlock(&waiting.mu);
    return NULL;
}

int srv_access_log_start(void) {
    pthread_mutex_lock(&waiting.mu);
    waiting.stop = 0;
    waiting.running = pthread_create(&waiting.thread, NULL, write_out_main, NULL) == 0;
    pthread_mutex_unlock(&waiting.mu);
    return waiting.running ? 0 : -1;
}

void srv_access_log_stop(void) {
    pthread_mutex_lock(&waiting.mu);
    int running = waiting.running;
    waiting.stop = 1, waiting.running = 0;
    pthread_cond_signal(&waiting.wake);
    pthread_mutex_unlock(&waiting.mu);
    if (running) pthread_join(waiting.thread, NULL);
}
