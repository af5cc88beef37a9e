#include "cache/volume.h"

#include <stdlib.h>

#include "cache/backend.h"

/* Until the write-back cache exists, a volume forwards every I/O to its backend. */
struct volume {
        struct backend *backend;
};

struct volume *volume_create(struct backend *backend)
{
        struct volume *v = calloc(1, sizeof(*v));
        if (v)
                v->backend = backend;
        return v;
}

void volume_destroy(struct volume *v)
{
        free(v);
}

uint64_t volume_size(const struct volume *v)
{
        return backend_size(v->backend);
}

void volume_submit(struct volume *v, struct volume_io *io)
{
        backend_submit(v->backend, io);
}
