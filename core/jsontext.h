/* jsontext.h - what the JSON parser (cJSON) cannot tell about a text. */
#ifndef DAE_JSONTEXT_H
#define DAE_JSONTEXT_H

#include <stddef.h>

/* The byte offset in text[0..len) of the first NUL a JSON string would
 * hold (the escape \u0000, or a NUL byte), or -1 for none. cJSON decodes
 * it into the string, whose C string then ends there: "mnist\u0000x"
 * would read as "mnist". Escaped backslashes ("\\u0000") are not one. */
long dae_json_find_nul(const char *text, size_t len);

#endif
