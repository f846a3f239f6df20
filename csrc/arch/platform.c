#include "arch/platform.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Columns: name, alias, arch, kind, TOPS, published,
 *          clock MHz, MAC ic x oc x px, buffers act/weight/acc KiB, vector lanes,
 *          DRAM GB/s, DMA setup cycles, PCIe GB/s, host call us, note.
 * docs/hardware.md explains each choice. */
#define FPGA MERA_DEVICE_FPGA
#define ASIC MERA_DEVICE_ASIC
static const mera_platform platforms[] = {
    {"DNAF132S0001", NULL, 0, FPGA, 0.6, 1, 300, 32, 32, 1, 512, 256, 64, 32, 9.6, 64, 3.2, 50,
     "small FPGA part; 0.6 TOPS / (2 x 300 MHz) = 1000 -> 1024 MACs"},
    {"DNAF232S0002", NULL, 0, FPGA, 1.2, 1, 300, 32, 64, 1, 1024, 512, 128, 32, 9.6, 64, 3.2, 50,
     "small FPGA part; 1.2 TOPS / (2 x 300 MHz) = 2000 -> 2048 MACs"},
    {"DNAF100L0001", NULL, 0, FPGA, 2.4, 0, 300, 64, 64, 1, 2048, 1024, 256, 64, 11.5, 64, 12.0, 50,
     "earlier DNA-F100 revision; figures assumed equal to DNAF100L0003"},
    {"DNAF100L0002", NULL, 0, FPGA, 2.4, 0, 300, 64, 64, 1, 2048, 1024, 256, 64, 11.5, 64, 12.0, 50,
     "earlier DNA-F100 revision; figures assumed equal to DNAF100L0003"},
    {"DNAF100L0003", NULL, 100, FPGA, 2.4, 1, 300, 64, 64, 1, 2048, 1024, 256, 64, 11.5, 64, 12.0, 50,
     "DNA-F100 on Alveo U50; 2.4 TOPS / (2 x 300 MHz) = 4000 -> 4096 MACs"},
    {"DNAF632L0003", NULL, 0, FPGA, 3.6, 1, 300, 64, 96, 1, 3072, 1536, 384, 96, 23.0, 64, 12.0, 50,
     "3.6 TOPS / (2 x 300 MHz) = 6000 -> 6144 MACs"},
    {"DNAF200L0001", NULL, 0, FPGA, 4.9, 0, 300, 64, 64, 2, 4096, 2048, 512, 128, 23.0, 64, 12.0, 50,
     "earlier DNA-F200 revision; figures assumed equal to DNAF200L0003"},
    {"DNAF200L0002", NULL, 0, FPGA, 4.9, 0, 300, 64, 64, 2, 4096, 2048, 512, 128, 23.0, 64, 12.0, 50,
     "earlier DNA-F200 revision (MERA's default arch); figures assumed equal to DNAF200L0003"},
    {"DNAF200L0003", NULL, 200, FPGA, 4.9, 1, 300, 64, 64, 2, 4096, 2048, 512, 128, 23.0, 64, 12.0, 50,
     "DNA-F200 on Alveo U50; 4.9 TOPS / (2 x 300 MHz) = 8167 -> 8192 MACs"},
    {"DNAA400L0001", NULL, 0, ASIC, 26.2, 1, 800, 64, 64, 4, 8192, 4096, 1024, 256, 27.0, 64, 6.4, 30,
     "26.2 TOPS / (2 x 800 MHz) = 16375 -> 16384 MACs"},
    {"DNAA600L0002", "SAKURA_1", 0, ASIC, 40.0, 1, 800, 64, 64, 6, 10240, 4096, 1536, 384, 27.0, 64, 6.4, 30,
     "SAKURA-I; 40 TOPS / (2 x 800 MHz) = 25000 -> 24576 MACs"},
    {"DNAA800L0001", NULL, 0, ASIC, 78.0, 1, 1200, 64, 64, 8, 16384, 8192, 2048, 512, 51.0, 64, 12.8, 30,
     "78 TOPS at the recommended 1.2 GHz / 2 = 32500 -> 32768 MACs"},
};
#undef FPGA
#undef ASIC

int mera_platform_count(void)
{
    return (int)(sizeof platforms / sizeof platforms[0]);
}

const mera_platform *mera_platform_at(int i)
{
    return i >= 0 && i < mera_platform_count() ? &platforms[i] : NULL;
}

int64_t mera_platform_macs(const mera_platform *p)
{
    return p->mac_ic * p->mac_oc * p->mac_px;
}

const mera_platform *mera_platform_find(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; i < mera_platform_count(); i++) {
        const mera_platform *p = &platforms[i];
        char arch[16];
        snprintf(arch, sizeof arch, "%d", p->arch);
        if (strcmp(p->name, name) == 0 || (p->alias && strcmp(p->alias, name) == 0) ||
            (p->arch && strcmp(arch, name) == 0))
            return p;
    }
    return NULL;
}

int mera_platform_param_check(const char *field, double value, char *msg, size_t msg_len)
{
#define X(f, type, unit, lo, hi, doc)                                                                        \
    if (field && strcmp(field, #f) == 0) {                                                                   \
        int integral = (type)0.5 == 0;                                                                       \
        if (!(value >= (lo) && value <= (hi))) { /* also NaN */                                              \
            snprintf(msg, msg_len, "%s = %.17g is outside [%.15g, %.15g] %s", #f, value, (double)(lo), (double)(hi), \
                     unit);                                                                                  \
            return -1;                                                                                       \
        }                                                                                                    \
        if (integral && value != floor(value)) {                                                             \
            snprintf(msg, msg_len, "%s = %.17g must be an integer (%s)", #f, value, unit);                   \
            return -1;                                                                                       \
        }                                                                                                    \
        return 0;                                                                                            \
    }
    MERA_ARCH_PARAMS(X)
#undef X
    snprintf(msg, msg_len, "unknown hardware parameter '%s'", field ? field : "(null)");
    return -1;
}

int mera_platform_check(const mera_platform *p, char *msg, size_t msg_len)
{
#define X(f, type, unit, lo, hi, doc)                                                                        \
    if (mera_platform_param_check(#f, (double)p->f, msg, msg_len))                                           \
        return -1;
    MERA_ARCH_PARAMS(X)
#undef X
    return 0;
}
