/* linepool: the cache-line pool. Owns one large memory region (huge pages when available),
 * allocated once so it can be registered as a single RDMA memory region, split into lines of
 * line_size bytes and partitioned per reactor so allocations rarely contend. A line holds the
 * bytes [n*line_size, (n+1)*line_size) of one LUN while in use. */
#ifndef ISERGW_CACHE_LINEPOOL_H
#define ISERGW_CACHE_LINEPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct line_pool;
struct line_part; /* one reactor's share of the lines */

struct line_pool *line_pool_create(size_t pool_bytes, size_t line_size, unsigned partitions);
void line_pool_destroy(struct line_pool *p);
void *line_pool_base(const struct line_pool *p);
size_t line_pool_bytes(const struct line_pool *p);
size_t line_pool_line_size(const struct line_pool *p);
bool line_pool_huge_pages(const struct line_pool *p);
struct line_part *line_pool_part(struct line_pool *p, unsigned index);

/* NULL when the partition has no free line. Any thread (a partition has a lock: lines held
 * by the cache come back from whichever thread evicts them), though each reactor allocates
 * from its own partition so the locks are rarely contended. */
void *line_alloc(struct line_part *part);
void line_free(struct line_part *part, void *line);

/* A line from prefer, else from any partition; NULL when every partition is empty. */
void *line_pool_get(struct line_pool *p, struct line_part *prefer);
/* Gives a line back to the partition it came from. */
void line_pool_put(struct line_pool *p, void *line);
size_t line_pool_index(const struct line_pool *p, const void *line); /* 0..lines-1 */
size_t line_pool_lines(const struct line_pool *p);
bool line_pool_owns(const struct line_pool *p, const void *line);
unsigned line_pool_free_lines(const struct line_pool *p);

/* Readable from any thread (relaxed). */
unsigned line_part_total(const struct line_part *part);
unsigned line_part_free(const struct line_part *part);

/* Builds a pool partition over caller memory (unit tests use fixed addresses). */
struct line_part *line_part_create_at(void *base, size_t bytes, size_t line_size);
void line_part_destroy(struct line_part *part);

#endif
