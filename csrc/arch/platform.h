/* The DNA platform table: every public platform with its public figures,
 * and the hardware parameters the scheduler and simulator read.
 *
 * Public: TOPS, quoted at the minimum recommended clock (300 MHz for FPGA
 * parts, 800 MHz for ASICs; 1.2 GHz for the A800). Derived: the MAC count,
 * TOPS / (2 x clock), rounded to the count the figure implies. Chosen:
 * everything EdgeCortix never published (MAC array shape, buffer sizes,
 * bandwidths, vector lanes), picked to be plausible for the board.
 * docs/hardware.md gives the reason for every number. */
#ifndef MERA_ARCH_PLATFORM_H
#define MERA_ARCH_PLATFORM_H

#include <stdint.h>

typedef enum { MERA_DEVICE_FPGA, MERA_DEVICE_ASIC } mera_device_kind;

/* The hardware parameters a user may override with build_config(arch={...}):
 *   X(field, type, unit, doc) */
#define MERA_ARCH_PARAMS(X)                                                                  \
    X(clock_mhz, double, "MHz", "accelerator clock")                                         \
    X(mac_ic, int64_t, "lanes", "MAC array: input channels reduced per cycle")               \
    X(mac_oc, int64_t, "lanes", "MAC array: output channels computed per cycle")             \
    X(mac_px, int64_t, "pixels", "MAC array: output pixels computed per cycle")              \
    X(act_buffer_kib, int64_t, "KiB", "on-chip activation buffer (inputs and outputs)")      \
    X(weight_buffer_kib, int64_t, "KiB", "on-chip weight buffer")                            \
    X(acc_buffer_kib, int64_t, "KiB", "on-chip int32 accumulator buffer")                    \
    X(vector_lanes, int64_t, "lanes", "vector unit: elements per cycle")                     \
    X(dram_gbps, double, "GB/s", "effective device-memory bandwidth of the accelerator's DMA") \
    X(dma_setup_cycles, int64_t, "cycles", "fixed cost of one DMA descriptor")               \
    X(pcie_gbps, double, "GB/s", "effective host link bandwidth")                            \
    X(host_call_us, double, "us", "fixed host cost of one inference call (driver, doorbell, interrupt)")

typedef struct {
    const char *name;      /* "DNAF100L0003" */
    const char *alias;     /* "SAKURA_1", or NULL */
    int arch;              /* the 2021 build_config(arch=...) number, or 0 */
    mera_device_kind kind;
    double tops;           /* published int8 TOPS at the minimum recommended clock */
    int tops_published;    /* 0: the figure is assumed from a sibling part */
#define X(field, type, unit, doc) type field;
    MERA_ARCH_PARAMS(X)
#undef X
    const char *note;
} mera_platform;

int mera_platform_count(void);
const mera_platform *mera_platform_at(int i);
/* By name, alias ("SAKURA_1") or arch number as text ("100"); NULL if unknown. */
const mera_platform *mera_platform_find(const char *name);
/* MACs per cycle: mac_ic * mac_oc * mac_px. */
int64_t mera_platform_macs(const mera_platform *p);

#endif
