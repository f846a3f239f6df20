/* The deploy format's shared pieces (deploy_format.h). */
#include "runtime/deploy_format.h"

const char *mera_section_name(int kind)
{
    switch (kind) {
    case MERA_SECTION_GRAPH: return "GRAPH";
    case MERA_SECTION_PARAMS: return "PARAMS";
    case MERA_SECTION_PROGRAM: return "PROGRAM";
    }
    return "unknown";
}
