/* fuzz_jpeg.c - libFuzzer target: arbitrary bytes through the JPEG decoder
 * (see fuzz_image.h for the checks). */
#define FUZZ_FORMAT "JPEG"
#include "fuzz_image.h"
