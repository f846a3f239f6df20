/* libFuzzer target: the DNA program (csrc/isa: deserialize, validate,
 * serialize, disassemble).
 *
 * The input is a serialized program. Its trailing FNV-1a checksum is
 * recomputed first, so that mutations reach the field checks. A program
 * that loads is disassembled and serialized again, and must load again. */
#include <stdlib.h>
#include <string.h>

#include "isa/isa.h"
#include "util/bytes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (size >= 8) {
        uint64_t sum = mera_fnv1a64(buf, size - 8);
        for (int i = 0; i < 8; i++)
            buf[size - 8 + i] = (uint8_t)(sum >> (8 * i));
    }
    mera_error e;
    memset(&e, 0, sizeof e);
    dna_program *p = dna_program_deserialize(buf, size, -1, -1, &e);
    if (p) {
        char *text = NULL;
        if (dna_program_disasm(p, NULL, &text, &e) == MERA_OK)
            free(text);
        uint8_t *again = NULL;
        size_t n = 0;
        if (dna_program_serialize(p, &again, &n, &e) == MERA_OK) {
            dna_program *p2 = dna_program_deserialize(again, n, -1, -1, &e);
            if (!p2)
                abort(); /* what we wrote must read back */
            dna_program_free(p2);
        }
        free(again);
        dna_program_free(p);
    }
    free(buf);
    return 0;
}
