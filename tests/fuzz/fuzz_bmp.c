/* fuzz_bmp.c - libFuzzer target: arbitrary bytes through the BMP decoder
 * (see fuzz_image.h for the checks). */
#define FUZZ_FORMAT "BMP"
#include "fuzz_image.h"
