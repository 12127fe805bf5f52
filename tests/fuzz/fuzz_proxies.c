/* fuzz_proxies.c - libFuzzer target: --trusted-proxies and the
 * X-Forwarded-For a client sends (server/proxies.c). The input's first
 * line is the list of proxies, the rest the header. Checks the promises:
 * a parsed network has no host bits set, a peer not trusted never gets
 * a forwarded client, and a forwarded client is not a trusted proxy's
 * address unless every address the header names is one. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/proxies.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (text == NULL) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *xff = strchr(text, '\n');
    if (xff != NULL) *xff++ = '\0';
    srv_proxies p;
    char err[160] = "";
    if (srv_proxies_parse(&p, text, err, sizeof err) == 0) {
        if (p.n < 0 || p.n > SRV_PROXIES_MAX) abort();
        for (int i = 0; i < p.n; i++) {
            int max_bits = p.net[i].family == AF_INET ? 32 : 128;
            if (p.net[i].bits < 0 || p.net[i].bits > max_bits) abort();
            for (int b = p.net[i].bits; b < max_bits; b++)
                if (p.net[i].addr[b / 8] & (0x80 >> (b % 8))) abort();
        }
        struct sockaddr_in peer = {.sin_family = AF_INET};
        memcpy(&peer.sin_addr, "\x7f\x00\x00\x01", 4); /* 127.0.0.1 */
        struct sockaddr_storage client;
        int forwarded = srv_proxies_client(&p, (const struct sockaddr *)&peer, xff, &client);
        if (forwarded && !srv_proxies_trust(&p, (const struct sockaddr *)&peer)) abort();
        if (forwarded && client.ss_family != AF_INET && client.ss_family != AF_INET6) abort();
        if (forwarded && srv_proxies_trust(&p, (const struct sockaddr *)&client)) {
            /* Every item read was a trusted address: none of the header's
             * addresses, read from the right, stops the walk. */
            for (char *item = strtok(xff, ","); item != NULL; item = strtok(NULL, ",")) {
                while (*item == ' ' || *item == '\t') item++;
                size_t len = strlen(item);
                while (len > 0 && (item[len - 1] == ' ' || item[len - 1] == '\t')) len--;
                int family;
                unsigned char a[16] = {0};
                if (len == 0) continue; /* an empty item, skipped */
                if (!read_addr(item, len, 1, &family, a)) abort();
                unmap(&family, a);
                if (!trusted(&p, family, a)) abort();
            }
        }
    } else if (err[0] == '\0') {
        abort(); /* a refusal says why */
    }
    free(text);
    return 0;
}
