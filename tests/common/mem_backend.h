/* mem_backend: a test backend holding a LUN in memory. Like real backends it never
 * completes an I/O inside submit: completions run when the test calls
 * mem_backend_complete_all(), so tests choose when the "disk" answers. */
#ifndef ISERGW_TESTS_MEM_BACKEND_H
#define ISERGW_TESTS_MEM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "cache/backend.h"

struct mem_backend {
        struct backend base;
        uint8_t *bytes;
        uint64_t size;
        struct volume_io *pending; /* submitted, not yet completed */
        unsigned writes;           /* write I/Os completed */
};

struct mem_backend *mem_backend_create(uint64_t size);
/* Completes everything pending; true if there was anything. */
bool mem_backend_complete_all(struct mem_backend *m);

#endif
