#include "util/firstfit.h"

#include <stdlib.h>
#include <string.h>

#include "util/status.h"

int mera_firstfit_init(mera_firstfit *ff, int max_live)
{
    ff->n_live = 0;
    ff->peak = 0;
    ff->cap = max_live > 0 ? max_live : 1;
    ff->live = malloc((size_t)ff->cap * sizeof *ff->live);
    return ff->live ? 0 : -1;
}

void mera_firstfit_free(mera_firstfit *ff)
{
    free(ff->live);
    ff->live = NULL;
    ff->n_live = ff->cap = 0;
}

int64_t mera_firstfit_place(mera_firstfit *ff, int64_t size)
{
    mera_ff_block *live = ff->live;
    if (ff->n_live >= ff->cap)
        MERA_BUG("more live blocks than the first-fit allocator has room for");
    int64_t at = 0;
    int i = 0;
    for (; i < ff->n_live; i++) {
        if (live[i].off - at >= size)
            break;
        at = live[i].off + live[i].size;
    }
    memmove(&live[i + 1], &live[i], (size_t)(ff->n_live - i) * sizeof *live);
    live[i].off = at;
    live[i].size = size;
    ff->n_live++;
    if (at + size > ff->peak)
        ff->peak = at + size;
    return at;
}

void mera_firstfit_release(mera_firstfit *ff, int64_t off)
{
    mera_ff_block *live = ff->live;
    for (int i = 0; i < ff->n_live; i++)
        if (live[i].off == off) {
            memmove(&live[i], &live[i + 1], (size_t)(ff->n_live - i - 1) * sizeof *live);
            ff->n_live--;
            return;
        }
    MERA_BUG("released a block that is not live");
}
