/* A bump allocator owned by a graph: everything a graph allocates (names,
 * attributes, per-axis quantization arrays, deserialized constants) comes
 * from here and is released at once with the graph. */
#ifndef MERA_UTIL_ARENA_H
#define MERA_UTIL_ARENA_H

#include <stddef.h>

typedef struct mera_arena_chunk mera_arena_chunk;

typedef struct {
    mera_arena_chunk *head;
    size_t bytes_used;
} mera_arena;

void mera_arena_init(mera_arena *a);
void mera_arena_free(mera_arena *a);
/* Zeroed memory aligned to 64 bytes; NULL when out of memory. */
void *mera_arena_alloc(mera_arena *a, size_t size);
char *mera_arena_strdup(mera_arena *a, const char *s);
void *mera_arena_memdup(mera_arena *a, const void *p, size_t size);

#endif
