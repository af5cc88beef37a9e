/* Fuzzes the write log's reader: any file at the log's path must be refused, or replayed up to
 * the first record that is torn or out of sequence, with every record handed back inside the
 * bounds it claims. The input is the start of the file (headers and the first records); the
 * rest of the 16 MiB area reads as zeroes. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cache/wlog.h"
#include "src/log.h"

#define AREA (16u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        log_set_level(LOG_LVL_ERR);
        snprintf(path, sizeof(path), "/tmp/isergw-fuzz-wlog.%d", getpid());
        return 0;
}

static int check_record(void *ctx, const struct wlog_record *r, const void *rec_data)
{
        (void)ctx;
        if (r->op != WLOG_WRITE && r->op != WLOG_UNMAP && r->op != WLOG_WRITE_ZEROES)
                abort();
        if (r->op == WLOG_WRITE && (r->length > WLOG_MAX_RECORD || !rec_data))
                abort();
        /* touch the data: it must be as long as the record says */
        volatile uint8_t sink = 0;
        if (r->op == WLOG_WRITE && r->length)
                sink = ((const uint8_t *)rec_data)[r->length - 1];
        (void)sink;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > (1u << 20))
                return 0;
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
                return 0;
        if (ftruncate(fd, (off_t)WLOG_AREA_OFFSET + AREA) < 0 ||
            pwrite(fd, data, size, 0) != (ssize_t)size) {
                close(fd);
                return 0;
        }
        close(fd);
        struct wlog *l = wlog_open(path, AREA);
        if (l) {
                wlog_replay(l, check_record, NULL);
                wlog_close(l);
        }
        unlink(path);
        return 0;
}
