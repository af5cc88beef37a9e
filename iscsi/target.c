/* target: the targets a gateway serves (names, LUNs, ACLs, CHAP, advertised portals), and
 * the gateway object's construction and status snapshots. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/dpt.h"
#include "cache/linepool.h"
#include "iscsi/iscsi_internal.h"
#include "iscsi/textkv.h"
#include "src/log.h"

struct iscsi_gw *iscsi_gw_create(const struct iscsi_gw_conf *conf)
{
        struct iscsi_gw *gw = calloc(1, sizeof(*gw));
        if (!gw)
                return NULL;
        gw->conf = *conf;
        if (!gw->conf.queue_depth)
                gw->conf.queue_depth = 128;
        pthread_mutex_init(&gw->sessions_lock, NULL);
        if (conf->discovery_chap_user && conf->discovery_chap_secret) {
                gw->discovery_chap = true;
                gw->discovery_auth.chap_user = strdup(conf->discovery_chap_user);
                gw->discovery_auth.chap_secret = strdup(conf->discovery_chap_secret);
        }
        return gw;
}

static void free_strv(char **v, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static void target_destroy(struct iscsi_target *t)
{
        free(t->chap_user);
        free(t->chap_secret);
        free(t->mutual_user);
        free(t->mutual_secret);
        free_strv(t->allow, t->nallow);
        free(t->portals);
        free(t);
}

void iscsi_gw_destroy(struct iscsi_gw *gw)
{
        if (!gw)
                return;
        for (unsigned i = 0; i < gw->ntargets; i++)
                target_destroy(gw->targets[i]);
        for (unsigned i = 0; i < gw->nreactors; i++) {
                if (!gw->rctx[i])
                        continue;
                dpt_destroy(gw->rctx[i]->dpt);
                free(gw->rctx[i]);
        }
        free((char *)gw->discovery_auth.chap_user);
        free((char *)gw->discovery_auth.chap_secret);
        pthread_mutex_destroy(&gw->sessions_lock);
        free(gw);
}

static int portal_set(struct iscsi_portal *p, const char *addr, uint16_t port, bool iser)
{
        if (strlen(addr) >= sizeof(p->address))
                return -1;
        snprintf(p->address, sizeof(p->address), "%s", addr);
        p->port = port;
        p->iser = iser;
        return 0;
}

void portal_format(const struct iscsi_portal *p, const char *address, char *buf, size_t len)
{
        snprintf(buf, len, strchr(address, ':') ? "[%s]:%u" : "%s:%u", address, p->port);
}

int iscsi_gw_add_portal(struct iscsi_gw *gw, const char *addr, uint16_t port, bool iser)
{
        if (gw->nportals == ISCSI_MAX_PORTALS)
                return -1;
        /* TCP and iSER on one address are both kept: with an address source, either may
         * offer addresses the other does not; SendTargets merges them. */
        for (unsigned i = 0; i < gw->nportals; i++)
                if (strcmp(gw->portals[i].address, addr) == 0 && gw->portals[i].port == port &&
                    gw->portals[i].iser == iser)
                        return 0;
        if (portal_set(&gw->portals[gw->nportals], addr, port, iser) < 0)
                return -1;
        gw->nportals++;
        return 0;
}

void iscsi_gw_set_address_source(struct iscsi_gw *gw, iscsi_address_source_fn fn, void *ctx)
{
        gw->address_source = fn;
        gw->address_source_ctx = ctx;
}

static char *dup_or_null(const char *s)
{
        return s && *s ? strdup(s) : NULL;
}

static char **dup_strv(const char *const *v, unsigned n)
{
        char **out = calloc(n ? n : 1, sizeof(*out));
        for (unsigned i = 0; out && i < n; i++)
                out[i] = strdup(v[i]);
        return out;
}

int iscsi_gw_add_target(struct iscsi_gw *gw, const struct iscsi_target_conf *tc)
{
        if (gw->ntargets == ISCSI_MAX_TARGETS || target_find(gw, tc->name))
                return -1;
        struct iscsi_target *t = calloc(1, sizeof(*t));
        if (!t)
                return -1;
        snprintf(t->name, sizeof(t->name), "%s", tc->name);
        snprintf(t->alias, sizeof(t->alias), "%s", tc->alias ? tc->alias : "");
        t->chap_user = dup_or_null(tc->chap_user);
        t->chap_secret = dup_or_null(tc->chap_secret);
        t->mutual_user = dup_or_null(tc->mutual_user);
        t->mutual_secret = dup_or_null(tc->mutual_secret);
        t->allow = dup_strv(tc->allow, tc->nallow);
        t->nallow = tc->nallow;
        t->portals = calloc(tc->nportals ? tc->nportals : 1, sizeof(*t->portals));
        for (unsigned i = 0; t->portals && i < tc->nportals; i++) {
                const struct iscsi_portal_conf *pc = &tc->portals[i];
                if (portal_set(&t->portals[t->nportals], pc->address, pc->port, pc->iser) == 0)
                        t->nportals++;
        }
        gw->targets[gw->ntargets++] = t;
        return 0;
}

int iscsi_gw_add_lun(struct iscsi_gw *gw, const char *target, struct scsi_lun *lun)
{
        struct iscsi_target *t = target_find(gw, target);
        if (!t || t->nluns == ISCSI_MAX_LUNS || target_lun(t, lun->lun))
                return -1;
        t->lun_ids[t->nluns] = lun->lun;
        t->luns[t->nluns++] = lun;
        return 0;
}

int iscsi_gw_attach_reactor(struct iscsi_gw *gw, unsigned index, struct reactor *r)
{
        if (index >= ISCSI_MAX_REACTORS)
                return -1;
        struct iscsi_reactor_ctx *rc = calloc(1, sizeof(*rc));
        if (!rc)
                return -1;
        rc->gw = gw;
        rc->reactor = r;
        rc->index = index;
        rc->dpt = dpt_create(DPT_MAX_ENTRIES);
        rc->lines = line_pool_part(gw->conf.pool, index);
        rc->pool = gw->conf.pool;
        rc->line_size = line_pool_line_size(gw->conf.pool);
        rc->next_tag = (uint16_t)(index * 0x1000 + 1);
        if (!rc->dpt || !rc->lines) {
                dpt_destroy(rc->dpt);
                free(rc);
                return -1;
        }
        gw->rctx[index] = rc;
        if (index >= gw->nreactors)
                gw->nreactors = index + 1;
        return 0;
}

struct iscsi_target *target_find(struct iscsi_gw *gw, const char *name)
{
        for (unsigned i = 0; i < gw->ntargets; i++)
                if (strcasecmp(gw->targets[i]->name, name) == 0)
                        return gw->targets[i];
        return NULL;
}

bool target_allows(const struct iscsi_target *t, const char *initiator)
{
        if (t->nallow == 0)
                return true;
        for (unsigned i = 0; i < t->nallow; i++)
                if (strcmp(t->allow[i], "*") == 0 || strcasecmp(t->allow[i], initiator) == 0)
                        return true;
        return false;
}

struct scsi_lun *target_lun(const struct iscsi_target *t, uint64_t lun)
{
        if (!t)
                return NULL;
        for (unsigned i = 0; i < t->nluns; i++)
                if (t->lun_ids[i] == lun)
                        return t->luns[i];
        return NULL;
}

int target_lun_index(const struct iscsi_target *t, uint64_t lun)
{
        for (unsigned i = 0; t && i < t->nluns; i++)
                if (t->lun_ids[i] == lun)
                        return (int)i;
        return -1;
}

void target_note_reset(struct iscsi_target *t, int i)
{
        for (unsigned k = 0; k < t->nluns; k++) {
                if (i >= 0 && (int)k != i)
                        continue;
                /* SAM-5: every I_T nexus, the resetting one included, sees the UA. */
                __atomic_add_fetch(&t->lun_reset_gen[k], 1, __ATOMIC_RELAXED);
                scsi_lun_reset(t->luns[k]); /* ends the SPC-2 reservation */
        }
}

bool session_take_ua(struct iscsi_session *s, int i)
{
        if (!s->target || i < 0)
                return false;
        uint32_t gen = __atomic_load_n(&s->target->lun_reset_gen[i], __ATOMIC_RELAXED);
        if (s->seen_reset_gen[i] == gen)
                return false;
        s->seen_reset_gen[i] = gen;
        return true;
}

/* SAM LUN structure: peripheral (00b) and flat (01b) addressing of one level. */
uint64_t lun_from_wire(uint64_t wire)
{
        uint8_t b0 = (uint8_t)(wire >> 56), b1 = (uint8_t)(wire >> 48);
        uint64_t rest = wire & 0x0000ffffffffffffull;
        switch (b0 >> 6) {
        case 0:
                return rest == 0 ? b1 | (uint64_t)(b0 & 0x3f) << 8 : UINT64_MAX;
        case 1:
                return rest == 0 ? ((uint64_t)(b0 & 0x3f) << 8 | b1) : UINT64_MAX;
        default:
                return UINT64_MAX;
        }
}

/* The TargetAddress entries of one target: each once, however many portals give it. */
struct address_list {
        struct textbuf *out;
        const struct iscsi_portal *portal; /* being expanded */
        char (*seen)[80];
        unsigned nseen, cap;
};

static void emit_target_address(void *arg, const char *address)
{
        struct address_list *al = arg;
        char name[80];
        portal_format(al->portal, address, name, sizeof(name));
        for (unsigned i = 0; i < al->nseen; i++)
                if (strcmp(al->seen[i], name) == 0)
                        return;
        if (al->nseen == al->cap) {
                unsigned cap = al->cap ? 2 * al->cap : 16;
                char(*seen)[80] = realloc(al->seen, cap * sizeof(*seen));
                if (!seen) {
                        al->out->failed = true;
                        return;
                }
                al->seen = seen;
                al->cap = cap;
        }
        memcpy(al->seen[al->nseen++], name, sizeof(name));
        textbuf_addf(al->out, "TargetAddress", "%s,1", name);
}

static void add_portal_addresses(struct iscsi_gw *gw, const struct iscsi_portal *p,
                                 struct address_list *al)
{
        al->portal = p;
        if (gw->address_source)
                gw->address_source(gw->address_source_ctx, p->address, p->iser, emit_target_address,
                                   al);
        else
                emit_target_address(al, p->address);
}

static void add_target_entry(struct iscsi_gw *gw, const struct iscsi_target *t, struct textbuf *out)
{
        textbuf_add(out, "TargetName", t->name);
        struct address_list al = {.out = out};
        const struct iscsi_portal *v = t->nportals ? t->portals : gw->portals;
        unsigned n = t->nportals ? t->nportals : gw->nportals;
        for (unsigned i = 0; i < n; i++)
                add_portal_addresses(gw, &v[i], &al);
        free(al.seen);
}

int target_send_targets(struct iscsi_gw *gw, const char *value, const char *initiator,
                        struct textbuf *out)
{
        bool all = strcmp(value, "All") == 0;
        for (unsigned i = 0; i < gw->ntargets; i++) {
                const struct iscsi_target *t = gw->targets[i];
                if (!target_allows(t, initiator))
                        continue;
                if (all || (value[0] && strcasecmp(value, t->name) == 0))
                        add_target_entry(gw, t, out);
        }
        return out->failed ? -1 : 0;
}
