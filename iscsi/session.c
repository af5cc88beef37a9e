/* session: the gateway's session table (TSIH allocation, reinstatement). The table is shared
 * by all reactors and the status thread, under gw->sessions_lock; a session's sequence
 * numbers belong to its connection's reactor. */
#include <stdlib.h>
#include <string.h>

#include "iscsi/iscsi_internal.h"
#include "src/log.h"

static bool tsih_in_use(struct iscsi_gw *gw, uint16_t tsih)
{
        for (struct iscsi_session *s = gw->sessions; s; s = s->next)
                if (s->tsih == tsih)
                        return true;
        return false;
}

struct iscsi_session *session_create(struct iscsi_gw *gw, struct iscsi_conn *c,
                                     const uint8_t isid[6], const char *initiator,
                                     const char *alias, struct iscsi_target *target, bool discovery)
{
        struct iscsi_session *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->gw = gw;
        memcpy(s->isid, isid, 6);
        snprintf(s->initiator_name, sizeof(s->initiator_name), "%s", initiator ? initiator : "");
        snprintf(s->initiator_alias, sizeof(s->initiator_alias), "%s", alias ? alias : "");
        s->target = target;
        s->discovery = discovery;
        s->conn = c;
        s->created = time(NULL);
        for (unsigned i = 0; target && i < target->nluns; i++)
                s->seen_reset_gen[i] = __atomic_load_n(&target->lun_reset_gen[i], __ATOMIC_RELAXED);
        pthread_mutex_lock(&gw->sessions_lock);
        do {
                gw->next_tsih++;
        } while (gw->next_tsih == 0 || tsih_in_use(gw, gw->next_tsih));
        s->tsih = gw->next_tsih;
        s->next = gw->sessions;
        gw->sessions = s;
        pthread_mutex_unlock(&gw->sessions_lock);
        return s;
}

void session_destroy(struct iscsi_session *s)
{
        struct iscsi_gw *gw = s->gw;
        pthread_mutex_lock(&gw->sessions_lock);
        for (struct iscsi_session **pp = &gw->sessions; *pp; pp = &(*pp)->next) {
                if (*pp == s) {
                        *pp = s->next;
                        break;
                }
        }
        pthread_mutex_unlock(&gw->sessions_lock);
        for (unsigned i = 0; s->target && i < s->target->nluns; i++) /* I_T nexus loss */
                scsi_lun_nexus_lost(s->target->luns[i], s->initiator_name, s->isid);
        log_info("session TSIH %u of %s ended", s->tsih, s->initiator_name);
        free(s);
}

static void drop_on_own_reactor(void *arg)
{
        struct iscsi_conn *c = arg;
        conn_drop(c, "session reinstated by a new login");
}

struct reinstate_msg {
        struct iscsi_gw *gw;
        struct iscsi_session *s;
};

static void reinstate_on_reactor(void *arg)
{
        struct reinstate_msg *m = arg;
        struct iscsi_gw *gw = m->gw;
        /* The session may have ended meanwhile: act only if it is still in the table. */
        pthread_mutex_lock(&gw->sessions_lock);
        bool alive = false;
        for (struct iscsi_session *s = gw->sessions; s; s = s->next)
                alive |= s == m->s;
        struct iscsi_conn *c = alive ? m->s->conn : NULL;
        pthread_mutex_unlock(&gw->sessions_lock);
        if (c)
                drop_on_own_reactor(c);
        free(m);
}

void session_reinstate(struct iscsi_gw *gw, const uint8_t isid[6], const char *initiator,
                       const struct iscsi_target *target)
{
        pthread_mutex_lock(&gw->sessions_lock);
        for (struct iscsi_session *s = gw->sessions; s; s = s->next) {
                if (s->discovery || s->target != target || memcmp(s->isid, isid, 6) != 0 ||
                    strcmp(s->initiator_name, initiator) != 0)
                        continue;
                struct reinstate_msg *m = malloc(sizeof(*m));
                if (!m)
                        continue;
                *m = (struct reinstate_msg){gw, s};
                log_info("session TSIH %u of %s: reinstated by a new login with the same ISID",
                         s->tsih, initiator);
                /* Mark it so a second login does not find it again. */
                s->isid[0] ^= 0xff;
                s->isid[5] ^= 0xff;
                reactor_call(s->conn->rc->reactor, reinstate_on_reactor, m);
        }
        pthread_mutex_unlock(&gw->sessions_lock);
}
