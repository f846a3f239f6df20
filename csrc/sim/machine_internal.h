/* The loaded DNA machine's representation, shared by machine.c, plan.c, run.c and
 * trace.c. Everything here is immutable after dna_machine_new. */
#ifndef MERA_SIM_MACHINE_INTERNAL_H
#define MERA_SIM_MACHINE_INTERNAL_H

#include "kernels/kernels.h"
#include "sim/sim.h"
#include "sim/timing.h"

/* One prepared kernel per distinct CONV tile geometry. */
typedef struct {
    int layer;
    dna_conv key;        /* the geometry fields are the key (addresses ignored) */
    mera_node node;      /* synthetic: the layer's node with the tile's attrs */
    mera_attr *attrs;
    mera_type in_t, w_t, b_t, out_t;
    int has_bias;
    int64_t w_bytes;     /* int8 weight bytes of the block (the bias follows) */
    float *bias;         /* aligned copy of the block's bias for prepare */
    mera_kernel k;
    void *state;
    int threads;         /* the kernel's thread count for this tile (prep_threads) */
    int run_as_tile;     /* an instruction runs this tile (not only layers run whole: plan_layers) */
} conv_prep;

/* One prepared kernel per distinct VEC tile geometry. */
typedef struct {
    int layer;
    const mera_node *node;
    int n_src;
    int32_t ext[DNA_MAX_SRC + 1][4]; /* key: source extents, then the destination's */
    mera_rounding rounding;          /* key: the instruction's rounding */
    mera_type in_t[DNA_MAX_SRC], out_t;
    mera_kernel k;
    void *state;
    int threads;                     /* the kernel's thread count for this tile (prep_threads) */
} vec_prep;

/* A layer a run executes whole (plan_layers): one kernel call on its
 * inputs and output in DRAM in place of its tiles' LOADs, CONVs or VECs
 * and STOREs, at one of the layer's instructions. A conv2d (prep, its own
 * packed weights) or an elementwise VEC layer (vprep, prepared on the
 * node's whole types). */
typedef struct {
    int layer;
    int at;              /* the instruction that runs it; the layer's others move no bytes */
    conv_prep *prep;     /* a conv2d: the whole layer's kernel, else NULL */
    vec_prep *vprep;     /* a VEC layer: the whole layer's kernel, else NULL */
    int n_x;             /* its inputs in DRAM: 1 for a conv2d, the node's inputs for a VEC layer */
    int64_t x[DNA_MAX_SRC], x_bytes[DNA_MAX_SRC];
    int64_t y, y_bytes;  /* the output in DRAM */
    double macs;         /* a conv2d's multiply-adds */
} layer_run;

struct dna_machine {
    const mera_graph *g;
    const dna_program *prog;
    const mera_platform *p;
    dna_machine_options opt;
    long page_size;          /* release_const_pages: the VM page size */
    int n_nodes, n_values, n_graph_inputs;
    const void **value_data; /* CONST and PARAM data, else NULL */
    int *input_slot;         /* per value: index among INPUT values, else -1 */
    dna_conv_geom *geos;     /* per layer (conv2d/dense only) */
    conv_prep **convs;
    int n_convs;
    vec_prep **vecs;
    int n_vecs;
    int *layer_convs;        /* per layer: head of its chain of preps (load-time only) */
    void **insn_prep;        /* per insn: its conv_prep / vec_prep, else NULL */
    int *order;              /* DNA segments' instructions in execution order */
    int wgt_unread;          /* every CONV kernel was prepared (holds its packed weights and bias; a run has no WGT buffer):
                              * LOADs into WGT only record what WGT holds, its bytes are never read */
    mera_kernel *host_k;     /* per node: the host kernel (HOST segments) */
    void **host_state;
    unsigned char *host_ready;
    dna_timing timing;
    dna_insn_times times;
    int64_t written[3][2];   /* per buffer (ACT, WGT, activation DRAM from dna_act_base): the hull
                              * [lo, hi) of every byte a run may write (lo >= hi: none) */
    int64_t zeroed[3][2];    /* per buffer, the same: the hull of the bytes a reused run zeroes, those a run may
                              * read before it writes them (plan_zeroed), within written */
    dna_run *spare;          /* a finished run of dna_machine_run kept for the next (atomic
                              * exchange: the one field a run changes; NULL when none or in use) */
    size_t scratch_bytes;    /* the largest scratch of a prepared CONV/VEC kernel (tiles run one at a time) */
    int profile;             /* MERA_SIM_PROFILE at load: 0 off, 1 wall time, 2 ("cpu") thread CPU time */
    /* The wave plan (plan_waves): each DNA segment's instructions grouped
     * into waves of instructions whose bytes are independent (no two touch
     * the same byte when one of them writes it), every instruction in a
     * later wave than each one it depends on. */
    int use_waves;           /* 0: every segment runs in execution order (one thread, or MERA_SIM_WAVES=0) */
    int *wave_items;         /* the DNA segments' instructions, wave by wave */
    int *wave_start;         /* wave w is wave_items[wave_start[w], wave_start[w + 1]) */
    unsigned char *wave_lanes; /* per wave: 1 its instructions run on the worker lanes, one thread each;
                                * 0 one after another on the caller, each with its own thread count */
    unsigned char *insn_threads; /* per instruction, in a wave not on the lanes: its thread count (1, or its own
                                  * when splitting it pays for the pool job) */
    int *seg_wave;           /* per segment s: its waves are [seg_wave[s], seg_wave[s + 1]) */
    int lanes;               /* lanes a run has scratch for (opt.threads with waves, else 1) */
    size_t scratch_stride;   /* scratch_bytes rounded up to a cache line: one per lane */
    /* Forwarding (plan_forward; all NULL with MERA_SIM_FORWARD=0): per
     * instruction, the DRAM address a CONV's input (source 0) or a VEC's
     * source q reads instead of ACT (fwd_src[i * DNA_MAX_SRC + q], -1: ACT),
     * the DRAM address a CONV/VEC writes its tile to instead of ACT
     * (fwd_dst[i], -1: ACT), and whether a LOAD or STORE moves no bytes
     * (fwd_dead[i]). */
    int64_t *fwd_src;
    int64_t *fwd_dst;
    unsigned char *fwd_dead;
    dna_forward_stats fwd_stats;
    /* Layers run whole (plan_layers; NULL with MERA_SIM_LAYERS=0 or
     * pack_at_run): per instruction the index of its layer's run, else -1. */
    layer_run *lruns;
    int n_lruns;
    int *insn_lrun;
};

/* ---- shared between machine.c (load), plan.c (the plans made at load)
 * and run.c (runs) ---------------------------------------------------- */

/* Room for one more entry in an array of n pointers of capacity *cap
 * (declare void *tmp_grow in the scope). */
#define GROW(arr, cap, n)                                                       \
    ((n) < (cap) ? 0                                                            \
                 : ((tmp_grow = realloc((arr), (size_t)((cap) ? (cap) * 2 : 16) * sizeof *(arr))) \
                        ? ((arr) = tmp_grow, (cap) = (cap) ? (cap) * 2 : 16, 0)  \
                        : 1))

/* Alignment of a run's buffers and of each lane's kernel scratch. */
#define BUF_ALIGN 64

/* machine.c */
/* Fails with "insn 12 (CONV, node 'conv1'): <message>". */
mera_status sim_insn_fail(const dna_machine *m, mera_error *err, mera_status code, int i, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
/* The kernel arguments of a prepared tile (addresses left to the caller). */
void sim_conv_args(const conv_prep *c, mera_kernel_args *a);
mera_status sim_conv_prep_new(dna_machine *m, int i, int layer, const dna_conv *k, int whole, conv_prep **out,
                              mera_error *err);
mera_status sim_conv_prep_pack(dna_machine *m, conv_prep *c, int i, const int8_t *weights, const void *bias,
                               mera_error *err);
void sim_conv_prep_free(conv_prep *c);
void sim_release_image(const dna_machine *m, int64_t lo, int64_t hi);
void sim_vec_args(const vec_prep *v, mera_kernel_args *a);
/* The kernel of VEC tile k of layer `layer` (the tile's types: the node's
 * types with k's extents), prepared; errors name instruction i. */
mera_status sim_vec_prep_new(dna_machine *m, int i, int layer, const dna_vec *k, vec_prep **out, mera_error *err);
void sim_vec_prep_free(vec_prep *v);

/* plan.c, called by dna_machine_new_opts in this order */
void sim_plan_scratch(dna_machine *m);
void sim_plan_threads(dna_machine *m);
void sim_plan_written(dna_machine *m);
mera_status sim_plan_forward(dna_machine *m, mera_error *err);
mera_status sim_plan_waves(dna_machine *m, mera_error *err);
void sim_plan_zeroed(dna_machine *m);
/* layers.c, after the execution order and before packing the tiles */
mera_status sim_plan_layers(dna_machine *m, mera_error *err);
/* The byte ranges instruction i reads and writes (plan.c); raw: as the
 * instruction says, not as forwarding or a layer run whole changed it. */
typedef struct {
    int64_t lo, hi;
    int space; /* SP_ACT, SP_WGT (its bytes and its tags), SP_DRAM */
    int write;
} mem_use;
enum { SP_ACT, SP_WGT, SP_DRAM };
#define MAX_USES (DNA_MAX_SRC + 3)
int sim_insn_uses(const dna_machine *m, int i, int raw, mem_use *u);
/* Bytes of a DMA box that is one dense block on both sides, else 0. */
int64_t sim_dma_block_bytes(const dna_dma *d);

#endif
