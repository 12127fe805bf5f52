/* jsontext.c - what the JSON parser (cJSON) cannot tell about a text. */
#include "jsontext.h"

#include <string.h>

long dae_json_find_nul(const char *text, size_t len) {
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\0') return (long)i;
        if (!in_string) {
            in_string = c == '"';
        } else if (c == '"') {
            in_string = 0;
        } else if (c == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0) return (long)i;
            i++; /* the escaped character: \" and \\ end nothing */
        }
    }
    return -1;
}
