/* pages.c - a fresh buffer's pages asked of the kernel at once (pages.h). */
#include "pages.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

void dae_prefault(void *p, size_t bytes) {
#ifdef MADV_POPULATE_WRITE
    if (p == NULL || bytes < DAE_PREFAULT_MIN) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + bytes) & ~(page - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
#else
    (void)p, (void)bytes;
#endif
}
