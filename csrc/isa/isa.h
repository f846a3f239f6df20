/* The DNA instruction set, version 1: what the scheduler emits, codegen
 * serializes and the Simulator (and the IP's emulated device) executes.
 * docs/isa.md is the prose form of this header.
 *
 * Machine model
 *   DRAM  device memory, one byte-addressed space. [0, params_bytes) holds
 *         the constant image codegen lays out (weights and biases, per
 *         layer and output-channel block); activations live above it at
 *         offsets the scheduler allocates by liveness.
 *   ACT   on-chip activation buffer, bytes (int8/uint8 tiles).
 *   WGT   on-chip weight buffer, bytes (weight blocks: int8 weights then
 *         float32 biases).
 *   ACC   on-chip int32 accumulators; written and read only inside a CONV
 *         instruction, so no instruction addresses it, but a CONV's output
 *         tile must fit in it (out_h * out_w * oc_n * 4 bytes).
 *
 *   Three queues run concurrently, each in program order:
 *     LOAD     DMA DRAM -> ACT or WGT            (DNA_LOAD)
 *     COMPUTE  MAC array and vector unit          (DNA_CONV, DNA_VEC, DNA_NOP)
 *     STORE    DMA ACT -> DRAM                    (DNA_STORE)
 *   They synchronise through dependency tokens, as in VTA: four token
 *   FIFOs (load->compute, compute->load, compute->store, store->compute).
 *   An instruction with DNA_DEP_POP_PREV waits for and takes a token from
 *   the queue before it (LOAD has none, COMPUTE's is LOAD, STORE's is
 *   COMPUTE); DNA_DEP_POP_NEXT from the queue after it; when done,
 *   DNA_DEP_PUSH_PREV / DNA_DEP_PUSH_NEXT give one to the queue before /
 *   after it. A program whose tokens do not balance, or that makes a
 *   queue wait for a token that never comes, is malformed.
 *
 * Every activation tile in ACT is a dense box [h][w][c] of one-byte
 * elements (NHWC without the batch). Tensors the DNA computes on (CONV,
 * VEC) have rank <= 4; tensors it only moves (reshape, flatten, transpose,
 * slice: LOAD/STORE boxes whose DRAM and SRAM strides differ) may have
 * any rank and batch. DRAM holds each one C-contiguous in its IR shape
 * (the NHWC layout for spatial tensors).
 *
 * All integer fields are little-endian in the serialized program. */
#ifndef MERA_ISA_ISA_H
#define MERA_ISA_ISA_H

#include <stdint.h>

#include "ir/ir.h"
#include "util/status.h"

#define DNA_ISA_VERSION 2 /* 2: CONV and VEC carry the requantization unit's rounding */
#define DNA_MAX_SRC 8 /* source tiles of one vector instruction (concat inputs) */

typedef enum {
    DNA_LOAD = 1,  /* LOAD queue */
    DNA_STORE = 2, /* STORE queue */
    DNA_CONV = 3,  /* COMPUTE queue: MAC array (+ the vector unit's requantization stage) */
    DNA_VEC = 4,   /* COMPUTE queue: vector unit */
    DNA_NOP = 5,   /* COMPUTE queue: no operation, only its dependency tokens. LOAD and
                    * STORE have no token FIFO between them, so a load that must wait
                    * for a store (it reads DRAM the store writes, or overwrites ACT
                    * bytes the store still reads), or a store that must wait for a
                    * load, waits through a NOP: the NOP pops the one and pushes the
                    * other. Takes one cycle. */
} dna_opcode;

typedef enum { DNA_Q_LOAD = 0, DNA_Q_COMPUTE = 1, DNA_Q_STORE = 2, DNA_NUM_QUEUES = 3 } dna_queue;

enum {
    DNA_DEP_POP_PREV = 1,
    DNA_DEP_POP_NEXT = 2,
    DNA_DEP_PUSH_PREV = 4,
    DNA_DEP_PUSH_NEXT = 8,
};

typedef enum { DNA_MEM_ACT = 0, DNA_MEM_WGT = 1 } dna_mem;

/* DMA: copy a box of rows x cols runs of run_bytes contiguous bytes.
 *   DRAM byte of (r, c, b): dram + r * dram_row_stride + c * dram_col_stride + b
 *   SRAM byte of (r, c, b): sram + r * sram_row_stride + c * sram_col_stride + b
 * LOAD only: rows r < pad_top or r >= rows - pad_bottom, and columns
 * c < pad_left or c >= cols - pad_right, are not read from DRAM; their
 * bytes are set to pad_value (the input zero point, for convolution
 * padding). dram is the address the box's (0, 0) would have, which may lie
 * outside the tensor when pad_top or pad_left are non-zero; only bytes of
 * unpadded rows and columns are ever read. */
typedef struct {
    uint8_t mem;  /* LOAD: destination buffer (dna_mem); STORE: always ACT */
    uint8_t pad_value;
    uint16_t reserved;
    int32_t rows, cols, run_bytes;
    int32_t pad_top, pad_bottom, pad_left, pad_right;
    int64_t dram;
    int64_t dram_row_stride, dram_col_stride;
    uint32_t sram;
    uint32_t sram_row_stride, sram_col_stride;
} dna_dma;

/* CONV: one output tile of a conv2d (or dense) layer.
 *   input   ACT [in_h][in_w][in_c] at in_addr: the input window of the
 *           tile, padding already materialised by the LOAD (pad_value =
 *           input zero point). in_c is the channels of the groups the
 *           tile's output channels belong to.
 *   weights WGT at wgt_addr: the block of output channels [oc0, oc0+oc_n)
 *           in the DNA weight format: int8 [oc_n][kh][kw][in_c/groups'] ,
 *           then, if the layer has a bias, float32 [oc_n].
 *   output  ACT [out_h][out_w][oc_n] at out_addr, requantized (the
 *           contract of docs/numerics.md), after the layer's fused relu.
 * The layer's geometry (kernel, strides, dilation, groups) and qparams
 * come from its graph node. For dense, in is [1][rows][K] and out is
 * [1][rows][oc_n]. depthwise_saturate is the layer's decision (made on
 * the whole layer) whether depthwise pair sums saturate to int16 as
 * fbgemm's depthwise kernel does; a tile cannot decide it from its own
 * padding-free geometry. rounding is the requantization unit's rounding
 * mode (mera_rounding, ir.h): the graph's, which the program must carry in
 * every CONV and VEC (checked against the graph when it is loaded). Under
 * today's two modes a CONV requantizes its accumulator the same way
 * (rne(y) + z); the field is there so that a mode that changes it (e.g. a
 * fixed-point multiplier) needs no new instruction. */
typedef struct {
    uint32_t in_addr, wgt_addr, out_addr;
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w;
    int32_t oc0, oc_n;
    int32_t depthwise_saturate; /* 0 or 1 */
    int32_t rounding;           /* mera_rounding */
    int64_t wgt_dram;           /* DRAM address the weight block was loaded from (for the report/check) */
} dna_conv;

/* A tile operand of a vector instruction: ACT address and its extent in
 * each dimension of the layer's tensor (rank of the tensor, <= 4; unused
 * trailing entries are 1). */
typedef struct {
    uint32_t addr;
    int32_t ext[4];
} dna_tile;

/* VEC: the layer's op (add, mul, requantize, the activations, pooling,
 * mean, concat, upsample) over source tiles in ACT, producing one
 * destination tile in ACT. The scheduler cuts a layer only where
 * mera_kernel_split_rule (kernels/split.h) says the kernel run on the
 * tile gives the same bytes as on the whole tensor; the instruction means
 * exactly "the layer's contract kernel on these tiles". origin is the
 * destination tile's position in the layer's output tensor. rounding is the
 * requantization unit's rounding mode, as in CONV: it decides how the vector
 * unit turns float results into integers (quantize, pools, mean, the
 * elementwise ops through float). */
typedef struct {
    int32_t n_src;
    int32_t rounding; /* mera_rounding */
    dna_tile src[DNA_MAX_SRC];
    dna_tile dst;
    int32_t origin[4];
} dna_vec;

typedef struct {
    uint8_t opcode; /* dna_opcode */
    uint8_t deps;   /* DNA_DEP_* */
    uint16_t reserved;
    int32_t layer; /* index into dna_program.layers */
    union {
        dna_dma dma;
        dna_conv conv;
        dna_vec vec;
    } u;
} dna_insn;

/* A layer: one graph node executed on the DNA. */
typedef struct {
    int32_t node;     /* graph node index */
    int32_t reserved;
    int64_t macs;     /* multiply-accumulates of the whole layer (0 for vector layers) */
} dna_layer;

/* The program runs as segments in order: a DNA segment is a range of
 * instructions; a HOST segment is one graph node the host CPU runs with
 * the InterpreterHw kernels on DRAM-resident tensors. */
typedef enum { DNA_SEG_DNA = 1, DNA_SEG_HOST = 2 } dna_seg_kind;

typedef struct {
    int32_t kind;
    int32_t node;          /* HOST: graph node index */
    int32_t first, count;  /* DNA: instruction range */
    int64_t host_in_bytes; /* DNA: bytes the host sends before the segment (inputs produced by the host) */
    int64_t host_out_bytes;/* DNA: bytes the host reads back after it */
} dna_segment;

/* value_dram[v]: the DRAM offset of graph value v (graph inputs and
 * outputs, and every node output), or -1 for PARAM and CONST values: DNA
 * layers read their weights from the constant image, host nodes read
 * params from the graph's param data as the interpreters do. */
typedef struct {
    uint32_t version;  /* DNA_ISA_VERSION */
    char platform[32]; /* platform name the program was scheduled for */
    int32_t n_layers;
    dna_layer *layers;
    int32_t n_insns;
    dna_insn *insns;
    int32_t n_segments;
    dna_segment *segments;
    int32_t n_values;
    int64_t *value_dram;   /* per graph value: DRAM offset or -1 */
    int64_t params_bytes;  /* size of the constant image */
    uint8_t *params_image; /* its bytes */
    int64_t dram_bytes;    /* total DRAM the program uses (constant image + activations) */
    uint32_t act_bytes, wgt_bytes; /* on-chip buffer sizes the program assumes */
    uint32_t acc_bytes;
} dna_program;

void dna_program_free(dna_program *p);

/* The one rule set of a well-formed program (isa/validate.c; docs/isa.md,
 * "Validation"): table counts, every field's range, addresses within the
 * buffers and DRAM (a LOAD reads the constant image or the activations, a
 * STORE writes the activations), a box or tile never larger than its
 * buffer, tokens only towards queues that exist, DNA segments covering
 * the instructions in order, layers and HOST segments within n_nodes and
 * the value table of n_values entries (each count checked when >= 0).
 * MERA_ERR_FORMAT naming the instruction, table entry and field.
 * dna_program_validate_graph takes the counts from g and names each
 * instruction's node. The deserializer runs it on what it reads, the DNA
 * machine on what it loads; the machine then checks what needs the graph
 * and the platform (sim/machine.c). */
mera_status dna_program_validate(const dna_program *p, int n_nodes, int n_values, mera_error *err);
mera_status dna_program_validate_graph(const dna_program *p, const mera_graph *g, mera_error *err);

/* Does a run of p read the graph's own data of value v (a PARAM or CONST)?
 * Only when v has no DRAM address and a HOST segment's node takes it as
 * an input or it is a graph output; DNA layers read the constant image.
 * The deploy writer stores a PARAM's data only when this holds, and the
 * DNA machine requires it only then. p must have been validated against g. */
int dna_program_reads_graph_data(const dna_program *p, const mera_graph *g, int v);

/* Serialize: "MERADNA\n", version, the tables above, an FNV-1a checksum.
 * Deserialize checks magic, version, sizes and checksum, then runs
 * dna_program_validate (n_nodes/n_values < 0: unknown), failing with
 * MERA_ERR_FORMAT naming the field. */
mera_status dna_program_serialize(const dna_program *p, uint8_t **out, size_t *out_len, mera_error *err);
dna_program *dna_program_deserialize(const uint8_t *buf, size_t len, int n_nodes, int n_values, mera_error *err);
/* The same, but params_image points into buf (no copy of the constant
 * image): buf must outlive the program, and the caller sets params_image
 * to NULL before dna_program_free. The program's own checksum is not
 * verified (every other check is): the caller has verified a checksum
 * covering buf, and the constant image's bytes are never read here. For
 * the deploy runtime, whose deploy.params is mapped read-only and
 * checksummed as a whole. */
dna_program *dna_program_deserialize_borrowed(const uint8_t *buf, size_t len, int n_nodes, int n_values,
                                              mera_error *err);

/* The program as text (isa/disasm.c; docs/isa.md, "Disassembly"): a
 * header, the layer and value tables, then each segment with one line per
 * instruction (index, opcode, queue, layer, tokens, then the opcode's
 * addresses, boxes, strides and tile geometry). g, when not NULL, gives
 * node and value names and ops. Deterministic, one fixed field order, any
 * program (malformed ones too). *text is malloc'd and NUL-terminated; the
 * caller frees it. */
mera_status dna_program_disasm(const dna_program *p, const mera_graph *g, char **text, mera_error *err);

/* The queue an opcode runs on; -1 for an unknown opcode. */
int dna_opcode_queue(int opcode);
const char *dna_opcode_name(int opcode);

#endif
