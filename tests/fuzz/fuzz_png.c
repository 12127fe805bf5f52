/* fuzz_png.c - libFuzzer target: arbitrary bytes through the PNG decoder
 * (see fuzz_image.h for the checks), as they are and with their chunk
 * CRCs repaired so that mutations reach libpng. */
#define FUZZ_FORMAT "PNG"
#define FUZZ_PNG_FIX_CRC
#include "fuzz_image.h"
