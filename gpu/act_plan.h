// gpu/act_plan.h: the GPU DiT's activation buffers as lists, in plain C, so that the allocator and the memory plan
// read one definition. gpu/wan_gpu.cuh and gpu/tmd_gpu.cuh carve their arenas from these lists (one buffer per
// entry, typed float or floatX); gpu/distill_plan.h sums the same lists into bytes (act_*_bytes below) and the CPU
// tests check the plan against them, so the plan cannot describe buffers the code does not allocate.
//
// An entry is X(type, field, elements, plan name): type f32 (fp32) or fx (floatX: 2 bytes in the bf16 build, 4 in
// the fp32 build); elements 0 means the buffer is absent on this path (its pointer stays NULL). Every buffer is
// rounded up to 256 bytes (cuBLASLt and the flash kernels' 16-byte loads want aligned rows).
//
// Activation recompute (per-block checkpointing): a training plan with recompute keeps only the residual stream xs
// (every block's input, fp32) and ONE block's activations, which every block's forward overwrites; the backward
// re-runs block l's forward from xs[l] into that one set just before block l's backward. Without recompute a
// training plan keeps one set per block. The TMD flow head's evaluations (one per rollout step) then carve no block
// sets of their own: they use the backbone's one set the same way.
//
// Residual levels: a training plan keeps xs[0..blocks] (the inputs recompute rebuilds from; `blocks` = the blocks it
// runs, fewer than the model's for the TMD backbone). A forward-only plan keeps two levels, used alternately (level l
// in slot l mod 2), plus one slot for each level a reader needs after the forward (the discriminator's features).
//
// Borrowed work sets: the one block set of a forward-only or recomputing plan holds nothing between calls (each block's
// forward overwrites it; the recomputing backward rebuilds it), and the backward scratch holds nothing between two
// backwards. So the plans of one step that run one after another on one stream share them: a plan made with a lender
// (gpu/wan_gpu.cuh WanGpuActOpts.share) carves only its residual levels, embeddings and output head.
#pragma once
#include <stddef.h>
#include "../wan.h"

static size_t act_round(size_t bytes) { return (bytes + 255) & ~(size_t)255; }
// kernels/reduce.cuh: the column sums cut each group's rows into chunks of REDUCE_ROWS_PER_CHUNK (32) rows
static size_t act_chunks(size_t rows) { return (rows + 31) / 32; }
static size_t act_max(size_t a, size_t b) { return a > b ? a : b; }

// the sizes the lists read (z.N, z.ND, ...): B samples of L tokens; flash: the attention path (flash kernels keep
// no probabilities); Ff, Hh, gated: the TMD flow head (fusion FFN width, head blocks, gated fusion)
typedef struct {
    size_t B, L, D, F, H, Lc, N, ND, NcD, Pin, Pout, freq, text_dim, hd, layers, Ff, Hh;
    size_t slots; // residual levels kept (act_stream_slots)
    int flash, gated;
    int training; // the block sets are read by a backward: keep the FFN's pre-activation (1 unless a forward-only plan)
    size_t red, head_red; // the backward's reduction scratch (floats): the DiT's, one flow-head evaluation's
} ActDims;

static ActDims act_dims(const WanConfig* c, int B, int L, int flash, int fuse_ffn_dim, int head_blocks, int gated) {
    ActDims z;
    z.B = (size_t)B;
    z.L = (size_t)L;
    z.D = (size_t)c->dim;
    z.F = (size_t)c->ffn_dim;
    z.H = (size_t)c->num_heads;
    z.Lc = (size_t)c->text_len;
    z.N = z.B * z.L;
    z.ND = z.N * z.D;
    z.NcD = z.B * z.Lc * z.D;
    z.Pin = (size_t)c->in_dim * wan_patch_numel(c);
    z.Pout = (size_t)c->out_dim * wan_patch_numel(c);
    z.freq = (size_t)c->freq_dim;
    z.text_dim = (size_t)c->text_dim;
    z.hd = (size_t)wan_head_dim(c);
    z.layers = (size_t)c->num_layers;
    z.Ff = (size_t)fuse_ffn_dim;
    z.Hh = (size_t)head_blocks;
    z.flash = flash;
    z.gated = gated;
    z.slots = z.layers + 1;
    z.training = 1;
    // the largest partial-sum buffer of any reduction in a block, the head or the embeddings (kernels'
    // *_scratch_floats): LN (2 column sets per chunk, per sample), RMSNorm, gates, Linear biases; gpu/wan_gpu.cuh
    // checks it covers them
    size_t r = z.B * act_chunks(z.L) * 2 * z.D;
    r = act_max(r, act_chunks(z.N) * z.D);
    r = act_max(r, act_chunks(z.B * z.Lc) * z.D);
    r = act_max(r, act_chunks(z.N) * act_max(act_max(z.F, z.D), z.Pout));
    r = act_max(r, act_chunks(z.B) * 6 * z.D);
    z.red = r;
    // the flow head's own reductions: fusion LN and gate, its Linears (up to max(Ff, 2D) columns), time projection
    size_t h = z.B * act_chunks(z.L) * 2 * z.D;
    h = act_max(h, act_chunks(z.N) * act_max(z.Ff, 2 * z.D));
    h = act_max(h, act_chunks(z.B) * 6 * z.D);
    z.head_red = h + 1024;
    return z;
}

// one block's activations (gpu/wan_gpu.cuh WanGpuBlockAct), k: the struct pointer
#define WAN_BLOCK_ACT_BUFFERS(X, k, z)                                                                                 \
    X(f32, k->mod, z.B * 6 * z.D, "block.mod")                                                                         \
    X(f32, k->ln1_mean, z.N, "block.ln_stats")                                                                         \
    X(f32, k->ln1_rstd, z.N, "block.ln_stats") X(fx, k->h1, z.ND, "block.h1") X(fx, k->q_pre, z.ND, "block.qkv")       \
        X(fx, k->k_pre, z.ND, "block.qkv") X(fx, k->v, z.ND, "block.qkv") X(f32, k->q_rstd, z.N, "block.rms_stats")    \
            X(f32, k->k_rstd, z.N, "block.rms_stats") X(fx, k->q, z.ND, "block.q_k_roped") X(                          \
                fx, k->k, z.ND, "block.q_k_roped") X(f32, k->lse, z.B* z.H* z.L, "block.attn_lse")                     \
                X(f32, k->att, z.flash ? 0 : z.B* z.H* z.L* z.L,                                                       \
                  "block.attn_probs (naive)") X(fx, k->ao, z.ND, "block.attn_out") X(fx, k->sa, z.ND, "block.o_proj")  \
                    X(f32, k->x1, z.ND, "block.x1_x2") X(f32, k->ln3_mean, z.N, "block.ln_stats")                      \
                        X(f32, k->ln3_rstd, z.N, "block.ln_stats") X(fx, k->y3, z.ND, "block.y3") X(                   \
                            fx, k->cq_pre, z.ND, "block.cross_q") X(f32, k->cq_rstd, z.N, "block.rms_stats")           \
                            X(fx, k->cq, z.ND, "block.cross_q") X(fx, k->ck_pre, z.NcD, "block.cross_kv") X(           \
                                f32, k->ck_rstd, z.B* z.Lc, "block.rms_stats") X(fx, k->ck, z.NcD, "block.cross_kv")   \
                                X(fx, k->cv, z.NcD, "block.cross_kv") X(f32, k->clse, z.B* z.H* z.L, "block.attn_lse") \
                                    X(f32, k->catt, z.flash ? 0 : z.B* z.H* z.L* z.Lc, "block.cross_probs (naive)")    \
                                        X(fx, k->cao, z.ND, "block.attn_out") X(fx, k->ca, z.ND, "block.o_proj")       \
                                            X(f32, k->x2, z.ND, "block.x1_x2")                                         \
                                                X(f32, k->ln2_mean, z.N, "block.ln_stats")                             \
                                                    X(f32, k->ln2_rstd, z.N, "block.ln_stats") X(fx, k->h2, z.ND,      \
                                                                                                 "block.h2")           \
                                                        X(fx, k->f1, z.training ? z.N* z.F : 0, "block.ffn_hidden")    \
                                                            X(fx, k->f1a, z.N* z.F, "block.ffn_hidden")                \
                                                                X(fx, k->f2, z.ND, "block.ffn_out")

// the output head's activations (WanGpuHeadAct)
#define WAN_HEAD_ACT_BUFFERS(X, h, z)                                                                                  \
    X(f32, h->mod, z.B * 2 * z.D, "head")                                                                              \
    X(f32, h->mean, z.N, "head") X(f32, h->rstd, z.N, "head") X(f32, h->hm, z.ND, "head")                              \
        X(f32, h->y, z.N* z.Pout, "head")

// the backward's scratch, shared by every layer of one model's pass (WanGpuScratch)
#define WAN_SCRATCH_BUFFERS(X, s, z)                                                                                   \
    X(f32, s->g, z.ND, "bwd.residual_grad")                                                                            \
    X(f32, s->dc, z.NcD, "bwd.context_grad") X(f32, s->de0, z.B * 6 * z.D, "bwd.small") X(                             \
        f32, s->de, z.B* z.D, "bwd.small") X(f32, s->dmod, z.B * 6 * z.D, "bwd.small") X(fx, s->t1, z.ND, "bwd.temps") \
        X(fx, s->t2, z.ND, "bwd.temps") X(fx, s->t3, z.ND, "bwd.temps") X(fx, s->tF, z.N* z.F, "bwd.ffn_temp")         \
            X(fx, s->dk, z.ND, "bwd.temps") X(fx, s->dv, z.ND, "bwd.temps") X(fx, s->dck, z.NcD, "bwd.text_temps")     \
                X(fx, s->dcv, z.NcD, "bwd.text_temps") X(fx, s->dtext, z.NcD, "bwd.text_temps")                        \
                    X(fx, s->dctx_x, z.B* z.Lc* z.text_dim, "bwd.text_temps")                                          \
                        X(f32, s->delta, z.flash ? z.B* z.H* z.L : 0, "bwd.attn_delta")                                \
                            X(f32, s->dS, z.flash ? 0 : z.B* z.H* z.L* act_max(z.L, z.Lc), "bwd.attn_dS (naive)")      \
                                X(f32, s->tg1, z.B* z.D, "bwd.small") X(f32, s->tg2, z.B* z.D, "bwd.small")            \
                                    X(f32, s->dhm, z.ND, "bwd.head") X(f32, s->dy, z.N* z.Pout, "bwd.head")            \
                                        X(f32, s->dpatch, z.N* z.Pin, "bwd.patch")                                     \
                                            X(f32, s->red, z.red, "bwd.reductions")

// a WanGpuAct's buffers before its block sets: RoPE table, patches, the residual stream xs [slots, N, D] (training:
// every block's input, what recompute keeps; forward only: two alternating levels and the kept ones), the velocity,
// the time and text embeddings
#define WAN_ACT_STREAM_BUFFERS(X, a, z)                                                                                \
    X(f32, a->rope, z.L* z.hd, "rope_table")                                                                           \
    X(f32, a->patches, z.N* z.Pin, "patches") X(f32, a->xs, z.slots* z.ND, "residual_stream xs")                       \
        X(f32, a->out, z.N* z.Pout, "velocity out") X(f32, a->time.sin, z.B* z.freq, "time")                           \
            X(f32, a->time.h1, z.B* z.D, "time") X(f32, a->time.a1, z.B* z.D, "time")                                  \
                X(f32, a->time.e, z.B* z.D, "time") X(f32, a->time.se, z.B* z.D, "time")                               \
                    X(f32, a->time.e0, z.B * 6 * z.D, "time") X(f32, a->text.ctx, z.B* z.Lc* z.text_dim, "text.ctx")   \
                        X(fx, a->text.ctx_x, z.B* z.Lc* z.text_dim, "text.ctx")                                        \
                            X(fx, a->text.h1, z.NcD, "text.hidden") X(fx, a->text.a1, z.NcD, "text.hidden")            \
                                X(fx, a->text.c, z.NcD, "text.c")

// one TMD flow-head evaluation's own buffers (gpu/tmd_gpu.cuh TmdGpuHeadAct) besides its block sets and output head:
// the two time MLPs, the fusion (gated or concat), the head's residual stream xs [H + 1, N, D], its output and its
// backward scratch (the blocks' backward scratch is the backbone's)
#define TMD_HEAD_EVAL_BUFFERS(X, a, z)                                                                                 \
    X(f32, a->h1_s, z.B* z.D, "head.time")                                                                             \
    X(f32, a->a1_s, z.B* z.D, "head.time") X(f32, a->e_s, z.B* z.D, "head.time")                                       \
        X(f32, a->h1_d, z.B* z.D, "head.time") X(f32, a->a1_d, z.B* z.D, "head.time")                                  \
            X(f32, a->e_d, z.B* z.D, "head.time") X(f32, a->e_h, z.B* z.D, "head.time")                                \
                X(f32, a->se_h, z.B* z.D, "head.time") X(f32, a->G, z.B* z.D, "head.time") X(                          \
                    f32, a->de_h, z.B* z.D, "head.time") X(f32, a->dse, z.B* z.D, "head.time") X(f32, a->da, z.B* z.D, \
                                                                                                 "head.time")          \
                    X(f32, a->dh, z.B* z.D, "head.time") X(f32, a->sin_s, z.B* z.freq, "head.time") X(                 \
                        f32, a->sin_d, z.B* z.freq, "head.time") X(f32, a->e0_h, z.B * 6 * z.D, "head.time")           \
                        X(f32, a->de0_h, z.B * 6 * z.D, "head.time") X(f32, a->patches, z.N* z.Pin, "head.patches") X( \
                            f32, a->p, z.ND, "head.fusion") X(f32, a->fmod, z.B * 3 * z.D, "head.fusion")              \
                            X(f32, a->dmodf, z.B * 3 * z.D, "head.fusion") X(f32, a->fmean, z.N, "head.fusion")        \
                                X(f32, a->frstd, z.N, "head.fusion") X(f32, a->fh, z.gated ? z.ND : 0, "head.fusion")  \
                                    X(f32, a->ff2, z.gated ? z.ND : 0,                                                 \
                                      "head.fusion") X(f32, a->ff1, z.gated ? z.N* z.Ff : 0, "head.fusion")            \
                                        X(f32, a->ff1a, z.gated ? z.N* z.Ff : 0,                                       \
                                          "head.fusion") X(f32, a->dfh, z.gated ? z.ND : 0, "head.bwd")                \
                                            X(f32, a->dff2, z.gated ? z.ND : 0, "head.bwd")                            \
                                                X(f32, a->dff, z.gated ? z.N* z.Ff : 0, "head.bwd")                    \
                                                    X(f32, a->cat, z.gated ? 0 : 2 * z.ND, "head.fusion")              \
                                                        X(f32, a->dcat, z.gated ? 0 : 2 * z.ND, "head.bwd")            \
                                                            X(f32, a->xs, (z.Hh + 1) * z.ND, "head.residual_stream")   \
                                                                X(f32, a->out, z.N* z.Pout, "head.out")                \
                                                                    X(f32, a->g, z.ND, "head.bwd")                     \
                                                                        X(f32, a->dp, z.ND, "head.bwd")                \
                                                                            X(f32, a->red, z.head_red, "head.bwd")

// bytes of each list for the precision's floatX size xbytes (2: bf16, 4: fp32)
#define ACT_BYTES_(type, field, n, name) bytes += act_round((size_t)(n) * (act_is_fx_##type ? xbytes : 4));
enum { act_is_fx_f32 = 0, act_is_fx_fx = 1 };
static size_t act_block_set_bytes(ActDims z, size_t xbytes) {
    size_t bytes = 0;
    WAN_BLOCK_ACT_BUFFERS(ACT_BYTES_, , z) return bytes;
}
static size_t act_head_bytes(ActDims z, size_t xbytes) {
    size_t bytes = 0;
    WAN_HEAD_ACT_BUFFERS(ACT_BYTES_, , z) return bytes;
}
static size_t act_scratch_bytes(ActDims z, size_t xbytes) {
    size_t bytes = 0;
    WAN_SCRATCH_BUFFERS(ACT_BYTES_, , z) return bytes;
}
static size_t act_stream_bytes(ActDims z, size_t xbytes) {
    size_t bytes = 0;
    WAN_ACT_STREAM_BUFFERS(ACT_BYTES_, , z) return bytes;
}
static size_t act_head_eval_own_bytes(ActDims z, size_t xbytes) {
    size_t bytes = 0;
    TMD_HEAD_EVAL_BUFFERS(ACT_BYTES_, , z) return bytes;
}

// The attention's workspace (cuDNN's fused SDPA; the own flash and naive kernels need none) for B samples of L tokens
// when the build has no cuDNN to ask (a program with cuDNN plans what cudnn-frontend reports for the step's shapes
// instead: kernels/attention_cudnn.h attention_cudnn_workspace_for). An estimate, not checked against cuDNN's own
// figure (not yet queried on a GPU): the scratch a FlashAttention-2 backward of the self-attention (the largest graph
// of a block; the cross-attention has the same queries and 512 keys) keeps, an fp32 accumulator of dQ [B, H, L, d] and
// two fp32 row vectors [B, H, L] (the softmax statistics and dO·O). 1.3B at 32,760 tokens: 196 MiB.
static size_t act_attn_workspace_bound(const WanConfig* c, int B, int L) {
    const size_t BHL = (size_t)B * c->num_heads * L;
    return act_round(BHL * (size_t)wan_head_dim(c) * 4 + 2 * BHL * 4);
}

// how many block sets a WanGpuAct of `blocks` blocks carves: forward only or training with recompute one (shared by
// every block), training without recompute one per block
static int act_block_sets(int blocks, int training, int recompute) { return training && !recompute ? blocks : 1; }

// residual levels a WanGpuAct keeps: training, every level of the `blocks` it runs (blocks + 1); forward only, two
// alternating levels and the n_keep levels kept for readers
static int act_stream_slots(int training, int blocks, int n_keep) { return training ? blocks + 1 : 2 + n_keep; }

// the whole of a WanGpuAct (gpu/wan_gpu.cuh wan_gpu_act_init_opts allocates exactly this and checks it): blocks run
// (the training plan's residual levels), n_keep levels kept by a forward-only plan, borrowed: the block set and the
// backward scratch are another plan's (a lender's)
static size_t act_wan_bytes_ex(const WanConfig* c, int B, int L, int training, int recompute, int flash, size_t xbytes,
                               int blocks, int n_keep, int borrowed) {
    ActDims z = act_dims(c, B, L, flash, 0, 0, 1);
    z.slots = (size_t)act_stream_slots(training, blocks, n_keep);
    z.training = training; // a forward-only plan's block set has no GELU pre-activation (nothing reads it)
    return act_stream_bytes(z, xbytes) +
           (borrowed ? 0 : (size_t)act_block_sets(blocks, training, recompute) * act_block_set_bytes(z, xbytes)) +
           act_head_bytes(z, xbytes) + (training && !borrowed ? act_scratch_bytes(z, xbytes) : 0);
}
// a plan of the whole model that owns its work sets (wan_gpu_act_init)
static size_t act_wan_bytes(const WanConfig* c, int B, int L, int training, int recompute, int flash, size_t xbytes) {
    return act_wan_bytes_ex(c, B, L, training, recompute, flash, xbytes, c->num_layers, 0, 0);
}

// one flow-head evaluation (gpu/tmd_gpu.cuh head_gpu_act_init allocates exactly this): its own block sets unless the
// backbone's one set is free to use (shared: the backbone recomputes, or runs forward only)
static size_t act_head_eval_bytes(const WanConfig* c, int B, int L, int fuse_ffn_dim, int head_blocks, int gated,
                                  int shared, int flash, size_t xbytes) {
    ActDims z = act_dims(c, B, L, flash, fuse_ffn_dim, head_blocks, gated);
    return act_head_eval_own_bytes(z, xbytes) + (shared ? 0 : (size_t)head_blocks * act_block_set_bytes(z, xbytes)) +
           act_head_bytes(z, xbytes);
}
// flow-head evaluations a rollout of N inner steps allocates (gpu/tmd_gpu.cuh rollout_gpu_init): one per step when the
// backward reads every step's activations as they were kept; one in all when the backbone recomputes (the backward
// re-runs step j's evaluation from the kept state y_j before its backward) or runs forward only
static int act_rollout_evals(int N, int training, int recompute) { return training && !recompute ? N : 1; }
