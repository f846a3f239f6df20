/* libFuzzer target: the IR binary form (csrc/ir/serialize.c).
 *
 * The input is a serialized graph. Its checksum (header bytes 24..31, over
 * the payload) is recomputed before deserializing, so that mutations reach
 * the parser instead of stopping at the checksum; the checksum test itself
 * is one comparison. A graph that loads is serialized again and must load
 * again (the round trip the deploy runtime relies on). */
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "util/bytes.h"

#define IR_HEADER 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (size >= IR_HEADER) {
        uint64_t sum = mera_fnv1a64_from(1469598103934665603ull, buf + IR_HEADER, size - IR_HEADER);
        memcpy(buf + 24, &sum, 8);
    }
    mera_error e;
    memset(&e, 0, sizeof e);
    mera_graph *g = mera_graph_deserialize(buf, size, &e);
    if (g) {
        uint8_t *again = NULL;
        size_t n = 0;
        if (mera_graph_serialize(g, &again, &n, &e) == MERA_OK) {
            mera_graph *g2 = mera_graph_deserialize(again, n, &e);
            if (!g2)
                abort(); /* what we wrote must read back */
            mera_graph_free(g2);
        }
        free(again);
        mera_graph_free(g);
    }
    free(buf);
    return 0;
}
