#include "util/bytes.h"

#include <stdlib.h>

uint64_t mera_fnv1a64_from(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void mera_put_bytes(mera_writer *w, const void *src, size_t n)
{
    if (w->oom)
        return;
    if (w->cap - w->len < n) {
        size_t cap = w->cap ? w->cap : 1024;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->oom = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *b = realloc(w->buf, cap);
        if (!b) {
            w->oom = 1;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    if (n)
        memcpy(w->buf + w->len, src, n);
    w->len += n;
}
