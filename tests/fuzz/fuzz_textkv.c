/* Fuzzes the key=value text parser of Login and Text PDUs. */
#include <stddef.h>
#include <stdint.h>

#include "iscsi/textkv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct textkv_list list;
        if (textkv_parse(data, size, &list) == TEXTKV_OK) {
                for (size_t i = 0; i < list.count; i++)
                        (void)textkv_find(&list, list.pairs[i].key);
                textkv_list_free(&list);
        }
        return 0;
}
