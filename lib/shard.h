// lib/shard.h: how one model's flat parameter buffer is split over K ranks (fully sharded data parallelism), plain C.
// The buffer is cut into UNITS at the model's own boundaries: for Wan (wan.h's carving) the embeddings before block 0,
// each block, the output head, and the TMD student's flow-head extras (appended after the head); for the
// discriminator, one unit per head. A unit of n elements is padded to p = K·s elements, s = ceil(n / (K·align))·align,
// and rank r owns the slice [r·s, (r+1)·s) of it: so every rank holds an equal, aligned 1/K of every unit, and a
// unit's all-gather (shard slices -> the whole unit) and reduce-scatter (the unit's gradient -> the slices) are one
// collective each, in the order the forward and the backward reach the units. Padding (p − n per unit, the tail of
// the last ranks' slices) holds zeros that no kernel reads and AdamW leaves at zero (zero gradient, zero weight).
// K = 1 is the identity: no padding, one slice per unit in the buffer's own order, so the shard IS the flat buffer.
//   shard buffer of rank r: [unit 0's slice | unit 1's slice | ...], ShardLayout.shard_numel elements
//   global element g of unit u (g − unit.offset = o): rank o / s, at shard index unit.shard_offset + o mod s
#pragma once
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#define SHARD_MAX_UNITS 80   // Wan: embeddings + WAN_MAX_LAYERS blocks + head + the student's extras; the discriminator's heads

typedef struct {
    char name[32];
    size_t offset, numel;    // where the unit starts in the flat buffer, its elements
    size_t slice;            // s: elements of the unit each rank owns (padding included)
    size_t shard_offset;     // where this unit's slice starts in every rank's shard buffer
} ShardUnit;

typedef struct {
    int K, align;
    int n_units;
    ShardUnit unit[SHARD_MAX_UNITS];
    size_t numel;            // the flat buffer's elements (the sum of the units')
    size_t shard_numel;      // elements of every rank's shard (the sum of the slices)
    size_t max_unit_padded;  // the largest unit after padding (K·s): the gathered buffer a rank needs for one unit
} ShardLayout;

static size_t shard_padded(const ShardLayout* L, int u) { return (size_t)L->K * L->unit[u].slice; }

// the layout of units of the given sizes over K ranks with slices a multiple of align elements; 0, or -1 with a message
static int shard_layout_init(ShardLayout* L, const char* const* names, const size_t* numel, int n_units, int K, int align, char* err, size_t errlen) {
    memset(L, 0, sizeof(*L));
    if (K < 1 || align < 1 || n_units < 1 || n_units > SHARD_MAX_UNITS) {
        snprintf(err, errlen, "shard layout: %d ranks, align %d, %d units; expected ranks >= 1, align >= 1, 1 .. %d units", K, align, n_units, SHARD_MAX_UNITS);
        return -1;
    }
    L->K = K; L->align = align; L->n_units = n_units;
    for (int u = 0; u < n_units; u++) {
        ShardUnit* x = &L->unit[u];
        snprintf(x->name, sizeof(x->name), "%s", names ? names[u] : "unit");
        x->offset = L->numel; x->numel = numel[u];
        size_t chunk = (size_t)K * (size_t)align;
        x->slice = K == 1 ? numel[u] : (numel[u] + chunk - 1) / chunk * (size_t)align;
        x->shard_offset = L->shard_numel;
        L->numel += x->numel; L->shard_numel += x->slice;
        if (shard_padded(L, u) > L->max_unit_padded) L->max_unit_padded = shard_padded(L, u);
    }
    return 0;
}

// the unit that holds global element g (binary search over the offsets)
static int shard_unit_of(const ShardLayout* L, size_t g) {
    int lo = 0, hi = L->n_units - 1;
    while (lo < hi) { int mid = (lo + hi + 1) / 2; if (L->unit[mid].offset <= g) lo = mid; else hi = mid - 1; }
    return lo;
}

// the owner of global element g and its index in that rank's shard
static void shard_owner(const ShardLayout* L, size_t g, int* rank, size_t* local) {
    const ShardUnit* x = &L->unit[shard_unit_of(L, g)];
    size_t o = g - x->offset;
    *rank = (int)(o / x->slice); *local = x->shard_offset + o % x->slice;
}

// elements of the flat buffer that rank r owns (its slices less their padding)
static size_t shard_owned(const ShardLayout* L, int r) {
    size_t n = 0;
    for (int u = 0; u < L->n_units; u++) {
        size_t s = L->unit[u].slice, lo = (size_t)r * s, hi = lo + s;
        if (hi > L->unit[u].numel) hi = L->unit[u].numel;
        if (hi > lo) n += hi - lo;
    }
    return n;
}
static size_t shard_padding(const ShardLayout* L) { return (size_t)L->K * L->shard_numel - L->numel; }

// rank r's shard from the flat buffer (elements of esz bytes): every slice copied, the padding zeroed. With
// shard_unit_gather_host below it is what the trainer's first scatter and the checkpoint's consolidation do.
static void shard_scatter_host(const ShardLayout* L, int r, const void* flat, void* shard, size_t esz) {
    for (int u = 0; u < L->n_units; u++) {
        const ShardUnit* x = &L->unit[u];
        size_t lo = (size_t)r * x->slice, n = lo >= x->numel ? 0 : (x->numel - lo < x->slice ? x->numel - lo : x->slice);
        char* dst = (char*)shard + x->shard_offset * esz;
        if (n) memcpy(dst, (const char*)flat + (x->offset + lo) * esz, n * esz);
        memset(dst + n * esz, 0, (x->slice - n) * esz);
    }
}
// unit u of the flat buffer from the K ranks' shards (what an all-gather of the unit's slices gives, less the padding)
static void shard_unit_gather_host(const ShardLayout* L, int u, const void* const* shards, void* flat, size_t esz) {
    const ShardUnit* x = &L->unit[u];
    for (int r = 0; r < L->K; r++) {
        size_t lo = (size_t)r * x->slice;
        if (lo >= x->numel) break;
        size_t n = x->numel - lo < x->slice ? x->numel - lo : x->slice;
        memcpy((char*)flat + (x->offset + lo) * esz, (const char*)shards[r] + x->shard_offset * esz, n * esz);
    }
}

#ifdef WAN_MAX_LAYERS
// Wan's units (wan.h): "embed" (patch, text, time embeddings and the time projection: everything before block 0),
// "block.l" for each block, "head", and, for the TMD student (extra > 0 elements after the Wan layout), "flow_head"
static int shard_layout_wan(ShardLayout* L, const WanConfig* c, size_t extra, int K, int align, char* err, size_t errlen) {
    static char names[SHARD_MAX_UNITS][32];
    const char* np[SHARD_MAX_UNITS]; size_t numel[SHARD_MAX_UNITS];
    WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    if (!t) { snprintf(err, errlen, "shard layout: out of memory"); return -1; }
    size_t nw; int nt = wan_layout(c, t, NULL, NULL, &nw);
    // the units' starts: tensor 0, each block's first tensor, the head's first tensor
    size_t start[SHARD_MAX_UNITS]; int n = 0;
    start[n] = 0; snprintf(names[n], 32, "embed"); n++;
    for (int i = 0; i < nt; i++) {
        int l; char rest[96];
        if (sscanf(t[i].name, "blocks.%d.%95s", &l, rest) == 2 && !strcmp(rest, "self_attn.q.weight")) { start[n] = t[i].offset; snprintf(names[n], 32, "block.%d", l); n++; }
        if (!strcmp(t[i].name, "head.head.weight")) { start[n] = t[i].offset; snprintf(names[n], 32, "head"); n++; }
    }
    free(t);
    for (int u = 0; u < n; u++) numel[u] = (u + 1 < n ? start[u + 1] : nw) - start[u];
    if (extra > 0) { snprintf(names[n], 32, "flow_head"); numel[n] = extra; n++; }
    for (int u = 0; u < n; u++) np[u] = names[u];
    return shard_layout_init(L, np, numel, n, K, align, err, errlen);
}
#endif

// The device buffers of a fully sharded step besides the models' slices (gpu/fsdp_gpu.cuh's FsdpBuffers): what the
// allocator walks (fsdp_buffers_init allocates exactly these, in this order) and what the memory plan sums
// (gpu/shard_plan.h), so the two cannot drift apart. The step's sharded models run one after another, so they share
// ONE pair of gathered units and one pair of unit gradients, each sized for the largest user:
//   2 gathered units in fp32 ("wide"): a trainable model's whole unit (its master: the block's norms and modulation,
//     the embeddings and the head read fp32), or a frozen bf16-only model's fp32-read tensors of the unit (its own
//     packed layout, gpu/frozen_weights.h shard_layout_wan_fp32)
//   2 gathered units in floatX ("narrow"): the bf16 build, every model's whole unit (what the GEMMs read); the fp32 build,
//     only for a frozen packed model (a trainable model's copy IS its fp32 unit, so it reads the wide buffer)
//   the embeddings' gradient (open through the whole backward: the head's path through e reaches them first) and the
//   running unit's gradient, fp32, padded to K slices (the reduce-scatter's input): only with a trainable model
// fp32: the fp32 build (floatX is float).
typedef struct {
    const ShardLayout* L;         // the model's layout (every parameter)
    const ShardLayout* fp32_read; // a frozen bf16-only model: its fp32-read tensors' layout (NULL: the whole unit in fp32)
    int trainable;                // its unit gradients are reduce-scattered (then fp32_read is NULL)
} ShardFsdpModel;
static ShardFsdpModel shard_fsdp_model(const ShardLayout* L, const ShardLayout* fp32_read, int trainable) {
    ShardFsdpModel m; m.L = L; m.fp32_read = fp32_read; m.trainable = trainable; return m;
}
#define SHARD_FSDP_MAX_BUFS 6
typedef struct { const char* name; size_t bytes; char kind; } ShardBuf;   // kind: 'w' fp32 unit, 'x' floatX unit, 'e' the embeddings' gradient, 'g' a unit's gradient
static int shard_fsdp_shared_buffers(const ShardFsdpModel* m, int n_models, int fp32, ShardBuf* out) {
    size_t wide = 0, narrow = 0, emb = 0, grad = 0;
    for (int i = 0; i < n_models; i++) {
        const ShardLayout* w = m[i].fp32_read ? m[i].fp32_read : m[i].L;
        if (w->max_unit_padded > wide) wide = w->max_unit_padded;
        if ((!fp32 || m[i].fp32_read) && m[i].L->max_unit_padded > narrow) narrow = m[i].L->max_unit_padded;
        if (m[i].trainable) {
            if (shard_padded(m[i].L, 0) > emb) emb = shard_padded(m[i].L, 0);
            if (m[i].L->max_unit_padded > grad) grad = m[i].L->max_unit_padded;
        }
    }
    int n = 0; size_t xb = fp32 ? 4 : 2;
    out[n].name = "a gathered unit (fp32)"; out[n].kind = 'w'; out[n++].bytes = 4 * wide;
    out[n].name = "the prefetched unit (fp32)"; out[n].kind = 'w'; out[n++].bytes = 4 * wide;
    if (narrow) {
        out[n].name = fp32 ? "a gathered unit (the frozen copy)" : "a gathered unit (bf16)"; out[n].kind = 'x'; out[n++].bytes = xb * narrow;
        out[n].name = fp32 ? "the prefetched unit (the frozen copy)" : "the prefetched unit (bf16)"; out[n].kind = 'x'; out[n++].bytes = xb * narrow;
    }
    if (grad) {
        out[n].name = "the embeddings' unit gradient"; out[n].kind = 'e'; out[n++].bytes = 4 * emb;
        out[n].name = "a unit's gradient"; out[n].kind = 'g'; out[n++].bytes = 4 * grad;
    }
    return n;
}
// the list of one model alone (its own pair: gpu/fsdp_gpu.cuh fsdp_wan_init)
static int shard_fsdp_buffers(const ShardLayout* L, int trainable, int fp32, ShardBuf* out) {
    ShardFsdpModel m = shard_fsdp_model(L, NULL, trainable);
    return shard_fsdp_shared_buffers(&m, 1, fp32, out);
}
static size_t shard_fsdp_shared_bytes(const ShardFsdpModel* m, int n_models, int fp32) {
    ShardBuf b[SHARD_FSDP_MAX_BUFS]; size_t s = 0;
    int n = shard_fsdp_shared_buffers(m, n_models, fp32, b);
    for (int i = 0; i < n; i++) s += b[i].bytes;
    return s;
}
static size_t shard_fsdp_bytes(const ShardLayout* L, int trainable, int fp32) {
    ShardFsdpModel m = shard_fsdp_model(L, NULL, trainable);
    return shard_fsdp_shared_bytes(&m, 1, fp32);
}
