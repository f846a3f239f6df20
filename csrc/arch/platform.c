#include "arch/platform.h"

#include <stdio.h>
#include <string.h>

static const mera_platform platforms[] = {
    /* name            alias       arch kind              TOPS  pub  MHz   MACs   note */
    {"DNAF132S0001", NULL, 0, MERA_DEVICE_FPGA, 0.6, 1, 300, 1024, "0.6 TOPS / (2 x 300 MHz) = 1000 -> 1024 MACs"},
    {"DNAF232S0002", NULL, 0, MERA_DEVICE_FPGA, 1.2, 1, 300, 2048, "1.2 TOPS / (2 x 300 MHz) = 2000 -> 2048 MACs"},
    {"DNAF100L0001", NULL, 0, MERA_DEVICE_FPGA, 2.4, 0, 300, 4096, "earlier DNA-F100 revision; figures assumed equal to DNAF100L0003"},
    {"DNAF100L0002", NULL, 0, MERA_DEVICE_FPGA, 2.4, 0, 300, 4096, "earlier DNA-F100 revision; figures assumed equal to DNAF100L0003"},
    {"DNAF100L0003", NULL, 100, MERA_DEVICE_FPGA, 2.4, 1, 300, 4096, "DNA-F100 on Alveo U50; 2.4 TOPS / (2 x 300 MHz) = 4000 -> 4096 MACs"},
    {"DNAF632L0003", NULL, 0, MERA_DEVICE_FPGA, 3.6, 1, 300, 6144, "3.6 TOPS / (2 x 300 MHz) = 6000 -> 6144 MACs"},
    {"DNAF200L0001", NULL, 0, MERA_DEVICE_FPGA, 4.9, 0, 300, 8192, "earlier DNA-F200 revision; figures assumed equal to DNAF200L0003"},
    {"DNAF200L0002", NULL, 0, MERA_DEVICE_FPGA, 4.9, 0, 300, 8192, "earlier DNA-F200 revision (MERA's default arch); figures assumed equal to DNAF200L0003"},
    {"DNAF200L0003", NULL, 200, MERA_DEVICE_FPGA, 4.9, 1, 300, 8192, "DNA-F200 on Alveo U50; 4.9 TOPS / (2 x 300 MHz) = 8167 -> 8192 MACs"},
    {"DNAA400L0001", NULL, 0, MERA_DEVICE_ASIC, 26.2, 1, 800, 16384, "26.2 TOPS / (2 x 800 MHz) = 16375 -> 16384 MACs"},
    {"DNAA600L0002", "SAKURA_1", 0, MERA_DEVICE_ASIC, 40.0, 1, 800, 24576, "SAKURA-I; 40 TOPS / (2 x 800 MHz) = 25000 -> 24576 MACs"},
    {"DNAA800L0001", NULL, 0, MERA_DEVICE_ASIC, 78.0, 1, 1200, 32768, "78 TOPS at the recommended 1.2 GHz / 2 = 32500 -> 32768 MACs"},
};

int mera_platform_count(void)
{
    return (int)(sizeof platforms / sizeof platforms[0]);
}

const mera_platform *mera_platform_at(int i)
{
    return i >= 0 && i < mera_platform_count() ? &platforms[i] : NULL;
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
