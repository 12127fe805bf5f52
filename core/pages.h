/* pages.h - a fresh buffer's pages asked of the kernel at once.
 *
 * A buffer of more than a few pages that malloc maps anew gets each page
 * from the kernel at the first write to it: a fault a page. On some
 * virtual machines a fault is dear: on the development machine a
 * 1000x1000 image through /denoise took 1,749 of them, most in four such
 * buffers. So the engine and both front ends ask for a big buffer's
 * pages in one call before they write it, where the data has shown its
 * size: a decoded image's planes, an answer as it grows, a data set
 * file's bytes. Never for a size a client only claims (a body's
 * Content-Length, an image header's width and height): those pages come
 * as the data does, so a claim costs the server nothing until it is
 * sent. */
#ifndef DAE_PAGES_H
#define DAE_PAGES_H

#include <stddef.h>

/* Buffers below this many bytes are left to fault: one call costs about
 * as much as a few faults. */
#define DAE_PREFAULT_MIN ((size_t)64 << 10)

/* Maps the whole pages of [p, p + bytes) for writing, when bytes >=
 * DAE_PREFAULT_MIN. A hint: a kernel before 5.14, or one that refuses,
 * leaves the pages to come at their first write. Contents are kept. */
void dae_prefault(void *p, size_t bytes);

#endif
