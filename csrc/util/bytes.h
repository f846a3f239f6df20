/* Little-endian byte buffers and the FNV-1a checksum, shared by the two
 * serialized forms of the C core: the binary IR (ir/serialize.c) and DNA
 * programs (isa/program.c). Values are written byte by byte, least
 * significant first, so the bytes do not depend on the host. */
#ifndef MERA_UTIL_BYTES_H
#define MERA_UTIL_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* FNV-1a, 64 bits, over n bytes at p, starting from the state h. */
uint64_t mera_fnv1a64_from(uint64_t h, const uint8_t *p, size_t n);

#define MERA_FNV1A64_BASIS 0xcbf29ce484222325ull /* the standard offset basis */

/* FNV-1a, 64 bits (the standard offset basis and prime). */
static inline uint64_t mera_fnv1a64(const uint8_t *p, size_t n)
{
    return mera_fnv1a64_from(MERA_FNV1A64_BASIS, p, n);
}

/* A growing output buffer. Zero-initialize it; after an allocation failure
 * oom is set and further writes are ignored. The caller frees buf. */
typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int oom;
} mera_writer;

void mera_put_bytes(mera_writer *w, const void *src, size_t n);

/* The low nbytes (1 to 8) bytes of v, little-endian. */
static inline void mera_put_le(mera_writer *w, uint64_t v, int nbytes)
{
    uint8_t b[8];
    for (int i = 0; i < nbytes; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    mera_put_bytes(w, b, (size_t)nbytes);
}

static inline void mera_put_u8(mera_writer *w, uint8_t v) { mera_put_le(w, v, 1); }
static inline void mera_put_u16(mera_writer *w, uint16_t v) { mera_put_le(w, v, 2); }
static inline void mera_put_u32(mera_writer *w, uint32_t v) { mera_put_le(w, v, 4); }
static inline void mera_put_i32(mera_writer *w, int32_t v) { mera_put_le(w, (uint32_t)v, 4); }
static inline void mera_put_u64(mera_writer *w, uint64_t v) { mera_put_le(w, v, 8); }
static inline void mera_put_i64(mera_writer *w, int64_t v) { mera_put_le(w, (uint64_t)v, 8); }

static inline void mera_put_f64(mera_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    mera_put_le(w, bits, 8);
}

/* The little-endian value of the nbytes (1 to 8) bytes at p. */
static inline uint64_t mera_load_le(const uint8_t *p, int nbytes)
{
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline double mera_f64_from_bits(uint64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

#endif
