/* Log-linear histogram: values below HIST_SUB are exact; above, every power of two is split
 * into HIST_SUB/2 equal buckets (relative error below 2/HIST_SUB, i.e. 1.6%). */
#include "bench.h"

#include <string.h>

void hist_reset(struct hist *h)
{
        memset(h, 0, sizeof(*h));
}

static unsigned hist_index(uint64_t v)
{
        if (v < HIST_SUB)
                return (unsigned)v;
        unsigned msb = 63u - (unsigned)__builtin_clzll(v);
        unsigned shift = msb - HIST_SUB_BITS + 1;
        if (shift > HIST_MAX_SHIFT) {
                shift = HIST_MAX_SHIFT;
                v = ((uint64_t)HIST_SUB << shift) - 1;
        }
        return shift * (HIST_SUB / 2) + (unsigned)(v >> shift);
}

/* Midpoint of a bucket's value range. */
static uint64_t hist_value(unsigned idx)
{
        if (idx < HIST_SUB)
                return idx;
        unsigned shift = idx / (HIST_SUB / 2) - 1;
        uint64_t m = idx - shift * (HIST_SUB / 2);
        return (m << shift) + ((1ull << shift) >> 1);
}

void hist_add(struct hist *h, uint64_t v)
{
        h->b[hist_index(v)]++;
        h->count++;
        h->sum += v;
        if (v > h->max)
                h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
        for (unsigned i = 0; i < HIST_BUCKETS; i++)
                dst->b[i] += src->b[i];
        dst->count += src->count;
        dst->sum += src->sum;
        if (src->max > dst->max)
                dst->max = src->max;
}

/* The smallest recorded value v such that at least pct percent of the values are <= v. */
uint64_t hist_percentile(const struct hist *h, double pct)
{
        if (h->count == 0)
                return 0;
        uint64_t rank = (uint64_t)(pct / 100.0 * (double)h->count + 0.999999);
        if (rank < 1)
                rank = 1;
        if (rank > h->count)
                rank = h->count;
        uint64_t seen = 0;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
                seen += h->b[i];
                if (seen >= rank) {
                        uint64_t v = hist_value(i);
                        return v > h->max ? h->max : v;
                }
        }
        return h->max;
}

double hist_mean(const struct hist *h)
{
        return h->count ? (double)h->sum / (double)h->count : 0.0;
}
