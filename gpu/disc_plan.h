// gpu/disc_plan.h: the discriminator heads' device buffers (gpu/disc_gpu.cuh DiscGpuAct) as plain C, so that the
// allocator and the memory plan (gpu/distill_plan.h) read one definition and the CPU tests can check the plan at Wan
// shapes. disc_gpu_act_init carves the multiscale head's buffers from the lists below and checks its arena against
// disc_act_bytes for either head; the plan adds disc_act_bytes for the real and the fake side.
//
// Multiscale head (channels-last [S, C] per sample, S = T·H·W voxels): what the forward keeps for the backward is
// only the per-sample vectors (the branches' pooled means, the MLP's pre- and post-activation, the logits); the
// backward recomputes each head's maps from the teacher's features (one sample, one head at a time), so the big
// maps live in one scratch set that the real and the fake side share (they run one after the other on one stream).
// Lists: X(type, field, elements), type f32 (fp32) or fx (floatX: GEMM operands, 2 bytes in the bf16 build);
// every buffer rounded up to 256 bytes (act_round).
#pragma once
#include "../cpu/disc_cpu.h" // DiscConfig, disc_shapes, disc_groups
#include "act_plan.h"        // act_round

#define DISC_COL_ROWS       8192 // rows (output voxels) of one im2col slice of the 3x3x3 convolutions
#define DISC_ROWS_PER_CHUNK 256  // rows per partial sum of the per-channel reductions (fixed: deterministic)

typedef struct {
    size_t B, nh, F, hid; // samples, heads, MLP input (n_s·C) and hidden width
    size_t C, nsC, S, S2; // channels, all branches' channels, voxels, voxels after the smallest pooling (s = 2)
    size_t R, nch;        // im2col rows per slice, row chunks of a reduction over S
} DiscDims;

static DiscDims disc_dims(const DiscConfig* dc, int B, int T, int Hl, int Wl) {
    DiscDims z;
    memset(&z, 0, sizeof(z));
    z.B = (size_t)B;
    z.nh = (size_t)dc->n_heads;
    z.F = (size_t)disc_feat_dim(dc);
    z.hid = (size_t)dc->hidden;
    z.C = (size_t)dc->in_ch;
    z.nsC = (size_t)dc->n_scales * z.C;
    z.S = (size_t)T * Hl * Wl;
    z.S2 = dc->n_scales > 1 ? (size_t)(T / 2) * (Hl / 2) * (Wl / 2) : 0;
    z.R = z.S < DISC_COL_ROWS ? z.S : DISC_COL_ROWS;
    z.nch = (z.S + DISC_ROWS_PER_CHUNK - 1) / DISC_ROWS_PER_CHUNK;
    return z;
}

// kept from the forward for the backward, per act: [B, heads, ·]
#define DISC_MS_KEEP(X, z)                                                                                             \
    X(f32, pool, z.B* z.nh* z.F) /* the branches' global means, concatenated */                                        \
    X(f32, h1, z.B* z.nh* z.hid) /* MLP pre-activation */                                                              \
    X(f32, ha, z.B* z.nh* z.hid) /* LeakyReLU(h1), before dropout */                                                   \
    X(f32, logit_d, z.B* z.nh)
// one sample and one head at a time, shared by the real and the fake side
#define DISC_MS_SCRATCH(X, z)                                                                                          \
    X(fx, x0, z.S* z.C)         /* the unpatchified feature [S, C]; at the end of the backward its gradient */         \
    X(fx, z1, z.S* z.nsC)       /* every branch's 1x1x1 output (one GEMM) [S, n_s·C], before the bias */              \
    X(fx, dz1, z.S* z.nsC)      /* its gradient */                                                                     \
    X(fx, a1, z.S* z.C)         /* one branch's GroupNorm + LeakyReLU of z1 */                                         \
    X(fx, p, z.S2* z.C)         /* its AvgPool3d (s > 1) */                                                            \
    X(fx, z2, z.S* z.C)         /* the 3x3x3 output */                                                                 \
    X(fx, dz2, z.S* z.C)        /* its gradient */                                                                     \
    X(fx, da, z.S* z.C)         /* d a1 */                                                                             \
    X(fx, dp, z.S2* z.C)        /* d p */                                                                              \
    X(fx, col, z.R * 27 * z.C)  /* an im2col slice [R, 27·C] */                                                       \
    X(fx, w1, z.nsC* z.C)       /* the 1x1x1 weights of all branches, stacked [n_s·C, C] */                           \
    X(fx, w3k, 27 * z.C * z.C)  /* one 3x3x3 weight, tap-major [C, 27·C] */                                           \
    X(fx, w3t, 27 * z.C * z.C)  /* the same, transposed and flipped for d input [C, 27·C] */                          \
    X(f32, dw1, z.nsC* z.C)     /* d w1 */                                                                             \
    X(f32, dw3, 27 * z.C * z.C) /* d w3k */                                                                            \
    X(f32, part1, z.nch* z.C)   /* per-channel partial sums */                                                         \
    X(f32, part2, z.nch* z.C)                                                                                          \
    X(f32, sum1, z.C)                                                                                                  \
    X(f32, sum2, z.C)                                          /* their totals */                                      \
        X(f32, mean, z.C) X(f32, rstd, z.C)                    /* the 1x1x1's GroupNorm statistics (<= C groups) */    \
        X(f32, mean3, z.C) X(f32, rstd3, z.C)                  /* the 3x3x3's */                                       \
        X(f32, gs1, z.C) X(f32, gs2, z.C)                      /* per-group gradient sums */                           \
        X(f32, dpool, z.F) X(f32, dh1, z.hid) X(f32, dc3, z.C) /* d pool, d h1, d pool / S3 of one branch */

static size_t disc_elem_bytes_(int fx, size_t xb) { return fx ? xb : 4; }
#define DISC_F32_                   0
#define DISC_FX_                    1
#define DISC_COUNT_(type, field, n) bytes += act_round((n)*disc_elem_bytes_(DISC_TYPE_##type, xb));
#define DISC_TYPE_f32               DISC_F32_
#define DISC_TYPE_fx                DISC_FX_

static size_t disc_ms_keep_bytes(DiscDims z, size_t xb) {
    size_t bytes = 0;
    DISC_MS_KEEP(DISC_COUNT_, z) return bytes;
}
static size_t disc_ms_scratch_bytes(DiscDims z, size_t xb) {
    size_t bytes = 0;
    DISC_MS_SCRATCH(DISC_COUNT_, z) return bytes;
}

// the strided head's buffers (gpu/disc_gpu.cuh disc_gpu_act_carve_: fp32, every buffer rounded to 256 bytes): the
// unpatchified feature, each conv's output, GroupNorm xhat and output and LeakyReLU output, the group statistics,
// the pool and the MLP for B samples; the backward's three map-sized scratch buffers, the MLP's, one sample's
// feature gradient [L, D]
static size_t disc_strided_bytes(const DiscConfig* dc, int B, int T, int Hl, int Wl, size_t LD) {
    Shape4 x0s, cin[DISC_MAX_CONVS], cout[DISC_MAX_CONVS];
    disc_shapes(dc, T, Hl, Wl, &x0s, cin, cout);
    size_t big = shape_numel(x0s), bytes = 0;
    for (int k = 0; k < DISC_CONVS; k++)
        if (shape_numel(cout[k]) > big) big = shape_numel(cout[k]);
    for (int h = 0; h < dc->n_heads; h++) {
        bytes += act_round(4 * B * shape_numel(x0s));
        for (int k = 0; k < DISC_CONVS; k++)
            bytes +=
                4 * act_round(4 * B * shape_numel(cout[k])) + 2 * act_round(4 * (size_t)B * disc_groups(dc->width[k]));
        bytes += act_round(4 * (size_t)B * dc->width[DISC_CONVS - 1]) + 2 * act_round(4 * (size_t)B * dc->hidden);
    }
    bytes += act_round(4 * (size_t)B * DISC_MAX_HEADS) + 3 * act_round(4 * big);
    bytes += act_round(4 * (size_t)dc->hidden) + act_round(4 * (size_t)dc->width[DISC_CONVS - 1]) + act_round(4 * LD);
    return bytes;
}

// the bytes of one DiscGpuAct: B samples of a T x Hl x Wl latent grid whose features have LD = L·D values per
// sample; xb = sizeof(floatX); borrows: the multiscale scratch is another act's (the real side borrows the fake's)
static size_t disc_act_bytes(const DiscConfig* dc, int B, int T, int Hl, int Wl, size_t LD, size_t xb, int borrows) {
    if (dc->n_heads <= 0) return 0;
    if (dc->kind == DISC_STRIDED) return disc_strided_bytes(dc, B, T, Hl, Wl, LD);
    DiscDims z = disc_dims(dc, B, T, Hl, Wl);
    return disc_ms_keep_bytes(z, xb) + (borrows ? 0 : disc_ms_scratch_bytes(z, xb));
}
