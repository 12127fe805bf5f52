/* auth.h - the admin routes' access rule.
 *
 * With a token configured (--admin-token / DAE_ADMIN_TOKEN) an admin
 * request needs "Authorization: Bearer <token>", compared in constant
 * time; without one, only loopback clients (127.0.0.0/8, ::1, and IPv4
 * loopback mapped into IPv6) are admitted, as Redis' protected mode, and
 * only when the request did not come through a proxy: a reverse proxy on
 * the same host (KServe's queue-proxy, an nginx in front) connects from
 * loopback on behalf of anyone, and says so in Forwarded,
 * X-Forwarded-For or X-Real-IP. */
#ifndef SRV_AUTH_H
#define SRV_AUTH_H

#include <sys/socket.h>

typedef enum {
    SRV_AUTH_OK = 0,
    SRV_AUTH_UNAUTHORIZED, /* 401: token missing or wrong */
    SRV_AUTH_FORBIDDEN,    /* 403: no token configured and not a loopback client */
} srv_auth_result;

/* Decides an admin request: token is the configured token (NULL or ""
 * for none), authorization the request's Authorization header (or NULL),
 * client its address (or NULL when unknown, which is not loopback),
 * proxied 1 when it carries one of the headers a proxy adds. */
srv_auth_result srv_auth_check(const char *token, const char *authorization, const struct sockaddr *client,
                               int proxied);

/* The headers a reverse proxy adds to say whom a request is from. */
#define SRV_AUTH_PROXY_HEADERS {"Forwarded", "X-Forwarded-For", "X-Real-IP"}

/* 1 when a and b are equal, in time that depends only on their lengths. */
int srv_auth_equal(const char *a, const char *b);

/* 1 when sa is a loopback address. */
int srv_auth_is_loopback(const struct sockaddr *sa);

#endif
