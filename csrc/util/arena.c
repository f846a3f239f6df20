#include "util/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
#define ARENA_CHUNK_MIN (64 * 1024)

struct mera_arena_chunk {
    mera_arena_chunk *next;
    size_t cap, used;
    /* data follows, aligned */
};

static size_t header_size(void)
{
    return (sizeof(mera_arena_chunk) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

void mera_arena_init(mera_arena *a)
{
    a->head = NULL;
    a->bytes_used = 0;
}

void mera_arena_free(mera_arena *a)
{
    mera_arena_chunk *c = a->head;
    while (c) {
        mera_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->bytes_used = 0;
}

void *mera_arena_alloc(mera_arena *a, size_t size)
{
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX / 2)
        return NULL;
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    mera_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > ARENA_CHUNK_MIN ? size : ARENA_CHUNK_MIN;
        void *mem = aligned_alloc(ARENA_ALIGN, header_size() + cap);
        if (!mem)
            return NULL;
        mera_arena_chunk *n = mem;
        n->cap = cap;
        n->used = 0;
        if (c && size > ARENA_CHUNK_MIN && c->cap - c->used > 0) {
            /* keep the partly used head for small allocations */
            n->next = c->next;
            c->next = n;
        } else {
            n->next = c;
            a->head = n;
        }
        c = n;
    }
    void *p = (char *)c + header_size() + c->used;
    c->used += size;
    a->bytes_used += size;
    memset(p, 0, size);
    return p;
}

char *mera_arena_strdup(mera_arena *a, const char *s)
{
    return mera_arena_memdup(a, s, strlen(s) + 1);
}

void *mera_arena_memdup(mera_arena *a, const void *p, size_t size)
{
    void *q = mera_arena_alloc(a, size);
    if (q && size)
        memcpy(q, p, size);
    return q;
}
