/* fuzz_pnm.c - libFuzzer target: arbitrary bytes through the PNM decoder
 * (see fuzz_image.h for the checks). */
#define FUZZ_FORMAT "PNM"
#include "fuzz_image.h"
