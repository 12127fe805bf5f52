/* fuzz_gif.c - libFuzzer target: arbitrary bytes through the GIF decoder
 * (see fuzz_image.h for the checks). */
#define FUZZ_FORMAT "GIF"
#include "fuzz_image.h"
