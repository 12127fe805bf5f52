/* test_openapi.c - the API description dae-server serves at GET
 * /openapi.json (server/web/openapi.json, compiled in: assets.h) against
 * the route table (http.h), both ways: every route and method is
 * documented, and every documented path and method is a route. Admin
 * methods carry the bearer scheme and no other does; every operation has
 * an operationId, a 2xx answer and, for each error status, the Error
 * schema and a description naming its codes; every $ref resolves.
 * tests/openapi/validate.sh adds what C cannot do well: an OpenAPI
 * validator, the examples against their schemas, and x-error-codes against
 * the codes in the server's sources. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "../server/assets.h"
#include "../server/config.h"
#include "../server/http.h"

/* The methods of an OpenAPI path item, with their bits in the route table
 * (0: a method no route takes; documenting it is an error). OPTIONS is
 * the CORS preflight, answered for any route rather than a method of one:
 * the document describes it in words. */
static const struct {
    const char *key, *name; /* "get", "GET" */
    unsigned bit;
} METHODS[] = {
    {"get", "GET", SRV_M_GET},          {"head", "HEAD", SRV_M_HEAD}, {"post", "POST", SRV_M_POST},
    {"put", "PUT", SRV_M_PUT},          {"delete", "DELETE", SRV_M_DELETE}, {"options", "OPTIONS", 0},
    {"patch", "PATCH", 0},              {"trace", "TRACE", 0},
};
enum { N_METHOD_KEYS = sizeof METHODS / sizeof METHODS[0] };

/* The compiled-in document, parsed; fails the test when it is not JSON. */
static cJSON *doc_load(void) {
    srv_asset a;
    cr_assert_eq(srv_asset_find("openapi.json", &a), 0, "openapi.json is not compiled in (server/assets.c)");
    cJSON *doc = cJSON_ParseWithLength((const char *)a.data, a.len);
    const char *at = cJSON_GetErrorPtr();
    cr_assert_not_null(doc, "openapi.json is not JSON: it breaks at byte %ld (\"%.40s\")",
                       at != NULL ? (long)(at - (const char *)a.data) : -1L, at != NULL ? at : "");
    return doc;
}

static cJSON *paths_of(cJSON *doc) {
    cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    cr_assert(cJSON_IsObject(paths), "openapi.json has no paths object");
    return paths;
}

/* The row of the route table whose path is path, or -1. */
static int route_of(const char *path, unsigned *methods, unsigned *admin) {
    for (int i = 0; i < srv_http_route_count(); i++) {
        const char *name, *p;
        srv_http_route_get(i, &name, &p, methods, admin);
        if (strcmp(p, path) == 0) return i;
    }
    return -1;
}

/* The value the local reference ref ("#/a/b~1c") names in doc, or NULL. */
static cJSON *resolve(cJSON *doc, const char *ref) {
    if (strncmp(ref, "#/", 2) != 0) return NULL;
    cJSON *at = doc;
    for (const char *p = ref + 2; at != NULL;) {
        char key[256];
        size_t n = 0;
        for (; *p != '\0' && *p != '/' && n < sizeof key - 1; p++) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) key[n++] = *++p == '0' ? '~' : '/';
            else key[n++] = *p;
        }
        key[n] = '\0';
        at = cJSON_IsArray(at) ? cJSON_GetArrayItem(at, atoi(key)) : cJSON_GetObjectItemCaseSensitive(at, key);
        if (*p != '/') break;
        p++;
    }
    return at;
}

/* item, or what its $ref names (followed through chains). */
static cJSON *deref(cJSON *doc, cJSON *item) {
    for (int hops = 0; hops < 8 && item != NULL; hops++) {
        cJSON *ref = cJSON_GetObjectItemCaseSensitive(item, "$ref");
        if (!cJSON_IsString(ref)) return item;
        item = resolve(doc, ref->valuestring);
    }
    return item;
}

/* Whether code is one of the document's x-error-codes. */
static int listed_code(cJSON *doc, const char *code, size_t len) {
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "x-error-codes"))
        if (cJSON_IsString(c) && strlen(c->valuestring) == len && strncmp(c->valuestring, code, len) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------ the document */

Test(openapi, is_openapi_3_1_of_this_server) {
    cJSON *doc = doc_load();
    cJSON *info = cJSON_GetObjectItemCaseSensitive(doc, "info");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "openapi")), "3.1.0");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(info, "title")), "dae-server");
    const char *version = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(info, "version"));
    cr_expect(version != NULL && strcmp(version, DAE_SERVER_VERSION) == 0,
              "info.version is %s, the server is %s (DAE_SERVER_VERSION)", version != NULL ? version : "missing",
              DAE_SERVER_VERSION);
    cJSON_Delete(doc);
}

/* ------------------------------------------------------------ the route table, both ways */

Test(openapi, documents_every_method_of_every_route) {
    cJSON *doc = doc_load();
    cJSON *paths = paths_of(doc);
    cr_assert_gt(srv_http_route_count(), 0);
    for (int i = 0; i < srv_http_route_count(); i++) {
        const char *name, *path;
        unsigned methods, admin;
        srv_http_route_get(i, &name, &path, &methods, &admin);
        cJSON *item = cJSON_GetObjectItemCaseSensitive(paths, path);
        cr_expect(cJSON_IsObject(item), "route %s: path %s is not in openapi.json", name, path);
        for (int k = 0; k < N_METHOD_KEYS; k++) {
            if (!(methods & METHODS[k].bit)) continue;
            cr_expect(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(item, METHODS[k].key)),
                      "route %s: %s %s is not documented in openapi.json (HEAD is documented explicitly)", name,
                      METHODS[k].name, path);
        }
    }
    cJSON_Delete(doc);
}

Test(openapi, documents_only_routes) {
    cJSON *doc = doc_load();
    cJSON *item;
    cJSON_ArrayForEach(item, paths_of(doc)) {
        unsigned methods = 0, admin = 0;
        int row = route_of(item->string, &methods, &admin);
        cr_expect_geq(row, 0, "openapi.json documents %s, which is no path of the route table (server/http.c ROUTES)",
                      item->string);
        for (int k = 0; k < N_METHOD_KEYS; k++)
            if (cJSON_GetObjectItemCaseSensitive(item, METHODS[k].key) != NULL)
                cr_expect(methods & METHODS[k].bit, "openapi.json documents %s %s, which the route table does not take",
                          METHODS[k].name, item->string);
    }
    cJSON_Delete(doc);
}

Test(openapi, admin_methods_and_only_they_need_the_token) {
    cJSON *doc = doc_load();
    cr_expect_null(cJSON_GetObjectItemCaseSensitive(doc, "security"),
                   "a top-level security would put the token on the read routes too");
    cJSON *scheme = resolve(doc, "#/components/securitySchemes/adminToken");
    cr_assert_not_null(scheme, "no security scheme adminToken");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(scheme, "type")), "http");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(scheme, "scheme")), "bearer");
    cJSON *paths = paths_of(doc);
    for (int i = 0; i < srv_http_route_count(); i++) {
        const char *name, *path;
        unsigned methods, admin;
        srv_http_route_get(i, &name, &path, &methods, &admin);
        for (int k = 0; k < N_METHOD_KEYS; k++) {
            cJSON *op = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(paths, path), METHODS[k].key);
            if (!(methods & METHODS[k].bit) || op == NULL) continue;
            cJSON *sec = cJSON_GetObjectItemCaseSensitive(op, "security");
            if (admin & METHODS[k].bit) {
                cr_expect(cJSON_IsArray(sec) && cJSON_GetArraySize(sec) == 1 &&
                              cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(sec, 0), "adminToken")),
                          "%s %s is an admin method: its security must be [{\"adminToken\": []}]", METHODS[k].name, path);
                cJSON *responses = cJSON_GetObjectItemCaseSensitive(op, "responses");
                cr_expect(cJSON_HasObjectItem(responses, "401") && cJSON_HasObjectItem(responses, "403"),
                          "%s %s is an admin method: it answers 401 and 403", METHODS[k].name, path);
            } else {
                cr_expect(sec == NULL || cJSON_GetArraySize(sec) == 0,
                          "%s %s needs no admin rights: it must have no security", METHODS[k].name, path);
            }
        }
    }
    cJSON_Delete(doc);
}

/* ------------------------------------------------------------ operations */

/* Checks the error answer resp (status st >= 400) of method key ("GET") on path:
 * its description names at least one code, only codes of x-error-codes,
 * in backquotes; it has the Error schema (a HEAD answer has no body); a
 * 503 says Retry-After. */
static void check_error_response(cJSON *doc, const char *key, const char *path, int st, cJSON *resp) {
    const char *desc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp, "description"));
    int codes = 0;
    for (const char *p = desc != NULL ? strchr(desc, '`') : NULL; p != NULL; p = strchr(p, '`')) {
        const char *end = strchr(p + 1, '`');
        if (end == NULL) break;
        size_t n = (size_t)(end - p - 1);
        cr_expect(listed_code(doc, p + 1, n), "%s %s: the %d answer names `%.*s`, which is not in x-error-codes", key,
                  path, st, (int)n, p + 1);
        codes++;
        p = end + 1;
    }
    cr_expect_gt(codes, 0, "%s %s: the description of its %d answer names no error code in backquotes", key, path, st);
    if (strcmp(key, "HEAD") != 0) {
        cJSON *schema = resolve(resp, "#/content/application~1json/schema/$ref");
        cr_expect(cJSON_IsString(schema) && strcmp(schema->valuestring, "#/components/schemas/Error") == 0,
                  "%s %s: its %d answer is not application/json with the Error schema", key, path, st);
    }
    if (st == 503)
        cr_expect(resolve(resp, "#/headers/Retry-After") != NULL, "%s %s: its 503 answer does not say Retry-After", key,
                  path);
}

/* Checks that every {param} of path is a declared, required path
 * parameter of the path item or of the operation op. */
static void check_path_params(cJSON *doc, const char *key, const char *path, cJSON *item, cJSON *op) {
    for (const char *p = strchr(path, '{'); p != NULL; p = strchr(p + 1, '{')) {
        size_t n = strcspn(p + 1, "}");
        int found = 0;
        cJSON *lists[2] = {cJSON_GetObjectItemCaseSensitive(item, "parameters"),
                           cJSON_GetObjectItemCaseSensitive(op, "parameters")};
        for (int l = 0; l < 2; l++) {
            cJSON *prm;
            cJSON_ArrayForEach(prm, lists[l]) {
                cJSON *d = deref(doc, prm);
                const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "name"));
                const char *in = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "in"));
                if (name != NULL && in != NULL && strcmp(in, "path") == 0 && strlen(name) == n &&
                    strncmp(name, p + 1, n) == 0 && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "required")))
                    found = 1;
            }
        }
        cr_expect(found, "%s %s: its path parameter {%.*s} is not declared (in: path, required: true)", key, path,
                  (int)n, p + 1);
    }
}

Test(openapi, every_operation_is_complete) {
    cJSON *doc = doc_load();
    char seen[4096] = ",";
    cJSON *item;
    cJSON_ArrayForEach(item, paths_of(doc)) {
        const char *path = item->string;
        for (int k = 0; k < N_METHOD_KEYS; k++) {
            const char *key = METHODS[k].name;
            cJSON *op = cJSON_GetObjectItemCaseSensitive(item, METHODS[k].key);
            if (op == NULL) continue;
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "operationId"));
            cr_expect(id != NULL && id[0] != '\0', "%s %s has no operationId", key, path);
            if (id != NULL && id[0] != '\0') {
                char mark[160];
                snprintf(mark, sizeof mark, ",%s,", id);
                cr_expect_null(strstr(seen, mark), "%s %s: operationId %s is used twice", key, path, id);
                if (strlen(seen) + strlen(id) + 2 < sizeof seen) strcat(strcat(seen, id), ",");
            }
            check_path_params(doc, key, path, item, op);
            cJSON *responses = cJSON_GetObjectItemCaseSensitive(op, "responses");
            cr_expect(cJSON_IsObject(responses), "%s %s has no responses", key, path);
            int ok2xx = 0;
            cJSON *r;
            cJSON_ArrayForEach(r, responses) {
                int st = atoi(r->string);
                cJSON *resp = deref(doc, r);
                cr_expect_not_null(resp, "%s %s: its %s answer is a $ref that does not resolve", key, path, r->string);
                if (resp == NULL) continue;
                const char *desc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp, "description"));
                cr_expect(desc != NULL && desc[0] != '\0', "%s %s: its %s answer has no description", key, path,
                          r->string);
                if (st >= 200 && st < 300) ok2xx = 1;
                if (st >= 400) check_error_response(doc, key, path, st, resp);
            }
            cr_expect(ok2xx, "%s %s documents no 2xx answer", key, path);
        }
        /* HEAD is GET without the body: the same statuses. */
        cJSON *get = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(item, "get"), "responses");
        cJSON *head = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(item, "head"), "responses");
        if (get == NULL || head == NULL) continue;
        cJSON *r;
        cJSON_ArrayForEach(r, get)
            cr_expect(cJSON_HasObjectItem(head, r->string), "HEAD %s: GET answers %s, HEAD does not say so", path,
                      r->string);
        cJSON_ArrayForEach(r, head)
            cr_expect(cJSON_HasObjectItem(get, r->string), "HEAD %s: HEAD answers %s, GET does not say so", path,
                      r->string);
    }
    cJSON_Delete(doc);
}

/* ------------------------------------------------------------ references and codes */

/* Checks every $ref under item (found at the JSON pointer at) resolves in doc. */
static void check_refs(cJSON *doc, cJSON *item, const char *at) {
    cJSON *c;
    int i = 0;
    cJSON_ArrayForEach(c, item) {
        char where[512];
        if (c->string != NULL) snprintf(where, sizeof where, "%s/%s", at, c->string);
        else snprintf(where, sizeof where, "%s/%d", at, i);
        i++;
        if (c->string != NULL && strcmp(c->string, "$ref") == 0) {
            cr_expect(cJSON_IsString(c) && resolve(doc, c->valuestring) != NULL, "$ref %s at %s does not resolve",
                      cJSON_IsString(c) ? c->valuestring : "(not a string)", at);
            continue;
        }
        if (cJSON_IsObject(c) || cJSON_IsArray(c)) check_refs(doc, c, where);
    }
}

Test(openapi, every_ref_resolves) {
    cJSON *doc = doc_load();
    check_refs(doc, doc, "#");
    cJSON_Delete(doc);
}

Test(openapi, error_codes_are_listed_once_in_order) {
    cJSON *doc = doc_load();
    cJSON *codes = cJSON_GetObjectItemCaseSensitive(doc, "x-error-codes");
    cr_assert(cJSON_IsArray(codes) && cJSON_GetArraySize(codes) > 0, "openapi.json has no x-error-codes list");
    const char *prev = NULL;
    cJSON *c;
    cJSON_ArrayForEach(c, codes) {
        const char *s = cJSON_GetStringValue(c);
        cr_assert_not_null(s, "x-error-codes holds something that is not a string");
        int snake = islower((unsigned char)s[0]) != 0;
        for (const char *p = s; *p != '\0'; p++) snake &= islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_';
        cr_expect(snake, "x-error-codes: \"%s\" is not snake_case", s);
        cr_expect(prev == NULL || strcmp(prev, s) < 0, "x-error-codes: \"%s\" comes after \"%s\": sorted, once each", s,
                  prev);
        prev = s;
    }
    cJSON_Delete(doc);
}

Test(openapi, every_error_code_is_explained) {
    cJSON *doc = doc_load();
    /* The paths, the shared answers and the API's description: where an
     * error code is named, in backquotes, with when it is answered. */
    char *paths = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc, "paths"));
    char *shared = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc, "components"));
    const char *desc = cJSON_GetStringValue(resolve(doc, "#/info/description"));
    cr_assert(paths != NULL && shared != NULL && desc != NULL, "openapi.json has no paths, components or description");
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "x-error-codes")) {
        char quoted[96];
        snprintf(quoted, sizeof quoted, "`%s`", cJSON_GetStringValue(c));
        cr_expect(strstr(paths, quoted) != NULL || strstr(shared, quoted) != NULL || strstr(desc, quoted) != NULL,
                  "x-error-codes: %s is named by no answer and not in the description", quoted);
    }
    free(paths);
    free(shared);
    cJSON_Delete(doc);
}
