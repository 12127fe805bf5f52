/* auth.c - the admin routes' access rule: bearer token in constant time,
 * or loopback clients only. */
#include "auth.h"

#include <netinet/in.h>
#include <string.h>
#include <strings.h>

int srv_auth_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    /* Compare over the longer length, so the time tells nothing about
     * where the first difference is. */
    size_t n = na > nb ? na : nb;
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < na ? (unsigned char)a[i] : 0, cb = i < nb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(ca ^ cb);
    }
    return diff == 0;
}

int srv_auth_is_loopback(const struct sockaddr *sa) {
    if (sa == NULL) return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return 1;
        return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

srv_auth_result srv_auth_check(const char *token, const char *authorization, const struct sockaddr *client,
                               int proxied) {
    if (token == NULL || token[0] == '\0')
        return srv_auth_is_loopback(client) && !proxied ? SRV_AUTH_OK : SRV_AUTH_FORBIDDEN;
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0) return SRV_AUTH_UNAUTHORIZED;
    const char *given = authorization + 7;
    while (*given == ' ') given++;
    return srv_auth_equal(given, token) ? SRV_AUTH_OK : SRV_AUTH_UNAUTHORIZED;
}
