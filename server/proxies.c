/* proxies.c - trusted proxies and the clients they forward (proxies.h). */
#include "proxies.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest item of X-Forwarded-For read: "[IPV6]:PORT". */
#define ITEM_MAX (INET6_ADDRSTRLEN + 8)

/* Reads the address text[0 .. len) ("ADDR", "IPV4:PORT", "[IPV6]",
 * "[IPV6]:PORT"; with_port: the port forms too) into family and a[].
 * Returns 1, or 0 when it is none. */
static int read_addr(const char *text, size_t len, int with_port, int *family, unsigned char a[16]) {
    char buf[ITEM_MAX];
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *s = buf;
    if (with_port && s[0] == '[') {
        char *close = strchr(s, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) return 0;
        *close = '\0';
        s++;
        if (inet_pton(AF_INET6, s, a) != 1) return 0;
        *family = AF_INET6;
        return 1;
    }
    char *colon = strchr(s, ':');
    if (with_port && colon != NULL && strchr(colon + 1, ':') == NULL) *colon = '\0'; /* IPV4:PORT */
    if (inet_pton(AF_INET, s, a) == 1) {
        *family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, s, a) == 1) {
        *family = AF_INET6;
        return 1;
    }
    return 0;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 address. */
static void unmap(int *family, unsigned char a[16]) {
    if (*family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)a)) {
        memmove(a, a + 12, 4);
        *family = AF_INET;
    }
}

int srv_addr_of(const struct sockaddr *addr, unsigned char a[16]) {
    int family = addr != NULL ? addr->sa_family : 0;
    if (family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, 4);
    } else if (family == AF_INET6) {
        memcpy(a, ((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr.s6_addr, 16);
        unmap(&family, a);
    } else {
        return 0;
    }
    return family;
}

void srv_addr_text(const struct sockaddr *addr, char *buf) {
    strcpy(buf, "-");
    if (addr == NULL) return;
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, buf, INET6_ADDRSTRLEN);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr, buf, INET6_ADDRSTRLEN);
}

/* 1 when the first bits of a and b agree. */
static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits) {
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0) return 0;
    if (rest == 0) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

static int trusted(const srv_proxies *p, int family, const unsigned char a[16]) {
    for (int i = 0; i < p->n; i++)
        if (p->net[i].family == family && prefix_equal(p->net[i].addr, a, p->net[i].bits)) return 1;
    return 0;
}

int srv_proxies_parse(srv_proxies *p, const char *list, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (list == NULL || list[strspn(list, " \t")] == '\0') return 0;
    for (const char *s = list;; s++) { /* an item, then its comma */
        const char *end = strchr(s, ',');
        if (end == NULL) end = s + strlen(s);
        const char *a = s, *b = end;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        const char *slash = memchr(a, '/', (size_t)(b - a));
        srv_net net = {0};
        int max_bits = 0;
        if (read_addr(a, (size_t)((slash != NULL ? slash : b) - a), 0, &net.family, net.addr))
            max_bits = net.family == AF_INET ? 32 : 128;
        net.bits = max_bits;
        if (max_bits > 0 && slash != NULL) {
            char *num_end = NULL;
            long bits = slash + 1 < b && isdigit((unsigned char)slash[1]) ? strtol(slash + 1, &num_end, 10) : -1;
            net.bits = bits >= 0 && bits <= max_bits && num_end == b ? (int)bits : -1;
        }
        if (max_bits == 0 || net.bits < 0) {
            snprintf(err, errlen, "\"%.*s\" is not an address (IPv4 or IPv6) or a network ADDR/BITS", (int)(b - a), a);
            return -1;
        }
        if (p->n == SRV_PROXIES_MAX) {
            snprintf(err, errlen, "more than %d networks", SRV_PROXIES_MAX);
            return -1;
        }
        for (int i = net.bits; i < max_bits; i++) net.addr[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
        p->net[p->n++] = net;
        if (*end == '\0') return 0;
        s = end;
    }
}

int srv_proxies_trust(const srv_proxies *p, const struct sockaddr *addr) {
    unsigned char a[16] = {0};
    int family = srv_addr_of(addr, a);
    return family != 0 && trusted(p, family, a);
}

int srv_proxies_client(const srv_proxies *p, const struct sockaddr *peer, const char *xff,
                       struct sockaddr_storage *client) {
    if (p->n == 0 || xff == NULL || !srv_proxies_trust(p, peer)) return 0;
    int family = 0, found = 0;
    unsigned char a[16] = {0};
    for (const char *end = xff + strlen(xff); end > xff;) { /* items from the right */
        const char *start = end;
        while (start > xff && start[-1] != ',') start--;
        const char *x = start, *y = end;
        end = start > xff ? start - 1 : xff;
        while (x < y && (*x == ' ' || *x == '\t')) x++;
        while (y > x && (y[-1] == ' ' || y[-1] == '\t')) y--;
        if (x == y) continue; /* an empty item, as "a,,b" */
        if (!read_addr(x, (size_t)(y - x), 1, &family, a)) return 0;
        unmap(&family, a);
        found = 1;
        if (!trusted(p, family, a)) break;
    }
    if (!found) return 0;
    memset(client, 0, sizeof *client);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)(void *)client;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)client;
        in6->sin6_family = AF_INET6;
        memcpy(in6->sin6_addr.s6_addr, a, 16);
    }
    return 1;
}
