/* clients.c - the table of clients: a hash of their keys (clients.h). */
#include "clients.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxies.h"

/* Chains; the table holds at most the connections' clients, a few
 * hundred to a few thousand. */
#define BUCKETS 1024

struct srv_clients {
    pthread_mutex_t mu;
    srv_client *bucket[BUCKETS];
    long count;
};

srv_clients *srv_clients_new(void) {
    srv_clients *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void srv_clients_free(srv_clients *t) {
    if (t == NULL) return;
    for (int i = 0; i < BUCKETS; i++)
        for (srv_client *c = t->bucket[i], *next; c != NULL; c = next) {
            next = c->next;
            free(c);
        }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* The key of addr; 0 when it has none. */
static int key_of(const struct sockaddr *addr, unsigned char key[17]) {
    unsigned char a[16] = {0};
    int family = srv_addr_of(addr, a);
    memset(key, 0, 17);
    if (family == 0) return 0;
    key[0] = family == AF_INET ? 4 : 6;
    memcpy(key + 1, a, family == AF_INET ? 4 : 8); /* an IPv6 address's /64 */
    return 1;
}

static unsigned hash_of(const unsigned char key[17]) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 17; i++) h = (h ^ key[i]) * 16777619u;
    return h % BUCKETS;
}

srv_client *srv_clients_get(srv_clients *t, const struct sockaddr *addr) {
    unsigned char key[17];
    if (t == NULL || !key_of(addr, key)) return NULL;
    unsigned b = hash_of(key);
    pthread_mutex_lock(&t->mu);
    srv_client *c = t->bucket[b];
    while (c != NULL && memcmp(c->key, key, sizeof key) != 0) c = c->next;
    if (c == NULL && (c = calloc(1, sizeof *c)) != NULL) {
        memcpy(c->key, key, sizeof key);
        atomic_init(&c->memory.used, 0);
        c->next = t->bucket[b];
        t->bucket[b] = c;
        t->count++;
    }
    if (c != NULL) c->refs++;
    pthread_mutex_unlock(&t->mu);
    return c;
}

srv_client *srv_clients_ref(srv_clients *t, srv_client *c) {
    if (c == NULL) return NULL;
    pthread_mutex_lock(&t->mu);
    c->refs++;
    pthread_mutex_unlock(&t->mu);
    return c;
}

void srv_clients_put(srv_clients *t, srv_client *c) {
    if (c == NULL) return;
    pthread_mutex_lock(&t->mu);
    if (--c->refs == 0) {
        srv_client **p = &t->bucket[hash_of(c->key)];
        while (*p != c) p = &(*p)->next;
        *p = c->next;
        t->count--;
        free(c);
    }
    pthread_mutex_unlock(&t->mu);
}

void srv_client_name(const srv_client *c, char *buf, size_t len) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (c->key[0] == 4) {
        inet_ntop(AF_INET, c->key + 1, text, sizeof text);
        snprintf(buf, len, "%s", text);
    } else {
        unsigned char a[16] = {0};
        memcpy(a, c->key + 1, 8);
        inet_ntop(AF_INET6, a, text, sizeof text);
        snprintf(buf, len, "%s/64", text);
    }
}

long srv_clients_count(srv_clients *t) {
    pthread_mutex_lock(&t->mu);
    long n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}
