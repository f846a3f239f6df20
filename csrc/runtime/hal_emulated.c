/* The "emulated" HAL device: the software emulation of the DNA IP.
 *
 * Device memory is host memory: a device address is the host address of
 * the byte, and every access is checked against the blocks the device
 * handed out. load_program builds a DNA machine (sim/sim.h) over the
 * program, reading the constant image from the device block at
 * const_addr; run_segment executes one DNA segment's instructions with it,
 * bit-exactly, on the activation block at act_addr, and reports the timing
 * model's cycles for the segment. When the constant image was imported (a
 * read-only file mapping), the machine packs every CONV tile's weights once
 * at load and releases the image's pages (release_const_pages): the weights
 * are resident once, in the form the kernels use, and weight LOADs only
 * record what WGT holds. "emulated-copy", the same device without
 * mem_import, holds the image in device memory and packs each CONV's
 * weights when it runs (pack_at_run), as the IP's MAC array reads WGT, so
 * that the weights are not held twice there either. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/hal.h"
#include "sim/sim.h"

typedef struct {
    uint8_t *host;
    uint64_t bytes;
    int owned; /* 0: imported host memory (read-only) */
} block;

struct mera_hal_device {
    block *blocks;
    int n_blocks, cap;
    dna_program prog;  /* shallow copy: params_image = the constant block */
    const mera_graph *g;
    dna_machine *m;
    dna_run *run;
    int loaded;
};

/* Zeroed and 64-byte aligned; calloc, so that large blocks come zeroed
 * from the system and only the pages the program touches become
 * resident. Freed with zfree. */
static uint8_t *zalloc(uint64_t bytes)
{
    uint8_t *raw = calloc(1, (size_t)bytes + 64 + sizeof(void *));
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)p)[-1] = raw;
    return (uint8_t *)p;
}

static void zfree(void *p)
{
    if (p)
        free(((void **)p)[-1]);
}

static mera_hal_addr addr_of(const void *p)
{
    return (mera_hal_addr)(uintptr_t)p;
}

/* The block holding [addr, addr + n), or NULL. */
static block *find(mera_hal_device *dev, mera_hal_addr addr, uint64_t n)
{
    for (int k = 0; k < dev->n_blocks; k++) {
        block *b = &dev->blocks[k];
        mera_hal_addr lo = addr_of(b->host);
        if (addr >= lo && addr - lo <= b->bytes && n <= b->bytes - (addr - lo))
            return b;
    }
    return NULL;
}

static mera_status emu_open(const char *name, mera_hal_device **dev, mera_error *err)
{
    (void)name;
    *dev = calloc(1, sizeof **dev);
    if (!*dev)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    return MERA_OK;
}

static void unload(mera_hal_device *dev)
{
    dna_run_free(dev->run);
    dna_machine_free(dev->m);
    dev->run = NULL;
    dev->m = NULL;
    dev->loaded = 0;
}

static void emu_close(mera_hal_device *dev)
{
    if (!dev)
        return;
    unload(dev);
    for (int k = 0; k < dev->n_blocks; k++)
        if (dev->blocks[k].owned)
            zfree(dev->blocks[k].host);
    free(dev->blocks);
    free(dev);
}

static mera_status add_block(mera_hal_device *dev, uint8_t *host, uint64_t bytes, int owned, mera_error *err)
{
    if (dev->n_blocks == dev->cap) {
        int nc = dev->cap ? dev->cap * 2 : 8;
        block *b = realloc(dev->blocks, (size_t)nc * sizeof *b);
        if (!b)
            return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        dev->blocks = b;
        dev->cap = nc;
    }
    dev->blocks[dev->n_blocks++] = (block){host, bytes, owned};
    return MERA_OK;
}

static mera_status emu_alloc(mera_hal_device *dev, uint64_t bytes, mera_hal_addr *addr, mera_error *err)
{
    if (bytes == 0 || bytes > ((uint64_t)1 << 40))
        return mera_fail(err, MERA_ERR_INVALID, "mem_alloc: %llu bytes", (unsigned long long)bytes);
    uint8_t *p = zalloc(bytes); /* zeros: a program reading unwritten bytes gets the same every run */
    if (!p)
        return mera_fail(err, MERA_ERR_NOMEM, "out of device memory allocating %llu bytes", (unsigned long long)bytes);
    mera_status st = add_block(dev, p, bytes, 1, err);
    if (st) {
        zfree(p);
        return st;
    }
    *addr = addr_of(p);
    return MERA_OK;
}

static mera_status emu_import(mera_hal_device *dev, const void *host, uint64_t bytes, mera_hal_addr *addr,
                              mera_error *err)
{
    if (!host || bytes == 0)
        return mera_fail(err, MERA_ERR_INVALID, "mem_import: empty block");
    mera_status st = add_block(dev, (uint8_t *)(uintptr_t)host, bytes, 0, err);
    if (!st)
        *addr = addr_of(host);
    return st;
}

static void emu_free(mera_hal_device *dev, mera_hal_addr addr)
{
    for (int k = 0; k < dev->n_blocks; k++)
        if (addr_of(dev->blocks[k].host) == addr) {
            if (dev->loaded && (addr_of(dev->prog.params_image) == addr || addr_of(dna_run_dram(dev->run)) == addr))
                unload(dev);
            if (dev->blocks[k].owned)
                zfree(dev->blocks[k].host);
            dev->blocks[k] = dev->blocks[--dev->n_blocks];
            return;
        }
}

static mera_status emu_write(mera_hal_device *dev, mera_hal_addr dst, const void *src, uint64_t n, mera_error *err)
{
    block *b = find(dev, dst, n);
    if (!b || !b->owned)
        return mera_fail(err, MERA_ERR_INVALID, "write: [0x%llx, +%llu) is not inside a writable device block",
                         (unsigned long long)dst, (unsigned long long)n);
    memcpy(b->host + (dst - addr_of(b->host)), src, (size_t)n);
    return MERA_OK;
}

static mera_status emu_read(mera_hal_device *dev, mera_hal_addr src, void *dst, uint64_t n, mera_error *err)
{
    block *b = find(dev, src, n);
    if (!b)
        return mera_fail(err, MERA_ERR_INVALID, "read: [0x%llx, +%llu) is not inside a device block",
                         (unsigned long long)src, (unsigned long long)n);
    memcpy(dst, b->host + (src - addr_of(b->host)), (size_t)n);
    return MERA_OK;
}

static mera_status emu_load(mera_hal_device *dev, const mera_hal_program *p, mera_error *err)
{
    unload(dev);
    const dna_program *prog = p->prog;
    uint64_t cb = (uint64_t)prog->params_bytes, ab = (uint64_t)(prog->dram_bytes - dna_act_base(prog));
    block *cblk = find(dev, p->const_addr, cb), *ablk = find(dev, p->act_addr, ab);
    if (!cblk || !ablk || !ablk->owned)
        return mera_fail(err, MERA_ERR_INVALID,
                         "load_program: the constant image (%llu bytes) or the activations (%llu bytes) are not in "
                         "device blocks",
                         (unsigned long long)cb, (unsigned long long)ab);
    dev->prog = *prog;
    dev->prog.params_image = cblk->host + (p->const_addr - addr_of(cblk->host));
    dev->g = p->g;
    dna_machine_options mo;
    memset(&mo, 0, sizeof mo);
    /* Imported (a read-only file mapping): each CONV tile's weights are packed
     * once here and the image's pages released, so the weights are resident
     * once, packed. Copied into device memory (emulated-copy): that copy is
     * the weights' one resident form; CONVs pack theirs from WGT as they run. */
    mo.pack_at_run = cblk->owned;
    mo.dna_only = 1; /* the host runs the host segments (runtime.c) */
    mo.release_const_pages = !cblk->owned; /* imported: a read-only file mapping (hal.h) */
    /* DNA segments read no graph param data: layers take weights from the constant image */
    dev->m = dna_machine_new_opts(p->g, &dev->prog, p->platform, NULL, &mo, err);
    if (!dev->m)
        return err ? err->code : MERA_ERR_INVALID;
    dev->run = dna_run_new(dev->m, ablk->host + (p->act_addr - addr_of(ablk->host)), err);
    if (!dev->run) {
        unload(dev);
        return err ? err->code : MERA_ERR_NOMEM;
    }
    dev->loaded = 1;
    return MERA_OK;
}

static mera_status emu_run_segment(mera_hal_device *dev, int seg, int64_t *cycles, mera_error *err)
{
    if (!dev->loaded)
        return mera_fail(err, MERA_ERR_INVALID, "run_segment: no program loaded");
    if (seg < 0 || seg >= dev->prog.n_segments || dev->prog.segments[seg].kind != DNA_SEG_DNA)
        return mera_fail(err, MERA_ERR_INVALID, "run_segment: segment %d is not a DNA segment", seg);
    return dna_run_segment(dev->run, seg, cycles, err);
}

/* Device memory is host memory: the bytes of an allocated block in place
 * (not of an imported one, which is read-only). */
static void *emu_map(mera_hal_device *dev, mera_hal_addr addr, uint64_t n)
{
    block *b = find(dev, addr, n);
    return b && b->owned ? b->host + (addr - addr_of(b->host)) : NULL;
}

const mera_hal_driver mera_hal_emulated = {
    "emulated",
    "software emulation of the DNA IP: host memory as device memory, the DNA machine as the core",
    emu_open,
    emu_close,
    emu_alloc,
    emu_import,
    emu_free,
    emu_write,
    emu_read,
    emu_load,
    emu_run_segment,
    emu_map,
};

/* The same device without mem_import or map: the runtime copies the
 * constant image into device memory and host nodes' data in and out, as
 * for a discrete card (tests those paths). */
static const mera_hal_driver mera_hal_emulated_copy = {
    "emulated-copy",
    "the emulated IP without zero-copy import: the constant image is copied into device memory",
    emu_open,
    emu_close,
    emu_alloc,
    NULL,
    emu_free,
    emu_write,
    emu_read,
    emu_load,
    emu_run_segment,
    NULL,
};

static const mera_hal_driver *const drivers[] = {&mera_hal_emulated, &mera_hal_emulated_copy};

const mera_hal_driver *mera_hal_find(const char *name)
{
    for (size_t k = 0; k < sizeof drivers / sizeof drivers[0]; k++)
        if (name && strcmp(drivers[k]->name, name) == 0)
            return drivers[k];
    return NULL;
}

void mera_hal_names(char *buf, size_t n)
{
    size_t at = 0;
    if (!n)
        return;
    buf[0] = 0;
    for (size_t k = 0; k < sizeof drivers / sizeof drivers[0] && at < n; k++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s", k ? ", " : "", drivers[k]->name);
}
