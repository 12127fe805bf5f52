/* proxies.h - the proxies whose X-Forwarded-For the server believes
 * (--trusted-proxies), and the client a request they forward comes from.
 *
 * Behind a proxy every connection comes from the proxy's address, so
 * without this every user is one client (clients.h). A trusted proxy's
 * X-Forwarded-For names the client instead: its rightmost address that is
 * not itself a trusted proxy's, the way nginx's real_ip module reads it.
 * Each proxy appends the address it saw, so the addresses right of the
 * client's were written by trusted proxies; what lies left of it came
 * from the client, and is never read. A connection from any other address
 * is its own client, whatever it sends. */
#ifndef SRV_PROXIES_H
#define SRV_PROXIES_H

#include <stddef.h>
#include <sys/socket.h>

/* Most networks --trusted-proxies may list. */
#define SRV_PROXIES_MAX 32

typedef struct {
    int family;              /* AF_INET or AF_INET6 */
    int bits;                /* prefix length */
    unsigned char addr[16];  /* the network's address (4 bytes for IPv4), host bits zero */
} srv_net;

typedef struct {
    int n;
    srv_net net[SRV_PROXIES_MAX];
} srv_proxies;

/* Parses "ADDR[/BITS][,ADDR[/BITS]...]" (IPv4 or IPv6 addresses; no BITS:
 * that one address; spaces around items allowed) into *p. Returns 0, or
 * -1 with the reason in err. */
int srv_proxies_parse(srv_proxies *p, const char *list, char *err, size_t errlen);

/* addr's family (AF_INET or AF_INET6; 0: neither) with its address in a
 * (4 or 16 bytes); an IPv4-mapped IPv6 address is its IPv4 address. */
int srv_addr_of(const struct sockaddr *addr, unsigned char a[16]);

/* addr as text in buf (INET6_ADDRSTRLEN bytes), as inet_ntop writes it;
 * "-" for an address that is neither IPv4 nor IPv6, or NULL. */
void srv_addr_text(const struct sockaddr *addr, char *buf);

/* 1 when addr lies in one of p's networks (an IPv4-mapped IPv6 address
 * as its IPv4 address). */
int srv_proxies_trust(const srv_proxies *p, const struct sockaddr *addr);

/* The client of a request from peer whose X-Forwarded-For headers, joined
 * with commas in the order received, are xff (NULL: none). Returns 1 and
 * fills *client when peer is trusted and xff names a client: its
 * rightmost address not trusted, or its leftmost when all are. Returns 0
 * (the request is peer's) when peer is not trusted, there is no xff, or
 * an item right of the client's is not an address: a trusted proxy wrote
 * those, and one that writes something else is not understood. An item
 * may be "ADDR", "IPV4:PORT", "[IPV6]" or "[IPV6]:PORT". */
int srv_proxies_client(const srv_proxies *p, const struct sockaddr *peer, const char *xff,
                       struct sockaddr_storage *client);

#endif
