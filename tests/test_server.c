/* test_server.c - unit tests of dae-server's modules that need no network:
 * the multipart parser, the PNG writer, SHA-256, size parsing and the
 * configuration, the model registry, and the inference scheduler (requests of
 * many sizes batched together give exactly what dae_denoise_image gives;
 * cancelling finishes every request), the access log's lines (as printf
 * writes them). tests/server/run.sh covers the rest
 * over HTTP. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/gemm.h"
#include "../server/config.h"
#include "../server/http.h"
#include "../server/inference.h"
#include "../server/log.h"
#include "../server/multipart.h"
#include "../server/registry.h"
#include "../server/sha256.h"
#include "../server/utf8.h"
#include "image.h"
#include "modelfile.h"
#include "test_util.h"
#include "tile.h"

/* ----------------------------------------------------------- access log */

/* The access log formats its lines without printf (log.c): each line, but
 * for its time, is what printf makes of the fields, in both formats, for
 * durations whose milliseconds round either way at the third decimal,
 * odd fields (escaped in the text format's remote, method and path) and
 * the optional ones (a proxy's client, model, error, request id) there or
 * left out. */
Test(access_log, lines_are_what_printf_makes_of_the_fields, .init = cr_redirect_stdout) {
    static const double durations[] = {0.0, 5e-7, 0.0166495, 0.0166505, 0.000123456, 1.5e-3, 2.0000005, 93.9994999,
                                       3600.25};
    enum { N = sizeof durations / sizeof durations[0] };
    char want[2 * N][600];
    for (int i = 0; i < 2 * N; i++) {
        int json = i % 2;
        srv_access a = {.remote = i % 3 ? "127.0.0.1" : "::1", .method = "POST", .path = "/denoise",
                        .route = "denoise", .status = i % 4 ? 200 : 0, .bytes = (size_t)i * 123457,
                        .duration_s = durations[i / 2], .model = i % 5 ? "mnist" : NULL,
                        .error = i % 3 == 1 ? "too_large" : NULL,
                        .request_id = i % 7 ? "0123456789abcdef0123456789abcdef" : NULL,
                        .client = i % 6 < 2 ? "198.51.100.7" : i % 6 == 2 ? "2001:db8::7" : NULL};
        if (i == 4) a.path = "/a b\\c", a.method = "GE\tT"; /* escaped in the text format, as JSON in the other */
        srv_access_log(json ? SRV_LOG_JSON : SRV_LOG_TEXT, &a, 0);
        int n;
        if (json) {
            n = snprintf(want[i], sizeof want[i],
                         "\"remote\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"route\":\"%s\",\"status\":%d,"
                         "\"bytes\":%zu,\"duration_ms\":%.3f",
                         a.remote, i == 4 ? "GE\\tT" : a.method, i == 4 ? "/a b\\\\c" : a.path, a.route, a.status,
                         a.bytes, a.duration_s * 1e3);
            if (a.client) n += snprintf(want[i] + n, sizeof want[i] - n, ",\"client\":\"%s\"", a.client);
            if (a.model) n += snprintf(want[i] + n, sizeof want[i] - n, ",\"model\":\"%s\"", a.model);
            if (a.error) n += snprintf(want[i] + n, sizeof want[i] - n, ",\"error\":\"%s\"", a.error);
            if (a.request_id) n += snprintf(want[i] + n, sizeof want[i] - n, ",\"request_id\":\"%s\"", a.request_id);
            snprintf(want[i] + n, sizeof want[i] - n, "}");
        } else {
            n = snprintf(want[i], sizeof want[i], "%s %s %s route=%s status=%d bytes=%zu duration_ms=%.3f", a.remote,
                         i == 4 ? "GE\\x09T" : a.method, i == 4 ? "/a\\x20b\\x5cc" : a.path, a.route, a.status,
                         a.bytes, a.duration_s * 1e3);
            if (a.client) n += snprintf(want[i] + n, sizeof want[i] - n, " client=%s", a.client);
            if (a.model) n += snprintf(want[i] + n, sizeof want[i] - n, " model=%s", a.model);
            if (a.error) n += snprintf(want[i] + n, sizeof want[i] - n, " error=%s", a.error);
            if (a.request_id) snprintf(want[i] + n, sizeof want[i] - n, " request_id=%s", a.request_id);
        }
    }
    fflush(stdout);
    FILE *out = cr_get_redirected_stdout();
    char line[800];
    for (int i = 0; i < 2 * N; i++) {
        cr_assert(fgets(line, sizeof line, out) != NULL, "line %d missing", i);
        line[strcspn(line, "\n")] = '\0';
        /* past the time: "{"time":"...", or "TIME " */
        const char *rest = i % 2 ? strstr(line, "\",") + 2 : strchr(line, ' ') + 1;
        cr_assert_str_eq(rest, want[i], "line %d", i);
    }
}

/* ------------------------------------------------------------ multipart */

static dae_status find(const char *ctype, const char *body, const char **data, size_t *len) {
    char err[256];
    const uint8_t *d = NULL;
    dae_status st = srv_multipart_find(ctype, (const uint8_t *)body, strlen(body), "image", &d, len, err, sizeof err);
    *data = (const char *)d;
    return st;
}

Test(multipart, finds_the_image_field) {
    const char *body = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                       "Content-Type: image/png\r\n\r\nPNG\r\nDATA\r\n--XyZ--\r\n";
    const char *d;
    size_t n;
    cr_assert_eq(find("multipart/form-data; boundary=XyZ", body, &d, &n), DAE_OK);
    cr_assert_eq(n, 9);
    cr_assert(memcmp(d, "PNG\r\nDATA", 9) == 0);
}

Test(multipart, quoted_boundary_preamble_other_fields_and_case) {
    const char *body = "preamble\r\n--a b\r\nContent-Disposition: form-data; namespace=\"image\"; name=other\r\n\r\nx\r\n"
                       "--a b\r\ncontent-disposition: FORM-DATA; filename=\"x;y\"; name=image\r\n\r\n\r\n--a b--";
    const char *d;
    size_t n;
    cr_assert_eq(find("Multipart/Form-Data ; charset=x; boundary=\"a b\"", body, &d, &n), DAE_OK);
    cr_assert_eq(n, 0, "an empty field is found, with length 0");
}

Test(multipart, two_image_fields_are_refused) {
    const char *body = "--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\none\r\n"
                       "--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\ntwo\r\n--B--\r\n";
    const char *d;
    size_t n;
    cr_assert_eq(find("multipart/form-data; boundary=B", body, &d, &n), DAE_ERR_CONFLICT,
                 "a second image field is an error, not dropped");
}

Test(multipart, errors) {
    const char *d;
    size_t n;
    const char *ok = "--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nxyz\r\n--B--\r\n";
    cr_assert_eq(find("multipart/form-data", ok, &d, &n), DAE_ERR_FORMAT, "no boundary");
    cr_assert_eq(find("multipart/form-data; boundary=\"B", ok, &d, &n), DAE_ERR_FORMAT, "unclosed quote");
    cr_assert_eq(find("multipart/form-data; boundary=C", ok, &d, &n), DAE_ERR_FORMAT, "boundary absent");
    cr_assert_eq(find("multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nxyz",
                      &d, &n),
                 DAE_ERR_FORMAT, "part not closed");
    cr_assert_eq(find("multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"image\"", &d, &n),
                 DAE_ERR_FORMAT, "headers not ended");
    cr_assert_eq(find("multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--B--",
                      &d, &n),
                 DAE_ERR_NOT_FOUND);
    cr_assert_eq(find("multipart/form-data; boundary=B", "", &d, &n), DAE_ERR_FORMAT, "empty body");
    char longb[100];
    memset(longb, 'b', sizeof longb);
    longb[sizeof longb - 1] = '\0';
    char ctype[200];
    snprintf(ctype, sizeof ctype, "multipart/form-data; boundary=%s", longb);
    cr_assert_eq(find(ctype, ok, &d, &n), DAE_ERR_FORMAT, "boundary over 70 characters");
}

/* ------------------------------------------------------------ the HTTP edge */

/* The modules below the edge report dae_status; the HTTP statuses and
 * codes clients see are these, whatever the modules call them. */
Test(http_edge, statuses_become_the_documented_answers) {
    static const struct {
        srv_edge_kind kind;
        dae_status st;
        int http;
        const char *code;
    } cases[] = {
        {SRV_EDGE_IMAGE, DAE_ERR_FORMAT, 400, "invalid_image"},
        {SRV_EDGE_IMAGE, DAE_ERR_TOO_LARGE, 413, "too_many_pixels"},
        {SRV_EDGE_IMAGE, DAE_ERR_NOMEM, 503, "out_of_memory"},
        {SRV_EDGE_IMAGE, DAE_ERR_STOPPING, 503, "shutting_down"},
        {SRV_EDGE_IMAGE, DAE_ERR_IO, 500, "internal_error"},
        {SRV_EDGE_UPLOAD, DAE_ERR_NOT_FOUND, 400, "missing_image"},
        {SRV_EDGE_UPLOAD, DAE_ERR_FORMAT, 400, "invalid_multipart"},
        {SRV_EDGE_UPLOAD, DAE_ERR_BUSY, 503, "queue_full"},
        {SRV_EDGE_UPLOAD, DAE_ERR_STOPPING, 503, "draining"},
        {SRV_EDGE_MODEL, DAE_ERR_NOT_FOUND, 404, "model_not_found"},
        {SRV_EDGE_MODEL, DAE_ERR_IN_USE, 409, "model_active"},
        {SRV_EDGE_MODEL, DAE_ERR_INVALID, 409, "model_not_in_dir"},
        {SRV_EDGE_MODEL, DAE_ERR_IO, 500, "io_error"},
        {SRV_EDGE_MODEL, DAE_ERR_NO_SPACE, 507, "insufficient_storage"},
        {SRV_EDGE_MODEL_PUT, DAE_ERR_NO_SPACE, 507, "insufficient_storage"},
        {SRV_EDGE_DATASET, DAE_ERR_NO_SPACE, 507, "insufficient_storage"},
        {SRV_EDGE_TRAIN_SUBMIT, DAE_ERR_NO_SPACE, 507, "insufficient_storage"},
        {SRV_EDGE_ROUTE, DAE_ERR_STOPPING, 503, "draining"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *code = NULL;
        cr_assert_eq(srv_http_error_of(cases[i].kind, cases[i].st, &code), cases[i].http, "case %zu", i);
        cr_assert_str_eq(code, cases[i].code, "case %zu", i);
    }
}

/* A full disk's sentence names the server's files: the client gets one
 * that does not (the log keeps the module's). */
Test(http_edge, a_full_disk_is_told_without_the_servers_paths) {
    const char *msg = "/srv/dae/models/m.safetensors: write of /srv/dae/models/m.tmp failed: No space left on device";
    const char *told = srv_http_error_message(DAE_ERR_NO_SPACE, msg);
    cr_assert_null(strstr(told, "/srv"), "%s", told);
    cr_assert_not_null(strstr(told, "no space left"), "%s", told);
    cr_assert_eq(srv_http_error_message(DAE_ERR_IO, msg), msg);
}

Test(multipart, is_form) {
    cr_assert(srv_multipart_is_form("multipart/form-data; boundary=x"));
    cr_assert(srv_multipart_is_form("  MULTIPART/FORM-DATA"));
    cr_assert_not(srv_multipart_is_form("multipart/form-datax"));
    cr_assert_not(srv_multipart_is_form("image/png"));
    cr_assert_not(srv_multipart_is_form(NULL));
}

/* ------------------------------------------------------------ PNG out */

/* Encodes a w x h image of c channels with a pattern, decodes it back
 * and compares every sample. */
static void png_round_trip(int w, int h, int c) {
    char err[DAE_ERR_LEN];
    dae_image img, back;
    cr_assert_eq(dae_image_alloc(&img, w, h, c, err, sizeof err), DAE_OK);
    for (size_t i = 0; i < (size_t)w * h * c; i++) img.pixels[i] = (uint8_t)(i * 37 + i / 7);
    uint8_t *png;
    size_t len;
    cr_assert_eq(dae_image_encode_png(&img, 1, &png, &len, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_image_decode(png, len, 0, &back, err, sizeof err), DAE_OK, "%dx%dx%d: %s", w, h, c, err);
    cr_assert_eq(back.width, w);
    cr_assert_eq(back.height, h);
    cr_assert_eq(back.channels, c);
    cr_assert(memcmp(back.pixels, img.pixels, (size_t)w * h * c) == 0, "%dx%dx%d: samples differ", w, h, c);
    free(png);
    dae_image_free(&img);
    dae_image_free(&back);
}

Test(png_encode, stored_and_compressed_round_trip_every_channel_count) {
    for (int c = 1; c <= 4; c++) {
        png_round_trip(1, 1, c);
        png_round_trip(28, 28, c);
        png_round_trip(27, 29, c);
        png_round_trip(300, 200, c); /* over DAE_PNG_STORED_MAX: libpng */
    }
    /* Exactly at the stored limit: 255 rows of 1 + 256 bytes = 65535. */
    png_round_trip(256, 255, 1);
}

/* ------------------------------------------------------------ sha256, sizes */

/* srv_utf8_valid as it was: a sequence at a time. */
static int utf8_valid_by_sequences(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = srv_utf8_seq(p + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* The ASCII runs are checked 32 bytes at a time: texts of ASCII with
 * sequences, good and bad, at every place across those blocks, and
 * random bytes, are judged as one sequence at a time judges them. */
Test(utf8, valid_is_the_sequences_verdict_across_ascii_blocks) {
    static const char *const seqs[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xff", "\xc3",
                                       "\xe2\x82", "\xed\xa0\x80", "\xc0\xaf", "\x80"};
    unsigned char text[160];
    for (size_t q = 0; q < sizeof seqs / sizeof seqs[0]; q++) {
        size_t m = strlen(seqs[q]);
        for (size_t at = 0; at + m <= 100; at++)
            for (size_t n = at + m; n <= 100; n += 33) {
                memset(text, 'a', n);
                memcpy(text + at, seqs[q], m);
                int want = utf8_valid_by_sequences(text, n);
                cr_assert_eq(srv_utf8_valid((const char *)text, n), want, "sequence %zu at %zu of %zu", q, at, n);
                cr_assert_eq(want, q < 3, "sequence %zu", q);
            }
    }
    uint64_t state = 7;
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % 150);
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            unsigned r = (unsigned)(state >> 33);
            text[i] = r % 64 != 0 ? (unsigned char)(' ' + r % 95) : (unsigned char)(0x80 + (r >> 8) % 128);
        }
        cr_assert_eq(srv_utf8_valid((const char *)text, n), utf8_valid_by_sequences(text, n), "round %d", round);
    }
}

Test(sha256, known_vectors) {
    char hex[65];
    srv_sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    srv_sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: two padding blocks */
    srv_sha256_hex(m, strlen(m), hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    srv_sha256_hex(a, 1000000, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* A data set's digest: its files read in pieces, concatenated, each up to
 * the size stat gave; a file grown since counts as it was, one shrunk is
 * an error. */
Test(sha256, files_in_pieces_are_their_concatenation) {
    char *dir = test_tmpdir("sha");
    size_t sizes[3] = {100000, 0, 70001};
    char *paths[3], *all = malloc(sizes[0] + sizes[2]);
    for (size_t i = 0, off = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%zu", i);
        paths[i] = path_join(dir, name);
        for (size_t k = 0; k < sizes[i]; k++) all[off + k] = (char)((off + k) * 2654435761u >> 13);
        FILE *f = fopen(paths[i], "wb");
        cr_assert_not_null(f);
        fwrite(all + off, 1, sizes[i], f);
        if (i == 2) fputs("bytes written after the size was taken", f);
        fclose(f);
        off += sizes[i];
    }
    char want[65], got[65];
    srv_sha256_hex(all, sizes[0] + sizes[2], want);
    cr_assert_eq(srv_sha256_files_hex((const char *const *)paths, sizes, 3, got), 0);
    cr_assert_str_eq(got, want);
    sizes[0]++;
    errno = 0;
    cr_assert_eq(srv_sha256_files_hex((const char *const *)paths, sizes, 3, got), -1, "a file shorter than its size");
    cr_assert_eq(errno, EIO);
    sizes[0]--;
    unlink(paths[1]);
    cr_assert_eq(srv_sha256_files_hex((const char *const *)paths, sizes, 3, got), -1);
    cr_assert_eq(errno, ENOENT);
    for (int i = 0; i < 3; i++) free(paths[i]);
    free(all);
    test_rm_tree(dir);
}

Test(config, sizes) {
    long long v;
    cr_assert_eq(srv_parse_size("10485760", &v), 0);
    cr_assert_eq(v, 10485760);
    cr_assert_eq(srv_parse_size("10M", &v), 0);
    cr_assert_eq(v, 10 << 20);
    cr_assert_eq(srv_parse_size("10MiB", &v), 0);
    cr_assert_eq(v, 10 << 20);
    cr_assert_eq(srv_parse_size("512k", &v), 0);
    cr_assert_eq(v, 512 << 10);
    cr_assert_eq(srv_parse_size("1G", &v), 0);
    cr_assert_eq(v, 1LL << 30);
    cr_assert_eq(srv_parse_size("", &v), -1);
    cr_assert_eq(srv_parse_size("-1", &v), -1);
    cr_assert_eq(srv_parse_size("12x", &v), -1);
    cr_assert_eq(srv_parse_size("1MiBs", &v), -1);
    cr_assert_eq(srv_parse_size("99999999999999999999", &v), -1);
    cr_assert_eq(srv_parse_size("9999999999T", &v), -1);
}

Test(config, flags_win_over_environment_over_defaults) {
    srv_config cfg;
    char *argv0[] = {"dae-server", NULL};
    unsetenv("DAE_PORT");
    unsetenv("DAE_WORKERS");
    cr_assert_eq(srv_config_parse(&cfg, 1, argv0), 0);
    cr_assert_eq(cfg.port, 8080);
    cr_assert_str_eq(cfg.bind, "127.0.0.1", "loopback unless asked");
    cr_assert_str_eq(cfg.model, "mnist");
    cr_assert_eq(cfg.model_given, 0, "the default model does not beat the ACTIVE file");
    cr_assert_null(cfg.cors_origin, "CORS is off by default");
    cr_assert_eq(cfg.message_format, SRV_LOG_TEXT);
    cr_assert_eq(cfg.max_body_bytes, 10 << 20);
    cr_assert_eq(cfg.max_pixels, 16 << 20);
    cr_assert_eq(cfg.max_queue_delay_us, 0);
    setenv("DAE_PORT", "9000", 1);
    setenv("DAE_WORKERS", "3", 1);
    cr_assert_eq(srv_config_parse(&cfg, 1, argv0), 0);
    cr_assert_eq(cfg.port, 9000);
    cr_assert_eq(cfg.workers, 3);
    char *argv1[] = {"dae-server", "--port", "9100", "--max-body=2M", "--access-log", "json", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 6, argv1), 0);
    cr_assert_eq(cfg.port, 9100, "the flag wins");
    cr_assert_eq(cfg.workers, 3, "the variable stays");
    cr_assert_eq(cfg.max_body_bytes, 2 << 20);
    cr_assert_eq(cfg.log_format, SRV_LOG_JSON);
    cr_assert_eq(cfg.model_given, 0);
    setenv("DAE_MODEL", "fashion-mnist", 1);
    cr_assert_eq(srv_config_parse(&cfg, 1, argv0), 0);
    cr_assert_eq(cfg.model_given, 1, "a model named in the environment wins over ACTIVE");
    unsetenv("DAE_MODEL");
    char *argv2[] = {"dae-server", "--model", "mnist", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, argv2), 0);
    cr_assert_eq(cfg.model_given, 1, "so does one given by flag, even the default's name");
    unsetenv("DAE_PORT");
    unsetenv("DAE_WORKERS");
}

/* One client may hold three quarters of what clients share unless told:
 * the memory budget (the budget's share limit) and the queue. */
Test(config, a_client_may_hold_three_quarters_of_what_clients_share) {
    srv_config cfg;
    unsetenv("DAE_CLIENT_SHARE");
    char *argv0[] = {"dae-server", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 1, argv0), 0);
    cr_assert_eq(cfg.client_share, 75);
    cr_assert_eq(srv_config_client_part(&cfg, 512LL << 20), 384LL << 20);
    cr_assert_eq(srv_config_client_part(&cfg, 32), 24, "of --max-streams' default");
    cr_assert_eq(srv_config_client_part(&cfg, 1), 1, "a limit of one is one client's");
    cr_assert_eq(srv_config_client_part(&cfg, 0), 0);
    char *argv1[] = {"dae-server", "--client-share", "100", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, argv1), 0);
    cr_assert_eq(cfg.client_share, 100);
    cr_assert_eq(srv_config_client_part(&cfg, (512LL << 20) + 99), (512LL << 20) + 99, "100: the whole, to the byte");
    char *argv2[] = {"dae-server", "--client-share", "0", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, argv2), SRV_CONFIG_USAGE, "a client may hold something");
    char *argv3[] = {"dae-server", "--client-share", "101", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, argv3), SRV_CONFIG_USAGE);
    setenv("DAE_CLIENT_SHARE", "50", 1);
    cr_assert_eq(srv_config_parse(&cfg, 1, argv0), 0);
    cr_assert_eq(cfg.client_share, 50);
    unsetenv("DAE_CLIENT_SHARE");
}

/* An error's message names the server's directories by their flags, not
 * where they are: the path inside one stays, so an admin still learns
 * which file. */
Test(config, messages_name_the_directories_not_where_they_are) {
    srv_config cfg = {.models_dir = "/srv/dae/", .data_dir = "/srv/dae/data", .state_dir = "state"};
    char out[200];
    cr_assert_eq(srv_config_hide_dirs(&cfg, "cannot rename /srv/dae/a.tmp to /srv/dae/a.safetensors: EROFS", out,
                                      sizeof out), 1);
    cr_assert_str_eq(out, "cannot rename MODELS_DIR/a.tmp to MODELS_DIR/a.safetensors: EROFS");
    srv_config_hide_dirs(&cfg, "/srv/dae/data/x/train-images: bad magic", out, sizeof out);
    cr_assert_str_eq(out, "DATA_DIR/x/train-images: bad magic", "the longest directory that fits");
    srv_config_hide_dirs(&cfg, "(state/1.json: cannot write) in /srv/dae", out, sizeof out);
    cr_assert_str_eq(out, "(STATE_DIR/1.json: cannot write) in MODELS_DIR", "an absolute directory alone too");
    const char *alone[] = {"the state directory", "model \"state\"", "/srv/daemon/x", "upstate/x", "/srv/dae_x"};
    for (size_t i = 0; i < sizeof alone / sizeof alone[0]; i++) {
        cr_assert_eq(srv_config_hide_dirs(&cfg, alone[i], out, sizeof out), 0, "%s", alone[i]);
        cr_assert_str_eq(out, alone[i]);
    }
    char tiny[12];
    srv_config_hide_dirs(&cfg, "/srv/dae/a.safetensors", tiny, sizeof tiny);
    cr_assert_str_eq(tiny, "MODELS_DIR/", "cut to the room, ended");
    cfg.models_dir = ".";
    srv_config_hide_dirs(&cfg, "./a.safetensors", out, sizeof out);
    cr_assert_str_eq(out, "./a.safetensors", "the working directory is no path to hide");
}

/* Small images' batches leave the event loop a core of the workers'
 * (all online CPUs, or the CPU limit given as --workers) where AVX-512 is
 * in use; elsewhere every worker takes them; unless told. */
Test(config, small_workers_leave_the_event_loop_a_core_with_avx512) {
    srv_config cfg;
    unsetenv("DAE_WORKERS");
    unsetenv("DAE_SMALL_WORKERS");
    unsetenv("DAE_HTTP_THREADS");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int keep = dae_gemm_isa() == DAE_ISA_AVX512;
    char *argv0[] = {"dae-server", "--workers", "1", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, argv0), 0);
    cr_assert_eq(cfg.small_workers, 1, "one worker does everything");
    char *argv1[] = {"dae-server", "--workers", "3", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, argv1), 0);
    long want = keep ? (cpus < 3 ? cpus : 3) - 1 : 3;
    cr_assert_eq(cfg.small_workers, want < 1 ? 1 : want, "%ld online CPUs, %s", cpus, dae_isa_name(dae_gemm_isa()));
    char *argv2[] = {"dae-server", "--workers", "8", "--http-threads", "2", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 5, argv2), 0);
    want = keep ? (cpus < 8 ? cpus : 8) - 2 : 8;
    cr_assert_eq(cfg.small_workers, want < 1 ? 1 : want, "%ld online CPUs, %s", cpus, dae_isa_name(dae_gemm_isa()));
    char *argv3[] = {"dae-server", "--workers", "3", "--small-workers", "3", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 5, argv3), 0);
    cr_assert_eq(cfg.small_workers, 3, "as told");
    char *argv4[] = {"dae-server", "--workers", "2", "--small-workers", "3", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 5, argv4), 0);
    cr_assert_eq(cfg.small_workers, 2, "no more than the workers");
}

Test(config, mistakes_are_usage_errors, .init = cr_redirect_stderr) {
    srv_config cfg;
    char *a[] = {"dae-server", "--port", "70000", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, a), SRV_CONFIG_USAGE);
    char *b[] = {"dae-server", "--nope", "1", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, b), SRV_CONFIG_USAGE);
    char *quiet[] = {"dae-server", "--log-format", "off", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, quiet), SRV_CONFIG_USAGE, "the server's own messages cannot be turned off");
    char *c[] = {"dae-server", "--port", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 2, c), SRV_CONFIG_USAGE);
    char *d[] = {"dae-server", "--access-log", "xml", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, d), SRV_CONFIG_USAGE);
    char *e[] = {"dae-server", "--port", "1", "--port", "2", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 5, e), SRV_CONFIG_USAGE);
    setenv("DAE_MAX_BODY", "lots", 1);
    char *f[] = {"dae-server", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 1, f), SRV_CONFIG_USAGE);
    unsetenv("DAE_MAX_BODY");
    char *g[] = {"dae-server", "--trusted-proxies", "10.0.0.0/8,proxy.local", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 3, g), SRV_CONFIG_USAGE);
    setenv("DAE_TRUSTED_PROXIES", "10.0.0.0/40", 1);
    cr_assert_eq(srv_config_parse(&cfg, 1, f), SRV_CONFIG_USAGE);
    setenv("DAE_TRUSTED_PROXIES", "10.0.0.0/8, ::1", 1);
    cr_assert_eq(srv_config_parse(&cfg, 1, f), 0);
    cr_assert_eq(cfg.proxies.n, 2, "the variable's networks are the server's");
    unsetenv("DAE_TRUSTED_PROXIES");
}

/* ------------------------------------------------------------ registry and scheduler */

/* Writes a model with seeded random weights into dir/name.safetensors. */
static void write_model(const char *dir, const char *name, uint64_t seed) {
    char err[DAE_ERR_LEN], path[512];
    dae_model m;
    cr_assert_eq(dae_model_init(&m, dae_model_default_spec(), err, sizeof err), DAE_OK);
    dae_model_init_params(&m, seed);
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    cr_assert_eq(dae_model_save(&m, path, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    dae_model_free(&m);
}

/* A temporary models directory with models "a" and "b". */
static void models_dir(char *dir, size_t len) {
    snprintf(dir, len, "%s/dae-test-server.XXXXXX", getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(dir));
    write_model(dir, "a", 1);
    write_model(dir, "b", 2);
}

static void remove_dir(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

static void config_for(srv_config *cfg, const char *dir, int workers, int max_batch) {
    char *argv[] = {"dae-server", NULL};
    unsetenv("DAE_MODEL");
    unsetenv("DAE_MODELS_DIR");
    cr_assert_eq(srv_config_parse(cfg, 1, argv), 0);
    cfg->models_dir = dir;
    cfg->model = "a";
    cfg->workers = workers;
    cfg->small_workers = workers; /* as on a machine with a core to spare */
    cfg->max_batch = max_batch;
    cfg->queue_size = 1000;
    cfg->queue_pixels = 1LL << 40;
}

/* What the scheduler tests run against: a models directory with "a" and
 * "b", its registry, and inference workers reporting to metrics. Tests
 * declare it static (the metrics are large and must outlive the workers),
 * call infer_setup, adjust cfg, then infer_start, and end with infer_stop. */
typedef struct {
    char dir[256];
    srv_config cfg;
    srv_registry *r;
    srv_metrics metrics;
    srv_infer *q;
} infer_fixture;

static void infer_setup(infer_fixture *f, int workers, int max_batch) {
    models_dir(f->dir, sizeof f->dir);
    config_for(&f->cfg, f->dir, workers, max_batch);
}

/* Opens the registry and starts the workers, failing the test if either fails. */
static void infer_start(infer_fixture *f) {
    char err[DAE_ERR_LEN] = "";
    f->r = srv_registry_open(&f->cfg, err, sizeof err);
    cr_assert_not_null(f->r, "%s", err);
    srv_metrics_init(&f->metrics);
    f->q = srv_infer_start(&f->cfg, &f->metrics, err, sizeof err);
    cr_assert_not_null(f->q, "%s", err);
}

/* Stops the workers, frees the registry and removes the directory. */
static void infer_stop(infer_fixture *f) {
    srv_infer_stop(f->q);
    srv_registry_free(f->r);
    remove_dir(f->dir);
}

/* The v2 repository: an unloaded model leaves the list but not the
 * directory, stays out over rescans, and comes back when loaded; the
 * default cannot be unloaded; loading a name without a file fails. */
Test(registry, unload_and_load_keep_the_file) {
    char dir[256], err[DAE_ERR_LEN] = "", path[512];
    models_dir(dir, sizeof dir);
    srv_config cfg;
    config_for(&cfg, dir, 1, 8);
    srv_registry *r = srv_registry_open(&cfg, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    cr_assert_eq(srv_registry_unload(r, "a", err, sizeof err), DAE_ERR_IN_USE, "the default");
    cr_assert_eq(srv_registry_unload(r, "zz", err, sizeof err), DAE_ERR_NOT_FOUND);
    cr_assert_eq(srv_registry_unload(r, "b", err, sizeof err), DAE_OK, "%s", err);
    cr_assert_null(srv_registry_acquire(r, "b"));
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    cr_assert_eq(access(path, F_OK), 0, "the file stays");
    srv_registry_reload(r);
    cr_assert_null(srv_registry_acquire(r, "b"), "a rescan does not bring it back");
    char *json = srv_registry_index_json(r);
    cr_assert_not_null(strstr(json, "{\"name\":\"b\",\"state\":\"UNAVAILABLE\",\"reason\":\"unloaded\"}"), "%s", json);
    cr_assert_not_null(strstr(json, "\"name\":\"a\""), "%s", json);
    free(json);
    cr_assert_eq(srv_registry_load(r, "b", err, sizeof err), DAE_OK, "%s", err);
    srv_model *b = srv_registry_acquire(r, "b");
    cr_assert_not_null(b);
    srv_model_release(b);
    cr_assert_eq(srv_registry_load(r, "nofile", err, sizeof err), DAE_ERR_NOT_FOUND);
    srv_registry_free(r);
    remove_dir(dir);
}

Test(registry, names_default_refcounts_and_json) {
    char dir[256], err[DAE_ERR_LEN] = "";
    models_dir(dir, sizeof dir);
    srv_config cfg;
    config_for(&cfg, dir, 1, 8);
    srv_registry *r = srv_registry_open(&cfg, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    cr_assert_eq(srv_registry_count(r), 2);
    srv_model *def = srv_registry_acquire(r, NULL), *b = srv_registry_acquire(r, "b");
    cr_assert_str_eq(def->name, "a");
    cr_assert_str_eq(b->name, "b");
    cr_assert_null(srv_registry_acquire(r, "c"));
    cr_assert_eq(strncmp(def->version, "sha256:", 7), 0);
    cr_assert_str_neq(def->version, b->version);
    int found;
    char *json = srv_registry_model_json(r, "b", &found);
    cr_assert(found);
    cr_assert_not_null(strstr(json, "\"architecture\":{"));
    cr_assert_not_null(strstr(json, "\"default\":false"));
    free(json);
    json = srv_registry_list_json(r);
    cr_assert_not_null(strstr(json, "\"default\":\"a\""));
    free(json);
    /* A handle outlives the registry until released. */
    srv_registry_free(r);
    cr_assert_eq(b->net.in_h, 28);
    srv_model_release(b);
    srv_model_release(def);
    cfg.model = "nope";
    cr_assert_null(srv_registry_open(&cfg, err, sizeof err));
    cr_assert_not_null(strstr(err, "nope"));
    remove_dir(dir);
}

/* A request's completion callback: counts it on the test_waiter in user. */
static void on_done(srv_infer_request *req) { test_waiter_done(req->user); }

/* An image of w x h x c with a seeded pattern, as a PNG in *png. */
static void make_png(int w, int h, int c, int seed, uint8_t **png, size_t *len, dae_image *img) {
    char err[DAE_ERR_LEN];
    cr_assert_eq(dae_image_alloc(img, w, h, c, err, sizeof err), DAE_OK);
    unsigned s = (unsigned)seed * 2654435761u;
    for (size_t i = 0; i < (size_t)w * h * c; i++) img->pixels[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    cr_assert_eq(dae_image_encode_png(img, 1, png, len, err, sizeof err), DAE_OK);
}

/* Asserts got's pixels are want's. Batched with other requests' tiles
 * (and, for a large image, by several workers), a request still gets
 * exactly the engine's bytes: the forward pass is batch-invariant
 * (core/gemm.h); noise involves no arithmetic that depends on batching. */
static void assert_same_pixels(const dae_image *got, const dae_image *want, int req, const char *kind) {
    size_t n = (size_t)got->width * got->height * got->channels;
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got->pixels[i] - (int)want->pixels[i]);
        if (d > worst) worst = d;
    }
    cr_assert(worst == 0, "request %d (%dx%dx%d, %s): pixels differ from the engine's by up to %d", req, got->width,
              got->height, got->channels, kind, worst);
}

Test(inference, batched_requests_match_the_engine, .timeout = TEST_TIME_LIMIT(120)) {
    char err[DAE_ERR_LEN] = "";
    static infer_fixture f;
    infer_setup(&f, 2, 16);
    infer_start(&f);
    srv_infer *q = f.q;
    enum { N = 40 };
    static const int sizes[][3] = {{28, 28, 1}, {1, 1, 1}, {27, 29, 4}, {100, 60, 3}, {28, 28, 2}, {57, 31, 1}, {14, 80, 4}};
    srv_infer_request *reqs = calloc(N, sizeof *reqs);
    uint8_t *pngs[N];
    size_t lens[N];
    dae_image inputs[N];
    test_waiter w = TEST_WAITER_INIT;
    for (int i = 0; i < N; i++) {
        const int *s = sizes[i % 7];
        make_png(s[0], s[1], s[2], i, &pngs[i], &lens[i], &inputs[i]);
        srv_infer_request *j = &reqs[i];
        j->kind = i % 10 == 9 ? SRV_INFER_NOISE : SRV_INFER_DENOISE;
        j->input = pngs[i];
        j->input_len = lens[i];
        j->max_pixels = 1 << 20;
        j->pixels = (long long)s[0] * s[1];
        j->model = srv_registry_acquire(f.r, i % 3 == 0 ? "b" : "a");
        j->noise = (dae_noise_spec){.kind = DAE_NOISE_GAUSSIAN, .level = 0.3f, .clip = 1, .quantize = 1};
        j->seed = (uint64_t)i;
        j->png_level = 1;
        j->done = on_done;
        j->user = &w;
        cr_assert_eq(srv_infer_reserve(q, NULL, 1, j->pixels, NULL, 0), DAE_OK);
        srv_infer_enqueue(q, j);
    }
    test_waiter_wait(&w, N);
    dae_workspace *ws = NULL;
    for (int i = 0; i < N; i++) {
        srv_infer_request *j = &reqs[i];
        cr_assert_eq(j->status, DAE_OK, "request %d: %s", i, j->message);
        dae_image got, want;
        cr_assert_eq(dae_image_decode(j->png, j->png_len, 0, &got, err, sizeof err), DAE_OK);
        if (j->kind == SRV_INFER_NOISE) {
            cr_assert_eq(dae_image_decode(pngs[i], lens[i], 0, &want, err, sizeof err), DAE_OK);
            cr_assert_eq(dae_image_add_noise(&want, &j->noise, j->seed, err, sizeof err), DAE_OK);
        } else {
            ws = dae_workspace_new(&j->model->net, 64, 0);
            cr_assert_eq(dae_denoise_image(&j->model->net, NULL, &ws, &inputs[i], &want, err, sizeof err), DAE_OK);
            dae_workspace_free(ws);
        }
        cr_assert_eq(got.width, want.width);
        cr_assert_eq(got.height, want.height);
        cr_assert_eq(got.channels, want.channels);
        assert_same_pixels(&got, &want, i, j->kind == SRV_INFER_NOISE ? "noise" : "denoise");
        dae_image_free(&got);
        dae_image_free(&want);
        dae_image_free(&inputs[i]);
        free(j->png);
        free(pngs[i]);
        srv_model_release(j->model);
    }
    cr_assert_eq(srv_infer_pending(q), 0);
    cr_assert_gt(atomic_load(&f.metrics.batch_requests.sum), 0);
    infer_stop(&f);
    free(reqs);
}

/* Tensor requests (the v2 protocol's FP32 inputs) share batches with
 * image requests, of two models, and give the engine's outputs bit for
 * bit (batch-invariant kernels); an image request batched with them
 * gives what the engine gives it alone, also bit for bit. */
Test(inference, tensor_requests_batch_with_images, .timeout = TEST_TIME_LIMIT(120)) {
    char err[DAE_ERR_LEN] = "";
    static infer_fixture f;
    infer_setup(&f, 2, 16);
    f.cfg.max_queue_delay_us = 20000; /* let them gather into shared batches */
    infer_start(&f);
    enum { N = 12, T = 784 };
    static const int counts[N] = {1, 5, 40, 1, 3, 17, 2, 1, 9, 1, 33, 4};
    srv_infer_request *reqs = calloc(N, sizeof *reqs);
    float *in[N], *out[N];
    uint8_t *pngs[N];
    size_t lens[N];
    dae_image imgs[N];
    test_waiter w = TEST_WAITER_INIT;
    for (int i = 0; i < N; i++) {
        srv_infer_request *j = &reqs[i];
        j->model = srv_registry_acquire(f.r, i % 2 ? "b" : "a");
        j->done = on_done;
        j->user = &w;
        if (i % 4 == 3) { /* an image among them */
            make_png(28, 28, 1, i, &pngs[i], &lens[i], &imgs[i]);
            j->kind = SRV_INFER_DENOISE;
            j->input = pngs[i];
            j->input_len = lens[i];
            j->max_pixels = 1 << 20;
            j->pixels = T;
            j->png_level = 1;
            in[i] = out[i] = NULL;
        } else {
            in[i] = malloc(sizeof(float) * T * counts[i]);
            out[i] = malloc(sizeof(float) * T * counts[i]);
            for (int k = 0; k < T * counts[i]; k++) in[i][k] = (float)((k * 7 + i * 13) % 101) / 100.0f;
            j->kind = SRV_INFER_TENSOR;
            j->tensor_in = (const uint8_t *)in[i];
            j->tensor_out = (uint8_t *)out[i];
            j->tensor_n = counts[i];
            j->pixels = (long long)T * counts[i];
        }
        cr_assert_eq(srv_infer_reserve(f.q, NULL, 1, j->pixels, NULL, 0), DAE_OK);
        srv_infer_enqueue(f.q, j);
    }
    test_waiter_wait(&w, N);
    for (int i = 0; i < N; i++) {
        srv_infer_request *j = &reqs[i];
        cr_assert_eq(j->status, DAE_OK, "request %d: %s", i, j->message);
        dae_workspace *ws = dae_workspace_new(&j->model->net, 64, 0);
        if (j->kind == SRV_INFER_TENSOR) {
            float *want = malloc(sizeof(float) * T * counts[i]);
            dae_model_forward(&j->model->net, ws, in[i], want, counts[i]);
            cr_assert(memcmp(want, out[i], sizeof(float) * T * counts[i]) == 0,
                      "tensor request %d (%d inputs) differs from the engine's outputs", i, counts[i]);
            free(want), free(in[i]), free(out[i]);
        } else {
            dae_image got, want;
            cr_assert_eq(dae_image_decode(j->png, j->png_len, 0, &got, err, sizeof err), DAE_OK);
            cr_assert_eq(dae_denoise_image(&j->model->net, NULL, &ws, &imgs[i], &want, err, sizeof err), DAE_OK);
            assert_same_pixels(&got, &want, i, "denoise among tensors");
            dae_image_free(&got), dae_image_free(&want), dae_image_free(&imgs[i]);
            free(j->png), free(pngs[i]);
        }
        dae_workspace_free(ws);
        srv_model_release(j->model);
    }
    unsigned long long batches = 0;
    for (int k = 0; k <= SRV_HIST_MAX; k++) batches += atomic_load(&f.metrics.batch_requests.buckets[k]);
    cr_assert_gt(atomic_load(&f.metrics.batch_requests.sum), batches, "some batch held several requests");
    infer_stop(&f);
    free(reqs);
}

Test(inference, bad_images_and_limits_fail_cleanly) {
    static infer_fixture f;
    infer_setup(&f, 1, 8);
    f.cfg.queue_size = 2;
    infer_start(&f);
    srv_infer *q = f.q;
    uint8_t *png;
    size_t len;
    dae_image img;
    make_png(40, 40, 1, 1, &png, &len, &img);
    test_waiter w = TEST_WAITER_INIT;
    srv_infer_request bad = {.kind = SRV_INFER_DENOISE, .input = png, .input_len = len / 2, .max_pixels = 1 << 20,
                             .pixels = 1600, .model = srv_registry_acquire(f.r, NULL), .done = on_done, .user = &w};
    srv_infer_request big = bad;
    big.input_len = len;
    big.max_pixels = 100; /* the header passed a looser check; the decoder holds the line */
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 1600, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 1600, NULL, 0), DAE_OK);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 1, err, sizeof err), DAE_ERR_BUSY, "queue_size 2");
    cr_assert(strstr(err, "queue of 2 requests") != NULL, "%s", err);
    srv_infer_enqueue(q, &bad);
    srv_infer_enqueue(q, &big);
    test_waiter_wait(&w, 2);
    const char *code;
    cr_assert_eq(bad.status, DAE_ERR_FORMAT, "%s", bad.message);
    cr_assert_eq(srv_http_error_of(SRV_EDGE_IMAGE, bad.status, &code), 400);
    cr_assert_str_eq(code, "invalid_image");
    cr_assert_eq(big.status, DAE_ERR_TOO_LARGE, "%s", big.message);
    cr_assert_eq(srv_http_error_of(SRV_EDGE_IMAGE, big.status, &code), 413);
    cr_assert_str_eq(code, "too_many_pixels");
    srv_infer_close(q);
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 1, NULL, 0), DAE_ERR_STOPPING);
    srv_model_release(bad.model);
    infer_stop(&f);
    free(png);
    dae_image_free(&img);
}

/* A denoise request of the image png (pixels pixels) to model m, reporting
 * to waiter w. */
static srv_infer_request denoise_request(const uint8_t *png, size_t len, long long pixels, srv_model *m,
                                         test_waiter *w) {
    return (srv_infer_request){.kind = SRV_INFER_DENOISE, .input = png, .input_len = len, .max_pixels = 1 << 20,
                               .pixels = pixels, .model = m, .done = on_done, .user = w};
}

/* One client holds at most --client-share percent of the queue's places
 * and pixels; what it cannot take is there for the others, and a done
 * request gives its place back to its client's part. */
Test(inference, a_client_holds_at_most_its_share_of_the_queue) {
    static infer_fixture f;
    infer_setup(&f, 1, 8);
    f.cfg.queue_size = 8;
    f.cfg.queue_pixels = 8000;
    f.cfg.client_share = 75; /* 6 places, 6000 pixels */
    infer_start(&f);
    srv_infer_share a = {0}, b = {0};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(srv_infer_reserve(f.q, &a, 1, 5900, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_reserve(f.q, &a, 1, 101, err, sizeof err), DAE_ERR_BUSY, "past the client's pixels");
    cr_assert(strstr(err, "--client-share") != NULL, "%s", err);
    cr_assert_eq(srv_infer_reserve(f.q, &a, 1, 100, NULL, 0), DAE_OK, "exactly its part");
    cr_assert_eq(srv_infer_reserve(f.q, &a, 4, 0, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_reserve(f.q, &a, 1, 0, err, sizeof err), DAE_ERR_BUSY, "past the client's places");
    cr_assert_eq(a.requests, 6);
    cr_assert_eq(a.pixels, 6000);
    cr_assert_eq(srv_infer_reserve(f.q, &b, 1, 1600, NULL, 0), DAE_OK, "the rest is there for another client");
    cr_assert_eq(srv_infer_reserve(f.q, &b, 1, 401, err, sizeof err), DAE_ERR_BUSY, "and the queue's own limits");
    cr_assert(strstr(err, "queue of 8 requests or 8000 pixels") != NULL, "%s", err);
    uint8_t *png;
    size_t len;
    dae_image img;
    make_png(40, 40, 1, 1, &png, &len, &img);
    test_waiter w = TEST_WAITER_INIT;
    srv_infer_request j = denoise_request(png, len, 1600, srv_registry_acquire(f.r, NULL), &w);
    j.queue_share = &b;
    srv_infer_enqueue(f.q, &j);
    test_waiter_wait(&w, 1);
    cr_assert_eq(j.status, DAE_OK, "%s", j.message);
    cr_assert_eq(b.requests, 0, "its place is given back to its client's part");
    cr_assert_eq(b.pixels, 0);
    free(j.png);
    srv_model_release(j.model);
    infer_stop(&f);
    free(png);
    dae_image_free(&img);
}

Test(inference, cancel_all_finishes_every_request, .timeout = TEST_TIME_LIMIT(120)) {
    static infer_fixture f;
    infer_setup(&f, 1, 4);
    infer_start(&f);
    srv_infer *q = f.q;
    enum { N = 12 };
    uint8_t *png;
    size_t len;
    dae_image img;
    make_png(400, 300, 3, 5, &png, &len, &img);
    srv_model *m = srv_registry_acquire(f.r, NULL);
    srv_infer_request reqs[N];
    test_waiter w = TEST_WAITER_INIT;
    for (int i = 0; i < N; i++) {
        reqs[i] = denoise_request(png, len, 120000, m, &w);
        cr_assert_eq(srv_infer_reserve(q, NULL, 1, reqs[i].pixels, NULL, 0), DAE_OK);
        srv_infer_enqueue(q, &reqs[i]);
    }
    usleep(20000);
    srv_infer_cancel_all(q);
    test_waiter_wait(&w, N);
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        cr_assert(reqs[i].status == DAE_OK || reqs[i].status == DAE_ERR_STOPPING, "request %d: %s", i,
                  dae_status_str(reqs[i].status));
        if (reqs[i].status == DAE_ERR_STOPPING) {
            cancelled++;
            const char *code;
            cr_assert_eq(srv_http_error_of(SRV_EDGE_IMAGE, reqs[i].status, &code), 503);
            cr_assert_str_eq(code, "shutting_down");
        }
        free(reqs[i].png);
    }
    cr_assert_gt(cancelled, 0, "a 1-worker queue of 12 large images cannot all be done in 20 ms");
    cr_assert_eq(srv_infer_pending(q), 0);
    srv_model_release(m);
    infer_stop(&f);
    free(png);
    dae_image_free(&img);
}

Test(inference, a_queue_delay_gathers_later_requests_into_one_batch, .timeout = TEST_TIME_LIMIT(60)) {
    static infer_fixture f;
    infer_setup(&f, 1, 8);
    f.cfg.max_queue_delay_us = 200000;
    infer_start(&f);
    srv_infer *q = f.q;
    uint8_t *png;
    size_t len;
    dae_image img;
    make_png(28, 28, 1, 3, &png, &len, &img);
    srv_model *m = srv_registry_acquire(f.r, NULL);
    test_waiter w = TEST_WAITER_INIT;
    srv_infer_request reqs[3];
    for (int i = 0; i < 3; i++) {
        reqs[i] = denoise_request(png, len, 784, m, &w);
        cr_assert_eq(srv_infer_reserve(q, NULL, 1, 784, NULL, 0), DAE_OK);
        srv_infer_enqueue(q, &reqs[i]);
        usleep(20000); /* well inside the 200 ms delay */
    }
    test_waiter_wait(&w, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(reqs[i].status, DAE_OK);
        free(reqs[i].png);
    }
    cr_assert_eq(atomic_load(&f.metrics.batch_requests.sum), 3, "three requests in one batch");
    cr_assert_eq(atomic_load(&f.metrics.batch_tiles.sum), 3);
    srv_model_release(m);
    infer_stop(&f);
    free(png);
    dae_image_free(&img);
}

/* The small requests' completion callback of the next test: counts the
 * request, then holds its worker (and the worker's small slot) until the
 * test opens the gate. */
typedef struct {
    test_waiter counted;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
} test_gate;

static void on_done_at_gate(srv_infer_request *req) {
    test_gate *g = req->user;
    test_waiter_done(&g->counted);
    pthread_mutex_lock(&g->mu);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* With one worker of two for small requests (--small-workers 1): while
 * that worker is busy, the other leaves the queued small requests alone
 * (their turn comes when the busy one is free) and takes a big image that
 * arrives meanwhile. Every request is answered. */
Test(inference, small_requests_keep_to_their_workers_and_big_ones_take_the_rest, .timeout = TEST_TIME_LIMIT(60)) {
    static infer_fixture f;
    infer_setup(&f, 2, 4);
    f.cfg.small_workers = 1;
    infer_start(&f);
    srv_infer *q = f.q;
    enum { N = 12 };
    uint8_t *small_png, *big_png;
    size_t small_len, big_len;
    dae_image small_img, big_img;
    make_png(28, 28, 1, 3, &small_png, &small_len, &small_img);
    make_png(400, 300, 1, 4, &big_png, &big_len, &big_img);
    srv_model *m = srv_registry_acquire(f.r, NULL);
    static test_gate gate = {TEST_WAITER_INIT, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    srv_infer_request reqs[N];
    for (int i = 0; i < N; i++) {
        reqs[i] = denoise_request(small_png, small_len, 784, m, NULL);
        reqs[i].done = on_done_at_gate;
        reqs[i].user = &gate;
        cr_assert_eq(srv_infer_reserve(q, NULL, 1, 784, NULL, 0), DAE_OK);
        srv_infer_enqueue(q, &reqs[i]);
    }
    test_waiter_wait(&gate.counted, 1); /* a worker holds the first answered, and its slot */
    test_waiter big_done = TEST_WAITER_INIT;
    srv_infer_request big = denoise_request(big_png, big_len, 400 * 300, m, &big_done);
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, big.pixels, NULL, 0), DAE_OK);
    srv_infer_enqueue(q, &big);
    int big_answered = test_waiter_wait_s(&big_done, 1, 20);
    usleep(50000);
    int small_answered = test_waiter_wait_s(&gate.counted, N, 0);
    pthread_mutex_lock(&gate.mu);
    gate.open = 1;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    test_waiter_wait(&gate.counted, N);
    test_waiter_wait(&big_done, 1);
    cr_assert_eq(small_answered, 1, "the free worker answered %d small requests while the other held its slot",
                 small_answered - 1);
    cr_assert_eq(big_answered, 1, "the big image waited for the small requests' worker");
    cr_assert_eq(big.status, DAE_OK, "%s", big.message);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(reqs[i].status, DAE_OK, "request %d: %s", i, reqs[i].message);
        free(reqs[i].png);
    }
    free(big.png);
    cr_assert_eq(srv_infer_pending(q), 0);
    srv_model_release(m);
    infer_stop(&f);
    free(small_png);
    free(big_png);
    dae_image_free(&small_img);
    dae_image_free(&big_img);
}

/* An idle scheduler runs a lone denoise on the calling thread: the same
 * pixels as the engine, counted in the metrics, done() not called, the
 * reservation given back. A busy one (another request reserved), a queue
 * delay or a /noise request leave it to the workers (0). */
Test(inference, run_now_only_when_idle, .timeout = TEST_TIME_LIMIT(60)) {
    char err[DAE_ERR_LEN] = "";
    static infer_fixture f;
    infer_setup(&f, 1, 8);
    infer_start(&f);
    srv_infer *q = f.q;
    uint8_t *png;
    size_t len;
    dae_image img;
    make_png(28, 28, 1, 4, &png, &len, &img);
    srv_model *m = srv_registry_acquire(f.r, NULL);
    test_waiter w = TEST_WAITER_INIT;
    srv_infer_request j = denoise_request(png, len, 784, m, &w);

    /* idle: run here */
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 784, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_run_now(q, &j), 1);
    cr_assert_eq(j.status, DAE_OK, "%s", j.message);
    cr_assert_null(j.done, "done() is the caller's to do");
    cr_assert_eq(srv_infer_pending(q), 0);
    cr_assert_eq(atomic_load(&f.metrics.batch_requests.sum), 1);
    dae_image got, want;
    cr_assert_eq(dae_image_decode(j.png, j.png_len, 0, &got, err, sizeof err), DAE_OK);
    dae_workspace *ws = dae_workspace_new(&m->net, 8, 0);
    cr_assert_eq(dae_denoise_image(&m->net, NULL, &ws, &img, &want, err, sizeof err), DAE_OK);
    dae_workspace_free(ws);
    assert_same_pixels(&got, &want, 0, "run_now");
    dae_image_free(&got), dae_image_free(&want);
    free(j.png);

    /* busy: another request is reserved */
    srv_infer_request k = denoise_request(png, len, 784, m, &w);
    j.done = on_done, j.png = NULL;
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 784, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 784, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_run_now(q, &j), 0);
    srv_infer_enqueue(q, &j);
    srv_infer_enqueue(q, &k);
    test_waiter_wait(&w, 2);
    cr_assert_eq(j.status, DAE_OK);
    cr_assert_eq(k.status, DAE_OK);
    free(j.png), free(k.png);

    /* a /noise request is never run here */
    srv_infer_request n = k;
    n.kind = SRV_INFER_NOISE, n.png = NULL;
    n.noise = (dae_noise_spec){.kind = DAE_NOISE_GAUSSIAN, .level = 0.3f, .clip = 1, .quantize = 1};
    cr_assert_eq(srv_infer_reserve(q, NULL, 1, 784, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_run_now(q, &n), 0);
    srv_infer_enqueue(q, &n);
    test_waiter_wait(&w, 3);
    cr_assert_eq(n.status, DAE_OK);
    free(n.png);
    srv_model_release(m);
    infer_stop(&f);

    /* a queue delay asks requests to wait for company: none is run here */
    static infer_fixture g;
    infer_setup(&g, 1, 8);
    g.cfg.max_queue_delay_us = 1000;
    infer_start(&g);
    m = srv_registry_acquire(g.r, NULL);
    srv_infer_request d = denoise_request(png, len, 784, m, &w);
    cr_assert_eq(srv_infer_reserve(g.q, NULL, 1, 784, NULL, 0), DAE_OK);
    cr_assert_eq(srv_infer_run_now(g.q, &d), 0);
    srv_infer_enqueue(g.q, &d);
    test_waiter_wait(&w, 4);
    cr_assert_eq(d.status, DAE_OK);
    free(d.png);
    srv_model_release(m);
    infer_stop(&g);
    free(png);
    dae_image_free(&img);
}

/* ------------------------------------------------------------ admin auth */

#include "../server/auth.h"
#include "../server/train_http.h"

Test(auth, token_and_loopback_rule) {
    struct sockaddr_storage lo = test_addr("127.0.0.1"), lo2 = test_addr("127.8.9.10"), lo6 = test_addr("::1"),
                            mapped = test_addr("::ffff:127.0.0.1"), lan = test_addr("192.0.2.7"),
                            lan6 = test_addr("2001:db8::1"), mapped_lan = test_addr("::ffff:10.0.0.1");
    const struct sockaddr *L = (const struct sockaddr *)&lo, *N = (const struct sockaddr *)&lan;
    /* No token: loopback only. */
    cr_assert_eq(srv_auth_check(NULL, NULL, L, 0), SRV_AUTH_OK);
    cr_assert_eq(srv_auth_check("", NULL, (const struct sockaddr *)&lo2, 0), SRV_AUTH_OK);
    cr_assert_eq(srv_auth_check(NULL, NULL, (const struct sockaddr *)&lo6, 0), SRV_AUTH_OK);
    cr_assert_eq(srv_auth_check(NULL, NULL, (const struct sockaddr *)&mapped, 0), SRV_AUTH_OK);
    cr_assert_eq(srv_auth_check(NULL, NULL, N, 0), SRV_AUTH_FORBIDDEN);
    cr_assert_eq(srv_auth_check(NULL, NULL, (const struct sockaddr *)&lan6, 0), SRV_AUTH_FORBIDDEN);
    cr_assert_eq(srv_auth_check(NULL, NULL, (const struct sockaddr *)&mapped_lan, 0), SRV_AUTH_FORBIDDEN);
    cr_assert_eq(srv_auth_check(NULL, "Bearer x", NULL, 0), SRV_AUTH_FORBIDDEN);
    /* ... and not through a proxy, which connects from loopback for anyone. */
    cr_assert_eq(srv_auth_check(NULL, NULL, L, 1), SRV_AUTH_FORBIDDEN);
    cr_assert_eq(srv_auth_check("", NULL, (const struct sockaddr *)&lo6, 1), SRV_AUTH_FORBIDDEN);
    cr_assert_eq(srv_auth_check("tok", "Bearer tok", L, 1), SRV_AUTH_OK, "a token passes through a proxy");
    /* A token: needed from everywhere, loopback included. */
    cr_assert_eq(srv_auth_check("tok", NULL, L, 0), SRV_AUTH_UNAUTHORIZED);
    cr_assert_eq(srv_auth_check("tok", "Bearer tok", N, 0), SRV_AUTH_OK);
    cr_assert_eq(srv_auth_check("tok", "bearer tok", N, 0), SRV_AUTH_OK);
    cr_assert_eq(srv_auth_check("tok", "Bearer to", N, 0), SRV_AUTH_UNAUTHORIZED);
    cr_assert_eq(srv_auth_check("tok", "Bearer tokk", N, 0), SRV_AUTH_UNAUTHORIZED);
    cr_assert_eq(srv_auth_check("tok", "Basic tok", N, 0), SRV_AUTH_UNAUTHORIZED);
    cr_assert_eq(srv_auth_check("tok", "Bearer ", L, 0), SRV_AUTH_UNAUTHORIZED);
    cr_assert(srv_auth_equal("", ""));
    cr_assert_not(srv_auth_equal("a", ""));
}

/* ------------------------------------------------------------ job validation */

static int validate(const char *body, srv_train_answer *a) {
    int rc = srv_train_validate(body, strlen(body), "tests/fixtures", a);
    free(a->json);
    a->json = NULL;
    return rc;
}

Test(jobs, validation_names_each_field) {
    srv_train_answer a;
    cr_assert_eq(validate("{\"dataset\":\"mnist-mini\",\"epochs\":2,\"activate\":true}", &a), 0, "%s", a.message);
    cr_assert_eq(validate("[1]", &a), -1);
    cr_assert_eq(a.status, 400);
    static const char *const bad[][2] = {
        {"{\"dataset\":\"mnist-mini\",\"epochs\":0}", "epochs"},
        {"{\"dataset\":\"mnist-mini\",\"batch_size\":100000}", "batch_size"},
        {"{\"dataset\":\"mnist-mini\",\"learning_rate\":0}", "learning_rate"},
        {"{\"dataset\":\"mnist-mini\",\"weight_decay\":2}", "weight_decay"},
        {"{\"dataset\":\"mnist-mini\",\"seed\":1.5}", "seed"},
        {"{\"dataset\":\"mnist-mini\",\"train_limit\":-1}", "train_limit"},
        {"{\"dataset\":\"mnist-mini\",\"model_name\":\"a/b\"}", "model_name"},
        {"{\"dataset\":\"mnist-mini\",\"activate\":1}", "activate"},
        {"{\"dataset\":\"mnist-mini\",\"noise\":\"x\"}", "noise"},
        {"{\"dataset\":\"mnist-mini\",\"dataset2\":1}", "dataset2"},
        {"{\"dataset\":\"..\"}", "dataset"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(validate(bad[i][0], &a), -1, "%s", bad[i][0]);
        cr_assert_eq(a.status, 422, "%s", bad[i][0]);
        cr_assert_not_null(strstr(a.message, bad[i][1]), "%s: %s", bad[i][0], a.message);
    }
    cr_assert_eq(validate("{\"dataset\":\"absent\"}", &a), -1);
    cr_assert_str_eq(a.code, "dataset_not_found");
    cr_assert_not_null(strstr(a.message, "tests/fixtures/absent/train-images-idx3-ubyte"), "%s", a.message);
}

/* ------------------------------------------------------------ hot swap */

Test(registry, activate_remove_reload_and_active_file) {
    char dir[256], err[DAE_ERR_LEN] = "", name[80];
    models_dir(dir, sizeof dir);
    srv_config cfg;
    config_for(&cfg, dir, 1, 8);
    /* ACTIVE wins over cfg->model. */
    cr_assert_eq(srv_active_write(dir, "b", err, sizeof err), 0, "%s", err);
    srv_registry *r = srv_registry_open(&cfg, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    srv_model *m = srv_registry_acquire(r, NULL);
    cr_assert_str_eq(m->name, "b");
    srv_model_release(m);
    /* Activate a, remove b; a request holding b keeps it. */
    srv_model *held = srv_registry_acquire(r, "b");
    srv_activation done;
    cr_assert_eq(srv_registry_activate(r, "a", &done, err, sizeof err), DAE_OK);
    cr_assert_str_eq(done.previous, "b");
    m = srv_registry_acquire(r, NULL);
    cr_assert_str_eq(done.version, m->version, "the activated model's version");
    srv_model_release(m);
    cr_assert_eq(srv_active_read(dir, name, sizeof name), 0);
    cr_assert_str_eq(name, "a");
    cr_assert_eq(srv_registry_switches(r), 1);
    cr_assert_eq(srv_registry_activate(r, "zz", NULL, err, sizeof err), DAE_ERR_NOT_FOUND);
    cr_assert_eq(srv_registry_remove(r, "a", err, sizeof err), DAE_ERR_IN_USE);
    cr_assert_eq(srv_registry_remove(r, "b", err, sizeof err), DAE_OK);
    cr_assert_null(srv_registry_acquire(r, "b"));
    cr_assert_eq(held->net.in_h, 28);
    srv_model_release(held);
    /* A new file and ACTIVE written by another replica: reload follows. */
    write_model(dir, "c", 3);
    cr_assert_eq(srv_active_write(dir, "c", err, sizeof err), 0);
    srv_registry_reload(r);
    m = srv_registry_acquire(r, NULL);
    cr_assert_str_eq(m->name, "c");
    srv_model_release(m);
    cr_assert_eq(srv_registry_count(r), 2);
    srv_registry_free(r);
    char path[600];
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/ACTIVE", dir);
    unlink(path);
    remove_dir(dir);
}
