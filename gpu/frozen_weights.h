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
#include "../wan.h" // the parameter layout (official names)

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
