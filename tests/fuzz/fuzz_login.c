/* Fuzzes the login negotiation engine (text parsing, stages, CHAP, operational keys). */
#include <stddef.h>
#include <stdint.h>

#include "iscsi/login.h"
#include "src/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        log_set_level(LOG_LVL_ERR);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        login_fuzz_one(data, size);
        return 0;
}
