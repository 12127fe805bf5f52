/* test_proxies.c - unit tests of the trusted proxies and the client a
 * request they forward comes from (server/proxies.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "../server/proxies.h"
#include "test_util.h"

static srv_proxies proxies_of(const char *list) {
    srv_proxies p;
    char err[160] = "";
    cr_assert_eq(srv_proxies_parse(&p, list, err, sizeof err), 0, "%s: %s", list, err);
    return p;
}

static int trusts(const srv_proxies *p, const char *addr) {
    struct sockaddr_storage ss = test_addr(addr);
    return srv_proxies_trust(p, (const struct sockaddr *)&ss);
}

/* The client p finds for a request from peer with X-Forwarded-For xff,
 * as text, or "" when the request is peer's. */
static const char *client_of(const srv_proxies *p, const char *peer, const char *xff) {
    static char text[INET6_ADDRSTRLEN];
    struct sockaddr_storage from = test_addr(peer), client;
    text[0] = '\0';
    if (!srv_proxies_client(p, (const struct sockaddr *)&from, xff, &client)) return text;
    if (client.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&client)->sin_addr, text, sizeof text);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&client)->sin6_addr, text, sizeof text);
    return text;
}

Test(proxies, networks_and_addresses) {
    srv_proxies p = proxies_of(" 10.1.2.3 , 192.168.0.0/16,2001:db8:a::/48,172.16.5.0/22");
    cr_assert_eq(p.n, 4);
    cr_assert(trusts(&p, "10.1.2.3"));
    cr_assert_not(trusts(&p, "10.1.2.4"), "no /BITS: that one address");
    cr_assert(trusts(&p, "192.168.255.1"));
    cr_assert_not(trusts(&p, "192.169.0.1"));
    cr_assert(trusts(&p, "::ffff:192.168.3.4"), "IPv4-mapped: its IPv4 address");
    cr_assert(trusts(&p, "2001:db8:a:ffff::1"));
    cr_assert_not(trusts(&p, "2001:db8:b::1"));
    cr_assert(trusts(&p, "172.16.7.255"), "172.16.5.0/22 is 172.16.4.0 - 172.16.7.255: host bits cleared");
    cr_assert_not(trusts(&p, "172.16.8.0"));
    srv_proxies all = proxies_of("0.0.0.0/0,::/0");
    cr_assert(trusts(&all, "203.0.113.9") && trusts(&all, "2001:db8::9"));
    srv_proxies none = proxies_of("");
    cr_assert_eq(none.n, 0);
    cr_assert_not(trusts(&none, "127.0.0.1"));
}

Test(proxies, malformed_lists_are_refused) {
    const char *bad[] = {"bad", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/8x", "10.0.0.0/-1", "1.2.3",
                         "10.0.0.0/8,", "[::1]", "1.2.3.4:80", "10.0.0.0 /8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_proxies p;
        char err[160] = "";
        cr_assert_eq(srv_proxies_parse(&p, bad[i], err, sizeof err), -1, "%s was taken", bad[i]);
        cr_assert_neq(err[0], '\0', "%s: no reason given", bad[i]);
    }
    char list[1024] = "";
    for (int i = 0; i <= SRV_PROXIES_MAX; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "10.0.0.%d,", i);
    list[strlen(list) - 1] = '\0';
    srv_proxies p;
    char err[160] = "";
    cr_assert_eq(srv_proxies_parse(&p, list, err, sizeof err), -1, "more than SRV_PROXIES_MAX networks");
    cr_assert(strstr(err, "more than") != NULL, "%s", err);
}

Test(proxies, the_client_is_the_rightmost_address_no_trusted_proxy_wrote) {
    srv_proxies p = proxies_of("127.0.0.1,10.0.0.0/8");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "198.51.100.7"), "198.51.100.7");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "198.51.100.7, 10.2.3.4"), "198.51.100.7",
                     "a trusted hop on the way is skipped");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "6.6.6.6, 198.51.100.7"), "198.51.100.7",
                     "what the client wrote itself, left of its address, is never believed");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "not an address, 198.51.100.7"), "198.51.100.7",
                     "nor read");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "10.0.0.1, 10.9.9.9"), "10.0.0.1", "all trusted: the leftmost");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "198.51.100.7:51234"), "198.51.100.7", "IPv4 with a port");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "[2001:db8::7]:443"), "2001:db8::7", "IPv6 with a port");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "[2001:db8::7]"), "2001:db8::7");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "2001:db8::7"), "2001:db8::7");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "::ffff:10.1.1.1, ::ffff:198.51.100.7"), "198.51.100.7",
                     "IPv4-mapped addresses are their IPv4 addresses");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "198.51.100.7,,\t"), "198.51.100.7", "empty items are skipped");
    /* The two headers of a request, joined in order: the proxy's is last. */
    cr_assert_str_eq(client_of(&p, "::ffff:127.0.0.1", "6.6.6.6,198.51.100.8"), "198.51.100.8");
}

Test(proxies, otherwise_the_request_is_the_connections) {
    srv_proxies p = proxies_of("127.0.0.1");
    cr_assert_str_eq(client_of(&p, "127.0.0.2", "198.51.100.7"), "", "a peer not trusted: its header is ignored");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", NULL), "", "no header");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", ""), "");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", " , "), "");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "198.51.100.7, unknown"), "",
                     "a trusted proxy's item that is no address: not understood");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "198.51.100.7:80:90"), "");
    cr_assert_str_eq(client_of(&p, "127.0.0.1", "[2001:db8::7"), "");
    char long_item[200];
    memset(long_item, '1', sizeof long_item - 1);
    long_item[sizeof long_item - 1] = '\0';
    cr_assert_str_eq(client_of(&p, "127.0.0.1", long_item), "");
    srv_proxies none = proxies_of("");
    cr_assert_str_eq(client_of(&none, "127.0.0.1", "198.51.100.7"), "", "no trusted proxies: no header is read");
}
