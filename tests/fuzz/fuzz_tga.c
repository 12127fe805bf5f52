/* fuzz_tga.c - libFuzzer target: arbitrary bytes through the TGA decoder
 * (see fuzz_image.h for the checks). */
#define FUZZ_FORMAT "TGA"
#include "fuzz_image.h"
