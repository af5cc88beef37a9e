#include "tests/common/mem_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void mem_run(struct mem_backend *m, struct volume_io *io)
{
        uint64_t off = io->offset;
        if (io->op == VOLUME_READ || io->op == VOLUME_WRITE) {
                for (int i = 0; i < io->iovcnt; i++) {
                        size_t len = io->iov[i].iov_len;
                        if (off + len > m->size) {
                                io->done(io, -EIO);
                                return;
                        }
                        if (io->op == VOLUME_READ)
                                memcpy(io->iov[i].iov_base, m->bytes + off, len);
                        else
                                memcpy(m->bytes + off, io->iov[i].iov_base, len);
                        off += len;
                }
                if (io->op == VOLUME_WRITE)
                        m->writes++;
        } else if (io->op != VOLUME_FLUSH && io->offset + io->length <= m->size) {
                memset(m->bytes + io->offset, 0, io->length);
        }
        io->done(io, 0);
}

static void mem_submit(struct backend *b, struct volume_io *io)
{
        struct mem_backend *m = (struct mem_backend *)b;
        io->impl[0] = (uint64_t)(uintptr_t)m->pending;
        m->pending = io;
}

bool mem_backend_complete_all(struct mem_backend *m)
{
        bool any = m->pending != NULL;
        while (m->pending) {
                struct volume_io *io = m->pending;
                m->pending = (struct volume_io *)(uintptr_t)io->impl[0];
                mem_run(m, io);
        }
        return any;
}

static uint64_t mem_size(const struct backend *b)
{
        return ((const struct mem_backend *)b)->size;
}

static void mem_destroy(struct backend *b)
{
        struct mem_backend *m = (struct mem_backend *)b;
        free(m->bytes);
        free(m);
}

static void mem_status(const struct backend *b, struct backend_status *st)
{
        (void)b;
        *st = (struct backend_status){.online = true};
}

static const struct backend_ops mem_ops = {"mem", mem_submit, mem_size, mem_destroy, mem_status};

struct mem_backend *mem_backend_create(uint64_t size)
{
        struct mem_backend *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->base.ops = &mem_ops;
        m->size = size;
        m->bytes = calloc(1, size);
        if (!m->bytes) {
                free(m);
                return NULL;
        }
        return m;
}
