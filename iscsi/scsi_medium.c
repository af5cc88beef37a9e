/* scsi_medium: the removable medium of a LU with 'removable' set: START STOP UNIT and
 * PREVENT ALLOW MEDIUM REMOVAL (SBC-3 5.19, 5.13), and NOT READY for the commands that need
 * the medium while it is out.
 *
 * The medium is the LU's volume. START STOP UNIT with LOEJ ejects it (START 0) or loads it
 * (START 1); while it is ejected every command marked SCSI_OP_MEDIUM in the command table
 * (reads, writes, verifies, TEST UNIT READY, READ CAPACITY, SYNCHRONIZE CACHE...) completes
 * at prepare with NOT READY, MEDIUM NOT PRESENT. Ejecting only hides the volume: its data
 * and its write-back cache stay with it and destage as usual, so nothing needs flushing
 * (NO_FLUSH changes nothing) and a load shows the same data. The state is per LU, shared by
 * every I_T nexus, and every LU starts loaded.
 *
 * PREVENT ALLOW MEDIUM REMOVAL holds the medium in, per I_T nexus. While any nexus prevents
 * removal, LOEJ fails with ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED, for a load as for an
 * eject (a locked tray takes no medium either; tgt does the same and libiscsi's
 * PreventAllow.Eject expects it). A prevention ends with PREVENT 00b from its nexus, with
 * the loss of the nexus and with a LU reset (scsi_medium_nexus_lost, scsi_medium_reset).
 *
 * A POWER CONDITION other than 0 makes START and LOEJ ignored (SBC-3); power conditions
 * themselves are accepted and change nothing: the unit is always spinning, so START 0
 * without LOEJ does not stop it. On a LU that is not removable both commands are accepted
 * and do nothing. Not implemented: the NOT READY TO READY CHANGE unit attention after a
 * load, and MMC's persistent prevention (PREVENT 1xb, obsolete in SBC: an invalid field). */
#include <inttypes.h>

#include "iscsi/scsi_internal.h"
#include "src/log.h"

enum {
        SSU_START = 0x01, /* CDB byte 4 */
        SSU_LOEJ = 0x02,
};

bool scsi_medium_ejected(const struct scsi_lun *lun)
{
        return atomic_load_explicit((atomic_bool *)&lun->medium.ejected, memory_order_relaxed);
}

bool scsi_medium_check(struct scsi_cmd *cmd)
{
        if (!(cmd->op->flags & SCSI_OP_MEDIUM) || !scsi_medium_ejected(cmd->lun))
                return true;
        scsi_set_sense(cmd, SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
        return false;
}

/* Index of the nexus in the prevent list, or -1. Under the lock. */
static int prevent_find(const struct scsi_lun *lun, const struct scsi_nexus_id *id)
{
        for (unsigned i = 0; i < lun->medium.nprevent; i++)
                if (scsi_nexus_eq(&lun->medium.prevent[i], id))
                        return (int)i;
        return -1;
}

/* Under the lock. The list is unordered: the last entry fills the gap. */
static void prevent_remove(struct scsi_lun *lun, int i)
{
        lun->medium.prevent[i] = lun->medium.prevent[--lun->medium.nprevent];
}

enum scsi_cmd_state sbc_prevent_allow(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        uint8_t prevent = cmd->cdb[4] & 0x03;
        if (!lun->removable)
                return scsi_good(cmd); /* nothing to hold in */
        if (prevent > 1)
                return scsi_fail_cdb(cmd, 4, 1);
        struct scsi_nexus_id id;
        scsi_nexus_of(cmd, &id);
        bool full = false;
        scsi_spin_lock(&lun->medium.lock);
        int i = prevent_find(lun, &id);
        if (!prevent && i >= 0)
                prevent_remove(lun, i);
        else if (prevent && i < 0 && lun->medium.nprevent < SCSI_MEDIUM_MAX_PREVENT)
                lun->medium.prevent[lun->medium.nprevent++] = id;
        else if (prevent && i < 0)
                full = true;
        scsi_spin_unlock(&lun->medium.lock);
        if (full) {
                log_warn("target %s LUN %" PRIu64 ": %d I_T nexuses already prevent medium "
                         "removal; refusing one more from %s",
                         lun->target_name, lun->lun, SCSI_MEDIUM_MAX_PREVENT, id.initiator);
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INSUFFICIENT_RESOURCES);
        }
        return scsi_good(cmd);
}

enum scsi_cmd_state sbc_start_stop_unit(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        uint8_t power_condition = cmd->cdb[4] >> 4;
        bool loej = cmd->cdb[4] & SSU_LOEJ, eject = !(cmd->cdb[4] & SSU_START);
        if (!lun->removable || !loej || power_condition)
                return scsi_good(cmd);
        bool prevented, changed = false;
        scsi_spin_lock(&lun->medium.lock);
        prevented = lun->medium.nprevent > 0;
        if (!prevented)
                changed = atomic_exchange_explicit(&lun->medium.ejected, eject,
                                                   memory_order_relaxed) != eject;
        scsi_spin_unlock(&lun->medium.lock);
        if (prevented)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_MEDIUM_REMOVAL_PREVENTED);
        if (changed) /* operators see why every command of the LU fails now */
                log_info("target %s LUN %" PRIu64 ": medium %s by %s", lun->target_name, lun->lun,
                         eject ? "ejected" : "loaded",
                         cmd->initiator ? cmd->initiator : "(unnamed initiator)");
        return scsi_good(cmd);
}

void scsi_medium_reset(struct scsi_lun *lun)
{
        scsi_spin_lock(&lun->medium.lock);
        lun->medium.nprevent = 0;
        scsi_spin_unlock(&lun->medium.lock);
}

void scsi_medium_nexus_lost(struct scsi_lun *lun, const struct scsi_nexus_id *id)
{
        scsi_spin_lock(&lun->medium.lock);
        int i = prevent_find(lun, id);
        if (i >= 0)
                prevent_remove(lun, i);
        scsi_spin_unlock(&lun->medium.lock);
}
