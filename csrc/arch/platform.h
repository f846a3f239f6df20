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

#include <stddef.h>
#include <stdint.h>

typedef enum { MERA_DEVICE_FPGA, MERA_DEVICE_ASIC } mera_device_kind;

/* The hardware parameters a user may override with build_config(arch={...}),
 * each with the range a platform may take (checked on every override and
 * on every deploy.json; it keeps the timing model's arithmetic finite and
 * inside int64):
 *   X(field, type, unit, lo, hi, doc) */
#define MERA_ARCH_PARAMS(X)                                                                                \
    X(clock_mhz, double, "MHz", 1, 10000, "accelerator clock")                                             \
    X(mac_ic, int64_t, "lanes", 1, 4096, "MAC array: input channels reduced per cycle")                    \
    X(mac_oc, int64_t, "lanes", 1, 4096, "MAC array: output channels computed per cycle")                  \
    X(mac_px, int64_t, "pixels", 1, 1024, "MAC array: output pixels computed per cycle")                   \
    X(act_buffer_kib, int64_t, "KiB", 1, 1048576, "on-chip activation buffer (inputs and outputs)")        \
    X(weight_buffer_kib, int64_t, "KiB", 1, 1048576, "on-chip weight buffer")                              \
    X(acc_buffer_kib, int64_t, "KiB", 1, 1048576, "on-chip int32 accumulator buffer")                      \
    X(vector_lanes, int64_t, "lanes", 1, 65536, "vector unit: elements per cycle")                         \
    X(dram_gbps, double, "GB/s", 0.01, 100000, "effective device-memory bandwidth of the accelerator's DMA") \
    X(dma_setup_cycles, int64_t, "cycles", 1, 1000000, "fixed cost of one DMA descriptor")                 \
    X(pcie_gbps, double, "GB/s", 0.01, 100000, "effective host link bandwidth")                            \
    X(host_call_us, double, "us", 0.001, 1000000,                                                          \
      "fixed host cost of one inference call (driver, doorbell, interrupt)")

typedef struct {
    const char *name;      /* "DNAF100L0003" */
    const char *alias;     /* "SAKURA_1", or NULL */
    int arch;              /* the 2021 build_config(arch=...) number, or 0 */
    mera_device_kind kind;
    double tops;           /* published int8 TOPS at the minimum recommended clock */
    int tops_published;    /* 0: the figure is assumed from a sibling part */
#define X(field, type, unit, lo, hi, doc) type field;
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
/* 0 when value is acceptable for the hardware parameter field (a
 * MERA_ARCH_PARAMS name): inside its range, and an integer where the field
 * is one. Else -1 and msg says why, naming the field ("clock_mhz = 0 is
 * outside [1, 10000] MHz"); an unknown field is -1 too. Finite checks come
 * first, so no value reaches a float-to-int conversion out of range. */
int mera_platform_param_check(const char *field, double value, char *msg, size_t msg_len);
/* Every field of p through mera_platform_param_check. */
int mera_platform_check(const mera_platform *p, char *msg, size_t msg_len);

#endif
