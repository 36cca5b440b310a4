// gpu/train_data.h: where train_tmd's (latent, context) pairs come from, and the paper's Table 7 defaults for a real
// teacher. Plain C on the host (tested on the CPU in `make test`, group "data"):
//   the built-in world: clips rendered on the fly (world/world.h's training stream), the unconditional context zeros
//   --data FILE: a latent dataset (lib/latent_data.h), shuffled per epoch, split by rank, the negative prompt's
//                embedding as the unconditional context (paper Table 8); --data DIR: the same over the shards of a
//                sample_tmd --dataset directory (ld_open reads either)
// Either way the whole data state is one integer (train_data_state) that the checkpoint keeps, so resume is exact.
#pragma once
#include "../wan.h"
#include "../world/world.h"
#include "../lib/latent_data.h"
#include "../cpu/disc_cpu.h" // disc_config, disc_num_params: Table 7's discriminator size

typedef struct {
    int from_file; // 1: --data FILE; 0: the built-in world
    int synthetic; // train_tmd --bench: N(0, 1) latents and contexts of a given shape (no data at all)
    WorldConfig wc;
    WRng stream; // the world
    LatentData ld;
    LdOrder order;     // the file
    uint64_t position; // the file: samples every rank has consumed (lib/latent_data.h ld_order_batch)
    int rank, world;
    int T, H, W;        // latent grid of a sample [C, T, H, W]
    size_t numel, nctx; // floats per sample: latent, context [text_len, text_dim]
    int text_len;
    float* negative; // the file: [text_len, text_dim] host; the world: NULL (zeros, the empty caption)
    uint64_t order_seed;
} TrainData;

// path NULL: the built-in world that fits c (teacher_gpu_world_for's rule), its stream seeded by (seed, stage_id) and
// the same on every rank (train_data_next splits each step's batch by rank, as the file's order is split)
static int train_data_open(TrainData* td, const char* path, const WanConfig* c, uint64_t seed, int stage_id, int rank,
                           int world, char* err) {
    memset(td, 0, sizeof(*td));
    td->rank = rank;
    td->world = world;
    td->text_len = c->text_len;
    td->nctx = (size_t)c->text_len * c->text_dim;
    if (!path) {
        WorldConfig cands[2] = {world_config_gpu(), world_config_tiny()};
        int found = 0;
        for (int i = 0; i < 2 && !found; i++)
            if (cands[i].C == c->in_dim && cands[i].text_len == c->text_len && cands[i].text_dim == c->text_dim) {
                td->wc = cands[i];
                found = 1;
            }
        if (!found) {
            snprintf(err, ST_ERRLEN,
                     "model config '%s' (in_dim %d, text_len %d, text_dim %d) fits no built-in world: expected (3, 16, "
                     "64) for world "
                     "'gpu' or (3, 12, 32) for world 'tiny'; to train a real model, give its latent dataset with "
                     "--data FILE (./test_tmd pack)",
                     c->name, c->in_dim, c->text_len, c->text_dim);
            return 1;
        }
        td->stream = wrng_seed(seed, (uint64_t)stage_id, 0);
        td->T = td->wc.T;
        td->H = td->wc.H;
        td->W = td->wc.W;
        td->numel = world_clip_numel(&td->wc);
        return 0;
    }
    td->from_file = 1;
    if (ld_open(&td->ld, path, err)) return 1;
    if (ld_check_model(&td->ld, c->name, c->in_dim, c->out_dim, c->patch, c->text_len, c->text_dim, err)) {
        ld_close(&td->ld);
        return 1;
    }
    td->T = td->ld.T;
    td->H = td->ld.H;
    td->W = td->ld.W;
    td->numel = (size_t)td->ld.C * td->T * td->H * td->W;
    td->order_seed = splitmix64_mix(seed * 1000003ull + (uint64_t)stage_id); // every rank the same order, split below
    td->negative = (float*)malloc(sizeof(float) * td->nctx);
    if (!td->negative || ld_order_init(&td->order, td->order_seed, td->ld.n) ||
        ld_read_negative(&td->ld, td->negative, c->text_len, err)) {
        if (!td->negative) snprintf(err, ST_ERRLEN, "out of host memory for the negative context");
        free(td->negative);
        ld_order_free(&td->order);
        ld_close(&td->ld);
        return 1;
    }
    return 0;
}

// train_tmd --bench: samples [C, T, H, W] of N(0, 1) values and contexts of N(0, 1) rows, from one splitmix64 stream;
// for timing and memory only (what the model learns from them is meaningless)
static int train_data_open_synthetic(TrainData* td, const WanConfig* c, int T, int H, int W, uint64_t seed, char* err) {
    memset(td, 0, sizeof(*td));
    if (T <= 0 || H <= 0 || W <= 0 || T % c->patch[0] || H % c->patch[1] || W % c->patch[2]) {
        snprintf(err, ST_ERRLEN,
                 "--bench: latent [%d, %d, %d] (--latent-frames/height/width) must be positive multiples of the patch "
                 "(%d, %d, %d)",
                 T, H, W, c->patch[0], c->patch[1], c->patch[2]);
        return 1;
    }
    td->synthetic = 1;
    td->world = 1;
    td->text_len = c->text_len;
    td->T = T;
    td->H = H;
    td->W = W;
    td->numel = (size_t)c->in_dim * T * H * W;
    td->nctx = (size_t)c->text_len * c->text_dim;
    td->stream.s = seed;
    return 0;
}

static void train_data_free(TrainData* td) {
    if (td->from_file) {
        free(td->negative);
        ld_order_free(&td->order);
        ld_close(&td->ld);
    }
    memset(td, 0, sizeof(*td));
}

// the next B samples of this rank: x [B, numel], ctx [B, text_len·text_dim]; nonzero with a message on a bad sample.
// A step of `world` ranks takes world·B samples of the one stream, rank r the B from r·B: so K ranks of batch B see
// exactly the samples of one rank of batch K·B, and the state is one integer whatever the number of ranks
static int train_data_next(TrainData* td, int B, float* x, float* ctx, char* err) {
    if (td->synthetic) {
        Rng r = rng_make(td->stream.s++);
        for (size_t i = 0; i < (size_t)B * td->numel; i++) x[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < (size_t)B * td->nctx; i++) ctx[i] = (float)rng_normal(&r);
        return 0;
    }
    if (!td->from_file) { // the world: every rank draws the step's world·B scenes and renders its own B
        for (int g = 0; g < td->world * B; g++) {
            int b = g - td->rank * B;
            if (b >= 0 && b < B)
                world_sample_batch(&td->wc, &td->stream, WORLD_TRAIN, 1, x + (size_t)b * td->numel,
                                   ctx + (size_t)b * td->nctx, NULL, NULL);
            else {
                WorldScene skip;
                world_sample_scene(&td->wc, &td->stream, WORLD_TRAIN, &skip);
            }
        }
        return 0;
    }
    int64_t idx[64];
    if (B > 64) {
        snprintf(err, ST_ERRLEN, "batch %d: the data loader takes at most 64 per rank", B);
        return 1;
    }
    ld_order_batch(&td->order, &td->position, td->rank, td->world, B, idx);
    for (int b = 0; b < B; b++)
        if (ld_read_latent(&td->ld, idx[b], x + b * td->numel, err) ||
            ld_read_context(&td->ld, idx[b], ctx + b * td->nctx, td->text_len, err))
            return 1;
    return 0;
}

// the data state a checkpoint keeps: the world stream's state, or the file's position
static uint64_t train_data_state(const TrainData* td) { return td->from_file ? td->position : td->stream.s; }
static void train_data_set_state(TrainData* td, uint64_t s) {
    if (td->from_file)
        td->position = s;
    else
        td->stream.s = s;
}

// what a resumed run must agree on (checkpoint metadata "data"): the file's shape and the order's seed
static void train_data_describe(const TrainData* td, char* buf, size_t n) {
    if (td->synthetic) {
        snprintf(buf, n, "synthetic [%d, %d, %d]", td->T, td->H, td->W);
        return;
    }
    if (!td->from_file) {
        snprintf(buf, n, "world %s", td->wc.name);
        return;
    }
    snprintf(buf, n, "latents %lld x [%d, %d, %d, %d], order seed %llu", (long long)td->ld.n, td->ld.C, td->T, td->H,
             td->W, (unsigned long long)td->order_seed);
}

// ---------------------------------------------------------------------------------------------------------
// The paper's Table 7 (App. A.5) for the two released teachers. What is the same for both and already the default
// of cpu/distill_cpu.h (tmmf_defaults, dmd_defaults) is not repeated: AdamW (0.01, (0.9, 0.99), 1e-8), the shifts
// (t_student 10, s_student 10, s_mf 3, t_dmd 5), t in (0.001, 0.999), CFG 3 (Stage 1) and 5 (Stage 2), δ = 5e-3,
// condition dropout 0.1, the student every 5th iteration, λ = 0.03, the feature layers (cpu/disc_cpu.h
// disc_layers_for).
typedef struct {
    const char* name;
    int stage1_steps;
    double stage1_lr;                     // TM-MF: 3k iterations, 3e-5 (1.3B) / 1e-5 (14B)
    int stage2_steps_m1, stage2_steps_m2; // DMD2-v: M = 1 / M >= 2 iterations
    double student_lr, fake_lr, disc_lr;  // (1e-5, 1e-5, 1e-5)
    int global_batch;                     // 64
    int M, N, H;                          // the headline students: 1.3B TMD-N2H5, 14B TMD-N4H5 (Tables 1, 2)
    double c_norm;                        // adaptive normalisation c = c_norm·d: d (1.3B), 1e-5·d (14B)
    double disc_params;                   // 68M (1.3B), 172M (14B)
    // "Baselines, KD": the one-step DMD2-v baseline's warm-up on teacher trajectories
    int kd_trajectories;
    double kd_cfg;
    int kd_skip_layer; // 10k trajectories of the teacher at CFG 5 with skip-layer 10
    double kd_lr;
    int kd_steps; // 7e-5 (FastGen's Wan KD config too); 10k (1.3B) / 5k (14B)
} Table7;

// 1 and *t for a config of the Wan2.1 1.3B or 14B shape (by shape, not name: an inferred checkpoint is named
// "inferred"), else 0
static int table7_for(const WanConfig* c, Table7* t) {
    static const Table7 t13 = {"Wan2.1 T2V 1.3B",
                               3000,
                               3e-5,
                               12000,
                               4000,
                               1e-5,
                               1e-5,
                               1e-5,
                               64,
                               2,
                               2,
                               5,
                               1.0,
                               68e6,
                               10000,
                               5,
                               10,
                               7e-5,
                               10000};
    static const Table7 t14 = {
        "Wan2.1 T2V 14B", 3000, 1e-5, 5000, 1000, 1e-5, 1e-5, 1e-5, 64, 2, 4, 5, 1e-5, 172e6, 10000, 5, 10, 7e-5, 5000};
    for (int k = 0; k < 2; k++) {
        WanConfig p;
        char err[ST_ERRLEN];
        wan_preset(&p, k ? "wan2.1-t2v-14b" : "wan2.1-t2v-1.3b", err);
        if (c->dim == p.dim && c->num_layers == p.num_layers && c->ffn_dim == p.ffn_dim && c->in_dim == p.in_dim &&
            c->text_dim == p.text_dim) {
            *t = k ? t14 : t13;
            return 1;
        }
    }
    return 0;
}

// the discriminator width W (train_tmd's heads: convolutions W/2, W/2, W, W, MLP hidden W) whose parameter count,
// counted by the CPU reference's own layout, is nearest Table 7's (the paper gives the count, not the widths)
static int table7_disc_width(const WanConfig* c, double target, size_t* count) {
    int best = 2;
    double best_d = 1e300;
    for (int w = 2; w <= 4096; w += 2) {
        DiscConfig dc = disc_config(c, w / 2, w / 2, w, w, w);
        double n = (double)disc_num_params(&dc), d = fabs(n - target);
        if (d < best_d) {
            best_d = d;
            best = w;
            if (count) *count = (size_t)n;
        }
        if (n > 2 * target) break;
    }
    return best;
}

// whether flag `name` is on the command line (Table 7 fills only the flags a user did not give)
static int flag_given(int argc, char** argv, const char* name) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name)) return 1;
    return 0;
}

// one default of Table 7: the flag it stands for and where it goes (exactly one of i, d)
typedef struct {
    const char* flag;
    int* i;
    double* d;
    double value;
} Table7Set;

// sets every default whose flag the command line does not give, and prints one line saying what it set and kept
static void table7_apply(const Table7* t, const Table7Set* set, int n, int argc, char** argv, FILE* out) {
    fprintf(out, "Table 7 defaults for %s (paper App. A.5; a flag given on the command line wins):\n ", t->name);
    for (int k = 0; k < n; k++) {
        int given = flag_given(argc, argv, set[k].flag);
        if (!given) {
            if (set[k].i)
                *set[k].i = (int)set[k].value;
            else
                *set[k].d = set[k].value;
        }
        if (set[k].i)
            fprintf(out, " %s %d%s", set[k].flag, *set[k].i, given ? " (given)" : "");
        else
            fprintf(out, " %s %g%s", set[k].flag, *set[k].d, given ? " (given)" : "");
    }
    fprintf(out,
            "\n  (Table 7's global batch is %d: --accum 0 accumulates ceil(%d / (ranks x batch)) micro-batches per "
            "optimizer step)\n",
            t->global_batch, t->global_batch);
}

// the model's config before its weights are read (so the defaults and the plan can be printed first): the preset,
// or the config inferred from the checkpoint's header as wan_load does
static int train_data_peek_config(WanConfig* c, const char* preset, const char* weights, int heads, char* err) {
    memset(c, 0, sizeof(*c));
    if (preset) return wan_preset(c, preset, err) ? 2 : 0;
    WanCheckpoint_ k;
    if (wan_ckpt_open_(&k, weights, err)) return 1;
    int rc = wan_infer_config_(&k, c, heads, 0, weights, err);
    wan_ckpt_close_(&k);
    return rc ? 1 : 0;
}
