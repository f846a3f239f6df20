/* The device interface of the IP target: what a driver for a real DNA IP
 * (an FPGA board behind PCIe, an SoC's AXI port) implements, and what the
 * deploy runtime (runtime.c) drives. docs/deploy.md, "Writing a HAL
 * driver", gives the contract in prose.
 *
 * Device memory is addressed by 64-bit device addresses the driver hands
 * out (mem_alloc, mem_import). The runtime places the DNA program's DRAM
 * in two device blocks: the constant image (program addresses
 * [0, params_bytes)) at const_addr, and the activations at act_addr: a
 * program address a >= params_bytes is device address
 * act_addr + (a - dna_act_base(prog)) (sim/sim.h: params_bytes rounded
 * down to 64, so that device addresses keep the program's alignment). The
 * driver relocates the program's DMA addresses the same way.
 *
 * Calls come from one thread at a time per device handle. Every function
 * returns MERA_OK or fills err (mera_fail) and returns its code; a failed
 * call leaves the device usable for close. */
#ifndef MERA_RUNTIME_HAL_H
#define MERA_RUNTIME_HAL_H

#include <stddef.h>
#include <stdint.h>

#include "arch/platform.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "sim/sim.h"

typedef uint64_t mera_hal_addr;
typedef struct mera_hal_device mera_hal_device; /* the driver's own state */

/* What load_program receives. Everything stays valid until close or the
 * next load_program. */
typedef struct {
    const uint8_t *program;       /* the serialized DNA program (isa/program.c), as in deploy.params */
    size_t program_len;
    const dna_program *prog;      /* the same, parsed and validated (constant image included) */
    const mera_graph *g;          /* the graph: layer geometry and qparams for drivers that need them */
    const mera_platform *platform;/* the hardware parameters the program was scheduled for */
    mera_hal_addr const_addr;     /* device address of the constant image, prog->params_bytes bytes */
    mera_hal_addr act_addr;       /* device address of the activations, dram_bytes - dna_act_base(prog) bytes */
} mera_hal_program;

typedef struct {
    const char *name;        /* "emulated" */
    const char *description;
    mera_status (*open)(const char *name, mera_hal_device **dev, mera_error *err);
    void (*close)(mera_hal_device *dev);
    /* bytes of device memory, 64-byte aligned, contents unspecified */
    mera_status (*mem_alloc)(mera_hal_device *dev, uint64_t bytes, mera_hal_addr *addr, mera_error *err);
    /* Optional (NULL: not supported): make host memory readable by the
     * device without a copy. The memory is a read-only file mapping
     * (MAP_PRIVATE) whose bytes stay valid and unchanged until mem_free;
     * the device may release its pages (madvise MADV_DONTNEED), which
     * fault back from the file. The runtime imports the constant image
     * this way when deploy.params is mapped and otherwise allocates and
     * writes it. */
    mera_status (*mem_import)(mera_hal_device *dev, const void *host, uint64_t bytes, mera_hal_addr *addr,
                              mera_error *err);
    void (*mem_free)(mera_hal_device *dev, mera_hal_addr addr);
    /* Copies between host and device memory; complete when they return.
     * [addr, addr + n) must lie inside one block (else MERA_ERR_INVALID). */
    mera_status (*write)(mera_hal_device *dev, mera_hal_addr dst, const void *src, uint64_t n, mera_error *err);
    mera_status (*read)(mera_hal_device *dev, mera_hal_addr src, void *dst, uint64_t n, mera_error *err);
    /* Loads a program: validate it against the device, translate and
     * relocate its instructions, keep it for run_segment. */
    mera_status (*load_program)(mera_hal_device *dev, const mera_hal_program *p, mera_error *err);
    /* Runs DNA segment seg (prog->segments[seg].kind == DNA_SEG_DNA) of the
     * loaded program to completion: its instructions read and write device
     * memory as docs/isa.md says. *cycles gets the device cycles it took. */
    mera_status (*run_segment)(mera_hal_device *dev, int seg, int64_t *cycles, mera_error *err);
    /* Optional (NULL: not supported): the host address of device bytes
     * [addr, addr + n) when the host can address them directly (the
     * emulated device; an SoC whose IP shares the host's DRAM), else NULL
     * (then read and write copy). [addr, addr + n) must lie inside one
     * block from mem_alloc; the address stays valid until that block's
     * mem_free, and the host's loads and stores through it are the device
     * memory's bytes between run_segment calls. The runtime runs host
     * nodes on device memory this way, in place, as the Simulator runs
     * them on its DRAM: no copy of their inputs and outputs per run. */
    void *(*map)(mera_hal_device *dev, mera_hal_addr addr, uint64_t n);
} mera_hal_driver;

/* The built-in software emulation of the IP (hal_emulated.c). */
extern const mera_hal_driver mera_hal_emulated;

/* A driver by name, or NULL. */
const mera_hal_driver *mera_hal_find(const char *name);
/* The known drivers' names, ", "-separated, into buf. */
void mera_hal_names(char *buf, size_t n);

#endif
