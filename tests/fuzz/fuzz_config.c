/* Fuzzes the configuration parser: any text must load or be refused with a reason. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/config.h"
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
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        char err[256];
        struct config *cfg = config_load_string(text, "fuzz.conf", err, sizeof(err));
        config_free(cfg);
        free(text);
        return 0;
}
