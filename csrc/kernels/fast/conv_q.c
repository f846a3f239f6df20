/* The fast quantized conv2d (and, through the same driver, dense): the
 * padded input copy, the loops over groups, output-channel tiles and pixel
 * tiles, and the kernel ABI entry points of each instruction set.
 * qconv.h says how the accumulator is formed; it gives ref_conv2d_q's bytes
 * (tests/test_kernels_fast.py checks it). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/fast.h"
#include "kernels/fast/qconv.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

/* Where input channel ch goes in a pixel of the padded input (depthwise:
 * the first of its og copies). */
static int64_t channel_slot(const qconv_plan *p, int64_t ch)
{
    return p->depthwise ? ch * p->g.og : ch / p->g.cg * p->cgp + ch % p->g.cg;
}

/* n input bytes to n padded-input elements (int8: the sign bit flipped). */
static void convert_run(unsigned char *dst, const uint8_t *src, int64_t n, int xb, uint8_t flip)
{
    if (xb == 2) {
        int16_t *d = (int16_t *)dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (uint8_t)(src[i] ^ flip);
    } else if (flip) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = src[i] ^ flip;
    } else {
        memcpy(dst, src, (size_t)n);
    }
}

/* Copies the input pixels [c0, c1) of input row ih into row, a row of the
 * padded input whose pixels were filled with the padding pattern. */
static void copy_row(const qconv_plan *p, const uint8_t *x, int64_t n, int64_t ih, int64_t c0, int64_t c1,
                     unsigned char *row)
{
    const int xb = p->xbytes;
    const int64_t cp = p->cp, c = p->g.c, w0 = c0 - p->g.pl;
    const uint8_t flip = p->x_int8 ? 0x80 : 0;
    /* channels keep their order: no group padding, no depthwise copies */
    const int in_order = p->depthwise ? p->g.og == 1 : p->cgp == p->g.cg;
    if (p->g.x_nhwc) {
        const uint8_t *src = x + ((n * p->g.h + ih) * p->g.w + w0) * c;
        if (in_order && cp == c) {
            convert_run(row + c0 * cp * xb, src, (c1 - c0) * c, xb, flip);
            return;
        }
        for (int64_t col = c0; col < c1; col++, src += c) {
            unsigned char *dst = row + col * cp * xb;
            if (in_order) {
                convert_run(dst, src, c, xb, flip);
            } else if (p->depthwise) {
                for (int64_t ch = 0; ch < c; ch++)
                    memset(dst + ch * p->g.og, src[ch] ^ flip, (size_t)p->g.og);
            } else {
                for (int64_t g = 0; g < p->g.groups; g++)
                    convert_run(dst + g * p->cgp * xb, src + g * p->g.cg, p->g.cg, xb, flip);
            }
        }
        return;
    }
    /* NCHW: one contiguous input row per channel */
    for (int64_t ch = 0; ch < c; ch++) {
        const uint8_t *src = x + ((n * c + ch) * p->g.h + ih) * p->g.w + w0;
        int64_t j = channel_slot(p, ch);
        for (int64_t col = c0; col < c1; col++) {
            uint8_t v = src[col - c0] ^ flip;
            unsigned char *dst = row + col * cp * xb;
            if (xb == 2)
                ((int16_t *)dst)[j] = v;
            else if (p->depthwise)
                memset(dst + j, v, (size_t)p->g.og);
            else
                dst[j] = v;
        }
    }
}

/* The padded input: [n][hp][wp][cp] elements of p->xbytes, padding
 * positions holding zx at real channels and 0 at padding channels, int8
 * values with the sign bit flipped. */
static size_t padded_bytes(const qconv_plan *p)
{
    const size_t row_bytes = (size_t)p->wp * (size_t)(p->cp * p->xbytes);
    return (size_t)(p->g.n * p->hp) * row_bytes + QCONV_SLACK + row_bytes + 64;
}

/* The padded input is built in buf (padded_bytes(p) of them); the row of
 * padding pixels it copies from sits after it, 64-byte aligned. */
static void *padded_input(const qconv_plan *p, const void *x, unsigned char *buf)
{
    const int xb = p->xbytes;
    const int64_t cp = p->cp;
    const size_t pix_bytes = (size_t)(cp * xb), row_bytes = (size_t)p->wp * pix_bytes;
    size_t body = (size_t)(p->g.n * p->hp) * row_bytes + QCONV_SLACK;
    unsigned char *pad = buf + ((body + 63) & ~(size_t)63); /* a row of padding pixels */
    memset(buf + (size_t)(p->g.n * p->hp) * row_bytes, 0, QCONV_SLACK);
    const uint8_t zx = (uint8_t)((uint8_t)p->zx_raw ^ (p->x_int8 ? 0x80 : 0));
    for (int64_t j = 0; j < cp; j++) {
        int real = p->depthwise ? j < p->g.o : j % p->cgp < p->g.cg;
        if (xb == 2)
            ((int16_t *)pad)[j] = (int16_t)(real ? zx : 0);
        else
            pad[j] = real ? zx : 0;
    }
    for (int64_t col = 1; col < p->wp; col++)
        memcpy(pad + col * pix_bytes, pad, pix_bytes);
    /* columns [c0, c1) of a row inside the input hold input pixels */
    int64_t c0 = p->g.pl < p->wp ? p->g.pl : p->wp, c1 = p->g.pl + p->g.w < p->wp ? p->g.pl + p->g.w : p->wp;
    /* pixels with padding channels get the pattern before the copy */
    int prefill = cp != p->g.c;
    for (int64_t n = 0; n < p->g.n; n++)
        for (int64_t r = 0; r < p->hp; r++) {
            unsigned char *row = buf + (size_t)(n * p->hp + r) * row_bytes;
            int64_t ih = r - p->g.pt;
            if (ih < 0 || ih >= p->g.h || c0 >= c1) {
                memcpy(row, pad, row_bytes);
                continue;
            }
            if (prefill) {
                memcpy(row, pad, row_bytes);
            } else {
                memcpy(row, pad, (size_t)c0 * pix_bytes);
                memcpy(row + c1 * pix_bytes, pad, (size_t)(p->wp - c1) * pix_bytes);
            }
            copy_row(p, x, n, ih, c0, c1, row);
        }
    return buf;
}

/* Where output channel oc of output pixel pix is stored. */
static int64_t out_index(const qconv_plan *p, int64_t pix, int64_t oc)
{
    if (p->g.y_nhwc)
        return pix * p->g.o + oc;
    int64_t hw = p->g.oh * p->g.ow, n = pix / hw;
    return (n * p->g.o + oc) * hw + pix % hw;
}

/* Stores n requantized channels from o0 of pixel pix. */
static void store_channels(const qconv_plan *p, uint8_t *y, int64_t pix, int64_t o0, int64_t n, const int32_t *acc,
                           int32_t xsum, uint8_t *tmp)
{
    if (p->g.y_nhwc) {
        p->isa->requant(p, o0, n, acc, xsum, y + pix * p->g.o + o0);
        return;
    }
    p->isa->requant(p, o0, n, acc, xsum, tmp);
    int64_t hw = p->g.oh * p->g.ow;
    uint8_t *d = y + out_index(p, pix, o0);
    for (int64_t j = 0; j < n; j++)
        d[j * hw] = tmp[j];
}

/* Walks the windows of the output pixels in order (n, oy, ox): at points
 * at the first element of the current pixel's window in one group. */
typedef struct {
    const qconv_plan *p;
    const unsigned char *at;
    int64_t ox, oy;
} window_walk;

static void walk_next(window_walk *w)
{
    const qconv_plan *p = w->p;
    int64_t pix_bytes = p->cp * p->xbytes;
    if (++w->ox < p->g.ow) {
        w->at += p->g.sw * pix_bytes;
        return;
    }
    /* back to column 0, down sh rows; past the last row, to the next image */
    w->at -= (w->ox - 1) * p->g.sw * pix_bytes;
    w->ox = 0;
    if (++w->oy < p->g.oh) {
        w->at += p->g.sh * p->wp * pix_bytes;
    } else {
        w->at += (p->hp - (p->g.oh - 1) * p->g.sh) * p->wp * pix_bytes;
        w->oy = 0;
    }
}

/* The walk positioned at output pixel pix (what walk_next reaches after
 * pix steps from walk_start). */
static window_walk walk_at(const qconv_plan *p, const unsigned char *xb, int64_t g, int64_t pix)
{
    int64_t hw = p->g.oh * p->g.ow, n = pix / hw, r = pix % hw, oy = r / p->g.ow, ox = r % p->g.ow;
    int64_t pix_bytes = p->cp * p->xbytes;
    window_walk w = {p, xb + g * p->cgp * p->xbytes + ((n * p->hp + oy * p->g.sh) * p->wp + ox * p->g.sw) * pix_bytes,
                     ox, oy};
    return w;
}

/* sum(x) over the windows of npx pixels from pix0, group g (for zw != 0). */
static void window_sums(const qconv_plan *p, const unsigned char *xb, int64_t g, int64_t pix0, int64_t npx,
                        int32_t *xsum)
{
    window_walk walk = walk_at(p, xb, g, pix0);
    for (int64_t m = 0; m < npx; m++) {
        if (m)
            walk_next(&walk);
        const unsigned char *w0 = walk.at;
        uint32_t s = 0;
        for (int64_t k = 0; k < p->nseg; k++) {
            if (p->xbytes == 2) {
                const int16_t *e = (const int16_t *)w0 + p->seg_off[k];
                for (int64_t i = 0; i < p->seg_len; i++)
                    s += (uint32_t)e[i];
            } else {
                const uint8_t *e = w0 + p->seg_off[k];
                for (int64_t i = 0; i < p->seg_len; i++)
                    s += e[i];
            }
        }
        xsum[m] = (int32_t)s;
    }
}

/* Multiply-adds below which another thread is not worth waking (about the
 * time a wake-up takes with the pool spinning). */
#define QCONV_MIN_THREAD_MACS 262144

/* Pixels per work item, at most: a few tiles, so each item reuses its
 * weights. */
#define QCONV_BLOCK_PX (4 * QCONV_MAX_PX)

/* The work of a conv, cut into items (group, output-channel tile, block of
 * pixels) in that order, outermost first; every item writes its own bytes,
 * so the items may run on any threads in any order. The P pixels are cut
 * into blocks of nearly equal size, and a block into nearly equal tiles of
 * at most px_max pixels: a 7x7 image (49 pixels) runs as tiles of 6 and 5
 * pixels, not eight of 6 and one of 1 that would load every weight for a
 * single pixel. */
typedef struct {
    const qconv_plan *p;
    const unsigned char *xb;
    uint8_t *y;
    int64_t tiles, blocks; /* per group, per tile */
} gemm_job;

static void run_gemm_items(void *ctx, int64_t i0, int64_t i1)
{
    const gemm_job *j = ctx;
    const qconv_plan *p = j->p;
    const qconv_isa *isa = p->isa;
    const int64_t P = p->g.n * p->g.oh * p->g.ow, T = (int64_t)isa->lanes * isa->nv_max;
    const int64_t per_oc = p->kpad;
    int32_t acc[QCONV_MAX_PX * QCONV_ACC_STRIDE], xsum[QCONV_BLOCK_PX];
    uint8_t tmp[QCONV_ACC_STRIDE];
    const void *px[QCONV_MAX_PX];
    /* NHWC output without weight zero points: requantized in the tile */
    const int fused = isa->gemm_tile_rq && p->g.y_nhwc && !p->zw;
    for (int64_t item = i0; item < i1; item++) {
        int64_t g = item / (j->tiles * j->blocks), t0 = item / j->blocks % j->tiles * T, b = item % j->blocks;
        int64_t b0 = b * P / j->blocks, b1 = (b + 1) * P / j->blocks;
        int64_t width = p->ogp - t0 < T ? p->ogp - t0 : T;
        int64_t nvalid = p->g.og - t0 < width ? p->g.og - t0 : width;
        int nv = (int)(width / isa->lanes), mpx = isa->px_max[nv];
        const unsigned char *w = (const unsigned char *)p->wpack + (g * p->ogp + t0) * per_oc * isa->xbytes;
        int64_t o0 = g * p->g.og + t0;
        if (p->zw)
            window_sums(p, j->xb, g, b0, b1 - b0, xsum);
        window_walk walk = walk_at(p, j->xb, g, b0);
        const int64_t ntiles = (b1 - b0 + mpx - 1) / mpx, small = (b1 - b0) / ntiles, big = (b1 - b0) % ntiles;
        int npx;
        for (int64_t pix0 = b0, k = 0; pix0 < b1; pix0 += npx, k++) {
            npx = (int)(small + (k < big)); /* the first big tiles take a pixel more */
            for (int m = 0; m < npx; m++) {
                if (pix0 + m > b0)
                    walk_next(&walk); /* never past the block's last pixel */
                px[m] = walk.at;
            }
            if (fused) {
                isa->gemm_tile_rq(p, npx, nv, px, w, o0, nvalid, j->y + pix0 * p->g.o + o0, p->g.o);
                continue;
            }
            isa->gemm_tile(npx, nv, px, p->seg_off, (int)p->nseg, p->nk, w, acc);
            for (int m = 0; m < npx; m++)
                store_channels(p, j->y, pix0 + m, o0, nvalid, acc + m * QCONV_ACC_STRIDE,
                               p->zw ? xsum[pix0 + m - b0] : 0, tmp);
        }
    }
}

/* The tile-matrix path (qconv_isa.gemm_rows): items (group, block of
 * QCONV_ROWS_PX pixels, the last one shorter), each running every
 * output-channel tile of its group on the block's windows, which are
 * copied once into rows of kpad bytes, unless they already lie at one
 * stride and the tiles can read them in place: then the tiles read the
 * padded input itself. In place needs every chunk of kchunk bytes inside
 * one segment (the pixels of one row of a conv over 64k channels), or one
 * segment per window (a 1x1 conv, any channel count: the bytes of a row
 * past the window, up to kpad, meet zero weights, so whatever they hold
 * adds nothing), and every byte the A tiles read, 16 rows each, inside
 * the input. */
typedef struct {
    const qconv_plan *p;
    const unsigned char *xb, *xend; /* the padded input and the end of its readable bytes */
    uint8_t *y;
    int64_t blocks; /* per group */
    int failed;     /* out of memory for the rows */
} rows_job;

/* The rows and accumulators of the tile-matrix path, kept per thread from
 * one call to the next (a Simulator CONV tile is one short call, and a
 * fresh buffer of 32 * kpad bytes cost it an allocation, often an mmap and
 * its page faults, each time); freed when the thread ends. Past the first
 * dirty bytes of each row (the most any plan since the last zeroing had
 * rows_gather write), up to kpad, and past the last row, the rows hold
 * zeros. */
typedef struct {
    uint8_t *rows;
    int32_t *acc;
    size_t bytes; /* of rows */
    int64_t kpad, dirty;
} rows_space;

/* deploy.so (MERA_SERIAL_THREADS) is dlclose'd by its loaders: a
 * thread-specific key's destructor would then run unloaded code when a
 * thread ends, so there each call has rows of its own (ROWS_PER_THREAD 0). */
#ifdef MERA_SERIAL_THREADS
#define ROWS_PER_THREAD 0
#else
#define ROWS_PER_THREAD 1
static pthread_key_t rows_key;
static pthread_once_t rows_once = PTHREAD_ONCE_INIT;
static int rows_key_ok;
#endif

static void rows_space_free(void *v)
{
    rows_space *s = v;
    if (s) {
        free(s->rows);
        free(s->acc);
        free(s);
    }
}

#if ROWS_PER_THREAD
static void rows_key_make(void)
{
    rows_key_ok = pthread_key_create(&rows_key, rows_space_free) == 0;
}
#endif

/* The end of a call's use of its rows (freed unless kept per thread). */
static void rows_space_done(rows_space *s)
{
    if (!ROWS_PER_THREAD)
        rows_space_free(s);
}

/* The calling thread's rows for a plan of kpad bytes per row whose windows
 * fill the first used bytes of a row (the rest of each row zero); NULL
 * when out of memory. */
static rows_space *rows_space_get(int64_t kpad, int64_t used)
{
    rows_space *s = NULL;
#if ROWS_PER_THREAD
    pthread_once(&rows_once, rows_key_make);
    if (!rows_key_ok)
        return NULL;
    s = pthread_getspecific(rows_key);
#endif
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return NULL;
        if (!(s->acc = aligned_alloc(64, QCONV_ROWS_PX * QCONV_ACC_STRIDE * sizeof *s->acc))
#if ROWS_PER_THREAD
            || pthread_setspecific(rows_key, s)
#endif
        ) {
            rows_space_free(s);
            return NULL;
        }
    }
    if (s->kpad != kpad || s->dirty > used) {
        size_t need = (size_t)(QCONV_ROWS_PX * kpad + 64);
        if (s->bytes < need) {
            free(s->rows);
            s->kpad = 0;
            s->bytes = (need + 4095) & ~(size_t)4095; /* a few sizes share one buffer */
            if (!(s->rows = aligned_alloc(64, s->bytes))) {
                s->bytes = 0;
                rows_space_done(s);
                return NULL;
            }
        }
        s->kpad = kpad;
        for (int64_t m = 0; m < QCONV_ROWS_PX; m++)
            memset(s->rows + m * kpad + used, 0, (size_t)(kpad - used));
        memset(s->rows + QCONV_ROWS_PX * kpad, 0, 64);
        s->dirty = used;
    }
    if (s->dirty < used)
        s->dirty = used; /* rows_gather will write that far */
    return s;
}

static void run_rows_items(void *ctx, int64_t i0, int64_t i1)
{
    rows_job *j = ctx;
    const qconv_plan *p = j->p;
    const qconv_isa *isa = p->isa;
    const int64_t P = p->g.n * p->g.oh * p->g.ow, T = (int64_t)isa->lanes * isa->nv_max, kpad = p->kpad;
    const int64_t nseg = p->nseg;
    rows_space *space = rows_space_get(kpad, nseg * p->nk);
    if (!space) {
        j->failed = 1; /* any thread's failure fails the run */
        return;
    }
    uint8_t *rows = space->rows;
    int32_t *acc = space->acc;
    int32_t xsum[QCONV_ROWS_PX];
    uint8_t tmp[QCONV_ACC_STRIDE];
    const unsigned char *px[QCONV_ROWS_PX];
    /* every chunk inside one segment, or one segment: the input can serve
     * as the rows; a row of the tiles then reads extent bytes */
    const int chunked = (p->nk % isa->kchunk == 0 || nseg == 1) && p->xbytes == 1;
    const int64_t extent = nseg == 1 ? kpad : p->seg_off[nseg - 1] + p->nk;
    isa->rows_begin();
    for (int64_t item = i0; item < i1; item++) {
        int64_t g = item / j->blocks, b = item % j->blocks;
        int64_t pix0 = b * QCONV_ROWS_PX, npx = P - pix0 < QCONV_ROWS_PX ? P - pix0 : QCONV_ROWS_PX;
        window_walk walk = walk_at(p, j->xb, g, pix0);
        for (int64_t m = 0; m < npx; m++) {
            if (m)
                walk_next(&walk);
            px[m] = walk.at;
        }
        if (p->zw)
            window_sums(p, j->xb, g, pix0, npx, xsum);
        /* equally spaced windows, whose tiles (all 16 rows of each: rows
         * past the last pixel are read too) read nothing past the input? */
        int64_t stride = npx > 1 ? px[1] - px[0] : 0;
        int64_t room = j->xend - px[0] - extent; /* bytes past the first row's */
        int strided = chunked && npx > 1 && stride > 0 && room >= 0 && room / stride >= (npx + 15) / 16 * 16 - 1;
        for (int64_t m = 2; m < npx && strided; m++)
            strided = px[m] - px[m - 1] == stride;
        const uint8_t *a = rows;
        int64_t astride = kpad;
        if (strided) {
            a = px[0];
            astride = stride;
        } else {
            isa->rows_gather((int)npx, px, p->seg_off, (int)nseg, p->nk, kpad, rows);
        }
        for (int64_t t0 = 0; t0 < p->ogp; t0 += T) {
            int64_t width = p->ogp - t0 < T ? p->ogp - t0 : T;
            int64_t nvalid = p->g.og - t0 < width ? p->g.og - t0 : width;
            const unsigned char *w = (const unsigned char *)p->wpack + (g * p->ogp + t0) * kpad;
            int64_t o0 = g * p->g.og + t0;
            isa->gemm_rows((int)npx, (int)(width / isa->lanes), a, astride, strided && nseg > 1 ? p->seg_off : NULL,
                           (int)nseg, p->nk, kpad, w, acc);
            if (p->g.y_nhwc) {
                isa->rows_requant(p, (int)npx, (int)(width / isa->lanes), acc, xsum, o0, nvalid,
                                  j->y + pix0 * p->g.o + o0, p->g.o);
                continue;
            }
            for (int64_t m = 0; m < npx; m++)
                store_channels(p, j->y, pix0 + m, o0, nvalid, acc + m * QCONV_ACC_STRIDE, p->zw ? xsum[m] : 0,
                               tmp);
        }
    }
    isa->rows_end();
    rows_space_done(space);
}

static mera_status run_gemm(const qconv_plan *p, const unsigned char *xb, const unsigned char *xend, uint8_t *y,
                            int threads)
{
    /* every thread gets at least QCONV_MIN_THREAD_MACS of work, so a small
     * layer does not pay more to start threads than it gains */
    const int64_t P = p->g.n * p->g.oh * p->g.ow, T = (int64_t)p->isa->lanes * p->isa->nv_max;
    int64_t macs = P * p->g.o * p->kreal, most = macs / QCONV_MIN_THREAD_MACS;
    int t = mera_threads_resolve(threads);
    if (t > most)
        t = most > 1 ? (int)most : 1;
    if (p->isa->gemm_rows && P >= QCONV_ROWS_MIN_PX) {
        rows_job r = {p, xb, xend, y, (P + QCONV_ROWS_PX - 1) / QCONV_ROWS_PX, 0};
        mera_parallel_for(t, p->g.groups * r.blocks, 1, run_rows_items, &r);
        return r.failed ? MERA_ERR_NOMEM : MERA_OK;
    }
    gemm_job j = {p, xb, y, (p->ogp + T - 1) / T, (P + QCONV_BLOCK_PX - 1) / QCONV_BLOCK_PX};
    mera_parallel_for(t, p->g.groups * j.tiles * j.blocks, 1, run_gemm_items, &j);
    return MERA_OK;
}

/* Depthwise: output rows (n, oy) split across threads; NCHW output goes
 * through a row of NHWC bytes. A plan reading its input in place
 * (p->direct) runs the rows from `first` on a copy of the input from byte
 * `from` on (dw_tail). */
typedef struct {
    const qconv_plan *p;
    const unsigned char *xb, *tail;
    int64_t first, from;
    uint8_t *y;
    int failed; /* out of memory for an NCHW row */
} dw_job;

/* The byte of the input where output row r's (r = n * oh + oy) windows
 * start. */
static int64_t dw_row_start(const qconv_plan *p, int64_t r)
{
    return (r / p->g.oh * p->hp + r % p->g.oh * p->g.sh) * p->wp * p->cp;
}

/* A depthwise plan reading its input in place: its loops read up to
 * QCONV_SLACK bytes past a window's last pixel, as the padded copy allows,
 * so the output rows from *first on, whose reads could pass the input's
 * end, run on a copy of the input from byte *from on followed by
 * QCONV_SLACK zeros, *bytes in all (0 when no row needs it). */
static void dw_tail(const qconv_plan *p, int64_t *first, int64_t *from, int64_t *bytes)
{
    const int64_t R = p->g.n * p->g.oh, total = p->g.n * p->hp * p->wp * p->cp;
    /* past a row's start: its last window's last tap, one pixel and the slack */
    const int64_t reach = (p->g.ow - 1) * p->g.sw * p->cp + p->seg_off[p->nseg - 1] + p->cp + QCONV_SLACK;
    int64_t r = R;
    while (r > 0 && dw_row_start(p, r - 1) + reach > total)
        r--;
    *first = r;
    *from = r < R ? dw_row_start(p, r) : total;
    *bytes = r < R ? total - *from + QCONV_SLACK : 0;
}

static void run_depthwise_rows(void *ctx, int64_t r0, int64_t r1)
{
    dw_job *j = ctx;
    const qconv_plan *p = j->p;
    uint8_t *row = p->g.y_nhwc ? NULL : malloc((size_t)(p->g.ow * p->g.o));
    if (!p->g.y_nhwc && !row) {
        j->failed = 1; /* any thread's failure fails the run */
        return;
    }
    const int64_t hw = p->g.oh * p->g.ow;
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / p->g.oh, oy = r % p->g.oh, start = dw_row_start(p, r);
        const unsigned char *in = r < j->first ? j->xb + start : j->tail + (start - j->from);
        if (p->g.y_nhwc) {
            p->isa->dw_row(p, in, j->y + (n * hw + oy * p->g.ow) * p->g.o);
            continue;
        }
        p->isa->dw_row(p, in, row);
        for (int64_t c = 0; c < p->g.o; c++) {
            uint8_t *d = j->y + (n * p->g.o + c) * hw + oy * p->g.ow;
            for (int64_t ox = 0; ox < p->g.ow; ox++)
                d[ox] = row[ox * p->g.o + c];
        }
    }
    free(row);
}

/* space: scratch of at least `bytes` (dw_tail) for a direct plan, or NULL. */
static mera_status run_depthwise(const qconv_plan *p, const unsigned char *xb, uint8_t *y, int threads,
                                 unsigned char *space, size_t space_bytes)
{
    dw_job j = {p, xb, NULL, p->g.n * p->g.oh, 0, y, 0};
    void *buf = NULL;
    if (p->direct) {
        int64_t bytes;
        dw_tail(p, &j.first, &j.from, &bytes);
        if (bytes) {
            if (!space || space_bytes < (size_t)bytes)
                space = buf = malloc((size_t)bytes);
            if (!space)
                return MERA_ERR_NOMEM;
            memcpy(space, xb + j.from, (size_t)(bytes - QCONV_SLACK));
            memset(space + bytes - QCONV_SLACK, 0, QCONV_SLACK);
            j.tail = space;
        }
    }
    mera_parallel_for(threads, p->g.n * p->g.oh, 1, run_depthwise_rows, &j);
    free(buf);
    return j.failed ? MERA_ERR_NOMEM : MERA_OK;
}

mera_status qconv_run(const qconv_plan *p, const mera_kernel_args *a, mera_error *err)
{
    const unsigned char *xb = a->in[0];
    void *buf = NULL;
    /* the input's bytes; the padded copy's are followed by QCONV_SLACK zeros */
    size_t xbytes = (size_t)(p->g.n * p->hp * p->wp) * (size_t)(p->cp * p->xbytes);
    if (!p->direct) {
        unsigned char *space = a->scratch;
        if (!space || a->scratch_bytes < padded_bytes(p)) /* not planned: a run-time weight */
            space = buf = malloc(padded_bytes(p));
        if (!space)
            return ref_nomem(err, a->node);
        xb = padded_input(p, a->in[0], space);
        xbytes += QCONV_SLACK;
    }
    const unsigned char *xend = xb + xbytes;
    mera_status st = MERA_OK;
    if (p->depthwise)
        st = run_depthwise(p, xb, a->out[0], a->threads, p->direct ? a->scratch : NULL,
                           p->direct ? a->scratch_bytes : 0);
    else
        st = run_gemm(p, xb, xend, a->out[0], a->threads);
    free(buf);
    return st ? ref_nomem(err, a->node) : MERA_OK;
}

/* ---- the kernel ABI ------------------------------------------------------ */

/* Prepare needs the weight, and the bias when there is one. */
static int constants_present(const mera_kernel_args *a)
{
    return a->in[1] && (a->n_inputs < 3 || !a->in_types[2] || a->in[2]);
}

mera_status qconv_prepare(const mera_kernel_args *a, const qconv_isa *isa, int dense, void **state, mera_error *err)
{
    *state = NULL;
    if (!constants_present(a))
        return MERA_OK; /* run-time weights: planned per run */
    qconv_plan *p;
    mera_status st = qconv_plan_new(a, isa, dense, &p, err);
    *state = p;
    return st;
}

mera_status qconv_kernel(const mera_kernel_args *a, const qconv_isa *isa, int dense, mera_error *err)
{
    const qconv_plan *p = a->state;
    qconv_plan *own = NULL;
    if (!p) {
        mera_status st = qconv_plan_new(a, isa, dense, &own, err);
        if (st)
            return st;
        p = own;
    }
    MERA_ASSERT(p->isa == isa || p->isa == isa->narrow);
    mera_status st = qconv_run(p, a, err);
    qconv_plan_free(own);
    return st;
}

size_t fast_qconv_scratch(const mera_kernel_args *a)
{
    const qconv_plan *p = a->state;
    if (!p)
        return 0;
    if (!p->direct)
        return padded_bytes(p);
    int64_t first, from, bytes = 0;
    if (p->depthwise)
        dw_tail(p, &first, &from, &bytes);
    return (size_t)bytes;
}

void fast_qconv_release(void *state)
{
    qconv_plan_free(state);
}

mera_status fast_qconv_prepare_like(const mera_kernel_args *a, const void *like, void **state, mera_error *err)
{
    *state = NULL;
    if (!like)
        return MERA_OK;
    qconv_plan *p;
    mera_status st = qconv_plan_new_like(a, like, a->node->op == MERA_OP_DENSE, &p, err);
    *state = p;
    return st;
}

#define CONV_ENTRIES(suffix, isa)                                                                   \
    mera_status fast_conv2d_q_prepare_##suffix(const mera_kernel_args *a, void **state, mera_error *err) \
    {                                                                                               \
        return qconv_prepare(a, &(isa), 0, state, err);                                             \
    }                                                                                               \
    mera_status fast_conv2d_q_##suffix(const mera_kernel_args *a, mera_error *err)                 \
    {                                                                                               \
        return qconv_kernel(a, &(isa), 0, err);                                                     \
    }

CONV_ENTRIES(c, qconv_isa_c)
#if defined(__x86_64__)
CONV_ENTRIES(avx2, qconv_isa_avx2)
CONV_ENTRIES(avx512, qconv_isa_avx512)
#if defined(__linux__)
CONV_ENTRIES(amx, qconv_isa_amx)
#endif
#endif
