/* Fuzzes the peer protocol's decoders (repl/proto.h): any 64 bytes are a header that is
 * refused or decoded within bounds; any payload is a HELLO that is refused or decoded with a
 * terminated id. The first byte picks which. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repl/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        if (data[0] & 1) {
                if (size < 1 + REPL_HDR_LEN)
                        return 0;
                struct repl_hdr h;
                if (repl_hdr_decode(data + 1, &h) == REPL_OK &&
                    (h.length > REPL_MAX_PAYLOAD || h.type < REPL_HELLO || h.type > REPL_SYNCED))
                        abort();
                uint8_t again[REPL_HDR_LEN];
                if (repl_hdr_decode(data + 1, &h) == REPL_OK) {
                        repl_hdr_encode(&h, again);
                        struct repl_hdr h2;
                        if (repl_hdr_decode(again, &h2) != REPL_OK || h2.type != h.type ||
                            h2.msg_id != h.msg_id || h2.volume != h.volume ||
                            h2.offset != h.offset || h2.length != h.length || h2.seq != h.seq ||
                            h2.status != h.status || h2.span != h.span ||
                            h2.payload_crc != h.payload_crc)
                                abort();
                }
                return 0;
        }
        struct repl_hello hello;
        if (repl_hello_decode(data + 1, size - 1, &hello) &&
            (strlen(hello.id) > REPL_ID_MAX || !hello.id[0]))
                abort();
        return 0;
}
