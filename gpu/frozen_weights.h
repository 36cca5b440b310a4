// gpu/frozen_weights.h: which Wan tensors the GPU DiT reads in fp32, and so what a frozen model's weights take on the
// device, as plain C. The allocator (gpu/wan_gpu.cuh wan_gpu_model_init) and the memory plan (gpu/distill_plan.h) both
// ask wan_gpu_reads_fp32, so what is allocated and what is planned cannot drift apart.
//
// The block GEMMs and the text embedding read the floatX copy (WanGpuWeights.X). In fp32 (WanGpuWeights.P) the GPU
// reads only the small tensors below (gpu/wan_gpu.cuh: the Bf-> and W->P reads; gpu/tmd_gpu.cuh: the time embedding
// of the flow head, which is the student's own buffer, not a frozen model):
//   per block: modulation, self_attn.norm_q/norm_k and cross_attn.norm_q/norm_k (RMSNorm weights), norm3 (affine LN);
//   patch_embedding, time_embedding, time_projection and head (the official code keeps e, e0 and the head in fp32).
// A trainable model keeps fp32 master weights for everything (the optimizer updates them); a frozen one in the bf16
// build keeps the floatX copy of everything plus fp32 for these only: 2·n + 4·n_fp32 bytes instead of 6·n. In the
// fp32 build the copy is the fp32 weights themselves (4·n).
#pragma once
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../wan.h"       // the parameter layout (official names)
#include "../lib/shard.h" // the sharded layouts (fully sharded data parallelism)

// name: an official Wan2.1 tensor name of wan.h's layout ("blocks.3.norm3.weight", "head.modulation", ...)
static int wan_gpu_reads_fp32(const char* name) {
    static const char* top[] = {"patch_embedding.", "time_embedding.", "time_projection.", "head."};
    static const char* in_block[] = {
        "modulation", "self_attn.norm_q.weight",  "self_attn.norm_k.weight", "norm3.weight",
        "norm3.bias", "cross_attn.norm_q.weight", "cross_attn.norm_k.weight"};
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++)
        if (!strncmp(name, top[i], strlen(top[i]))) return 1;
    if (strncmp(name, "blocks.", 7)) return 0;
    const char* field = strchr(name + 7, '.'); // past "blocks.N."
    if (!field) return 0;
    for (size_t i = 0; i < sizeof(in_block) / sizeof(in_block[0]); i++)
        if (!strcmp(field + 1, in_block[i])) return 1;
    return 0;
}

// parameters of config c that the GPU reads in fp32 (the elements of a frozen bf16 model's fp32 buffer)
static size_t wan_gpu_fp32_params(const WanConfig* c) {
    WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    if (!t) {
        fprintf(stderr, "wan_gpu_fp32_params: out of host memory for the layout table\n");
        exit(1);
    }
    int nt = wan_layout(c, t, NULL, NULL, NULL);
    size_t n = 0;
    for (int i = 0; i < nt; i++)
        if (wan_gpu_reads_fp32(t[i].name)) n += t[i].numel;
    free(t);
    return n;
}

// device bytes of a frozen model's weights: the floatX copy of every parameter and fp32 for those read in fp32 (bf16
// build), or the fp32 weights alone (fp32 build: they are the copy)
static double wan_gpu_frozen_bytes(const WanConfig* c, int fp32) {
    double n = (double)wan_num_params(c);
    return fp32 ? 4.0 * n : 2.0 * n + 4.0 * (double)wan_gpu_fp32_params(c);
}

// A frozen model fully sharded in the bf16 build (gpu/fsdp_gpu.cuh): its floatX slices of every unit (2 bytes a
// parameter) and, as a layout of their own, the tensors read in fp32, sharded the same way: unit u of Lf holds the
// fp32-read tensors of unit u of L (the model's Wan layout), packed in layout order, so Lf's flat buffer is the packed
// buffer a whole frozen model keeps (gpu/wan_gpu.cuh wan_gpu_model_frozen_upload_) and a unit's gather is one more
// all-gather of its few fp32 tensors. Sharded rather than replicated: 14B has 188M such parameters (the time
// projection alone 157M), 0.70 GiB in fp32 on every rank replicated, 1/K of it sharded. 0, or -1 with a message.
static int shard_layout_wan_fp32(ShardLayout* Lf, const ShardLayout* L, const WanConfig* c, char* err, size_t errlen) {
    WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    if (!t) {
        snprintf(err, errlen, "shard_layout_wan_fp32: out of host memory for the layout table");
        return -1;
    }
    size_t nw;
    int nt = wan_layout(c, t, NULL, NULL, &nw);
    size_t numel[SHARD_MAX_UNITS] = {0};
    const char* names[SHARD_MAX_UNITS];
    for (int u = 0; u < L->n_units; u++) names[u] = L->unit[u].name;
    for (int i = 0; i < nt; i++)
        if (wan_gpu_reads_fp32(t[i].name)) numel[shard_unit_of(L, t[i].offset)] += t[i].numel;
    free(t);
    if (L->numel < nw) {
        snprintf(err, errlen, "shard_layout_wan_fp32: a layout of %zu parameters, %s has %zu", L->numel, c->name, nw);
        return -1;
    }
    return shard_layout_init(Lf, names, numel, L->n_units, L->K, L->align, err, errlen);
}

// the fp32-read tensors of the flat buffer (wan_num_params(c) floats) packed in layout order into packed
// [wan_gpu_fp32_params(c)]: Lf's flat buffer, what shard_scatter_host(Lf, ...) splits into the fp32 slices
static void wan_fp32_pack_host(const WanConfig* c, const float* flat, float* packed) {
    WanTensor* t = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    if (!t) {
        fprintf(stderr, "wan_fp32_pack_host: out of host memory for the layout table\n");
        exit(1);
    }
    int nt = wan_layout(c, t, NULL, NULL, NULL);
    size_t o = 0;
    for (int i = 0; i < nt; i++)
        if (wan_gpu_reads_fp32(t[i].name)) {
            memcpy(packed + o, flat + t[i].offset, sizeof(float) * t[i].numel);
            o += t[i].numel;
        }
    free(t);
}
