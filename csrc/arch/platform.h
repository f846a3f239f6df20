/* The DNA platform table: every public platform with its public figures.
 *
 * TOPS are the figures EdgeCortix published, quoted at the minimum
 * recommended clock (300 MHz for FPGA parts, 800 MHz for ASICs; 1.2 GHz for
 * the A800). The MAC count is derived: TOPS / (2 x clock), rounded to the
 * power-of-two-friendly count the figure implies. docs/hardware.md gives the
 * reasoning for each entry. */
#ifndef MERA_ARCH_PLATFORM_H
#define MERA_ARCH_PLATFORM_H

#include <stdint.h>

typedef enum { MERA_DEVICE_FPGA, MERA_DEVICE_ASIC } mera_device_kind;

typedef struct {
    const char *name;      /* "DNAF100L0003" */
    const char *alias;     /* "SAKURA_1", or NULL */
    int arch;              /* the 2021 build_config(arch=...) number, or 0 */
    mera_device_kind kind;
    double tops;           /* published int8 TOPS at clock_mhz */
    int tops_published;    /* 0: the figure is assumed from a sibling part */
    double clock_mhz;
    int64_t mac_count;     /* int8 MACs per cycle */
    const char *note;
} mera_platform;

int mera_platform_count(void);
const mera_platform *mera_platform_at(int i);
/* By name, alias ("SAKURA_1") or arch number as text ("100"); NULL if unknown. */
const mera_platform *mera_platform_find(const char *name);

#endif
