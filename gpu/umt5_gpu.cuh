// gpu/umt5_gpu.cuh: the umT5 text encoder (transformers' UMT5EncoderModel) on the GPU, a batch of prompts at once.
// Mirrors cpu/umt5_cpu.h (its oracle, gpu/umt5_gpu_tests.cuh; the architecture and the facts about it are in that
// file's header): the same Umt5Config, the same loader and checks (umt5_open), umt5_bucket for the relative positions.
//
// API (stable: sample_tmd's prompt plumbing calls exactly this):
//   Umt5Gpu m; char err[ST_ERRLEN];
//   umt5_gpu_open(&m, "text_encoder/", max_batch, text_len, err);  // a .safetensors, an index.json or a folder;
//   uploads
//                                                                  // the weights, prints the memory plan; 0 = ok
//   umt5_gpu_encode(&m, ids, lens, B, ctx, err);  // ids[b][0..lens[b]) (with </s>, as spm_wan_ids gives them),
//                                                 // 1 <= B <= max_batch, 1 <= lens[b] <= text_len; ctx: host float
//                                                 // [B, text_len, d_model], rows >= lens[b] zero (what Wan's DiT sees)
//   umt5_gpu_close(&m);                           // frees every device buffer (before the DiT needs the room)
//   umt5_gpu_plan_bytes(&c, max_batch, max_len)   // device bytes of a model of config c (host arithmetic)
//   m.host.c                                      // the config (d_model is the context width the DiT must take)
// text_len is Wan's 512 for a real model (WanConfig.text_len); lens over it are an error (cut them first: spm_wan_ids
// truncates with a warning, as Wan does).
//
// Precision: floatX (bf16 by default, fp32 with -DENABLE_FP32) for the GEMM weights and inputs with fp32 accumulation
// (kernels/gemm.cuh: cuBLASLt; kernels/gemm_tiled.cuh with -DGEMM_OWN); fp32 for the residual stream, the RMSNorm
// weights and statistics, the relative position bias tables, the softmax and the output.
// Padding: a batch runs padded to its longest prompt (not to text_len: the work follows the real lengths). Padded
// positions hold the pad token 0 (as Wan's tokenizer pads) and are masked out as keys, so a prompt's valid rows do not
// depend on the others in its batch; the padded rows of the output are set to zero (Wan's `u[:v]` then zero-padding
// to text_len: official wan/modules/t5.py and text2video.py, diffusers' WanPipeline._get_t5_prompt_embeds).
// Memory: the 24 blocks' matrices on the device as floatX (umT5-XXL: 4.63 B parameters, 9.3 GB in bf16); the
// embedding table (256,384 x 4,096: 2.1 GB in bf16) stays in the file, its rows read per token on the host (a batch
// of 16 x 100 tokens is 1,600 rows of 8 KB), so the ≈ 11.4 GB of the whole encoder never sits on the device at once;
// activations for max_batch x text_len tokens, planned once (umt5_gpu_plan_bytes).
// Speed arithmetic (umT5-XXL, batch 16 x 100 tokens = 1,600 rows): the GEMMs are 2·1600·4.63e9 = 1.5e13 FLOP (≈ 25 ms
// at 600 TFLOP/s of bf16); the naive attention reads K and V once per query: 24 layers x 64 heads x 16 prompts x 100
// queries x 100 keys x 128 values x 2 bytes = 6.3 GB of (mostly L2-resident) reads, ≈ 5-10 ms; both inside the target
// of 20 ms per prompt (320 ms per batch of 16). At 512 tokens the attention grows 26x and a tiled kernel would pay off.
// Not yet run on a GPU (the simulator only: dev/results/).
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../cpu/umt5_cpu.h"        // Umt5Config, Umt5Model (loader, config inference, checks), umt5_bucket: the oracle
#include "../kernels/common.cuh"    // cudaCheck, cuda_malloc_named
#include "../kernels/precision.cuh" // floatX
#include "../kernels/residual.cuh"  // residual_forward: h += o(att), h += wo(g)
#include "../kernels/umt5.cuh"      // T5 RMSNorm, attention with the position bias and the padding mask, gated GELU
#ifdef GEMM_OWN
#include "../kernels/gemm_tiled.cuh" // Linear layers: the in-repo tiled GEMM
#else
#include "../kernels/gemm.cuh" // Linear layers: cuBLASLt
#endif

typedef struct {
    floatX* qkv;      // [3·inner, d]: q, k, v weights stacked (one GEMM)
    floatX* o;        // [d, inner]
    floatX* wi;       // [2·d_ff, d]: wi_0 then wi_1 (one GEMM)
    floatX* wo;       // [d, d_ff]
    float *ln1, *ln2; // [d] each: layer.0.layer_norm, layer.1.layer_norm
    float* rel_bias;  // [num_buckets, num_heads]: this block's own table
} Umt5GpuLayer;

typedef struct Umt5Gpu {
    Umt5Model host;      // config, open files (the embedding rows are read from there), the loader's checks
    Umt5GpuLayer* layer; // [num_layers], views into `weights`
    float* final_ln;     // [d]
    void* weights;       // one device allocation: every layer's matrices, then the fp32 tensors
    size_t weight_bytes, act_bytes;
    int max_batch, text_len;
    // activations for max_batch · text_len rows, sized once
    float* h;     // [N, d] fp32: the residual stream; the final RMSNorm writes the output over it
    floatX* n;    // [N, d]: an RMSNorm's output (a GEMM input)
    floatX* qkv;  // [N, 3·inner]
    floatX* att;  // [N, inner]: attention output before o
    floatX* ab;   // [N, 2·d_ff]: wi_0 n | wi_1 n
    floatX* g;    // [N, d_ff]: the gated product
    floatX* tmp;  // [N, d]: o(att) and wo(g) before the residual add
    int* bucket;  // [2·text_len + 1]: bucket of r = j − i at r + L (rebuilt for each batch's L)
    int* lens;    // [max_batch]
    float* hbuf;  // host staging [N, d]: the embedded tokens in, the output back
    double* row;  // host [d]: one embedding row as the loader gives it
    int* hbucket; // host [2·text_len + 1]
    cudaStream_t stream;
} Umt5Gpu;

// device bytes of the weights (every block's matrices in floatX, the fp32 norms and bias tables) and of the activations
// for max_batch prompts of max_len tokens
static size_t umt5_gpu_weight_bytes_(const Umt5Config* c) {
    size_t d = (size_t)c->d_model, inner = (size_t)c->num_heads * c->d_kv, F = (size_t)c->d_ff;
    size_t mats = 4 * inner * d + 3 * F * d, small = 2 * d + (size_t)c->num_buckets * c->num_heads;
    return (size_t)c->num_layers * (mats * sizeof(floatX) + small * sizeof(float)) + d * sizeof(float);
}
static size_t umt5_gpu_act_bytes_(const Umt5Config* c, int max_batch, int max_len) {
    size_t N = (size_t)max_batch * max_len, d = (size_t)c->d_model, inner = (size_t)c->num_heads * c->d_kv,
           F = (size_t)c->d_ff;
    return N * d * sizeof(float) + N * (2 * d + 4 * inner + 3 * F) * sizeof(floatX) +
           (2 * (size_t)max_len + 1 + max_batch) * sizeof(int);
}
static size_t umt5_gpu_plan_bytes(const Umt5Config* c, int max_batch, int max_len) {
    return umt5_gpu_weight_bytes_(c) + umt5_gpu_act_bytes_(c, max_batch, max_len);
}

static void umt5_gpu_print_plan(const Umt5Gpu* m, FILE* f) {
    const Umt5Config* c = &m->host.c;
    size_t emb = (size_t)c->vocab * c->d_model;
    fprintf(f,
            "umT5 on the GPU (%s weights, fp32 accumulation): %.2f GB of block weights (%zu parameters), activations "
            "for %d x %d "
            "tokens %.2f GB: %.2f GB in all; the embedding table (%zu parameters, %.2f GB as %s) stays in the file, "
            "read per token\n",
            FLOATX_NAME, m->weight_bytes / 1e9, umt5_num_params(c) - emb, m->max_batch, m->text_len, m->act_bytes / 1e9,
            (m->weight_bytes + m->act_bytes) / 1e9, emb, emb * (double)st_dtype_sizes[m->host.shared.dtype] / 1e9,
            st_dtype_name(m->host.shared.dtype));
}

// W [rows, cols] in its stored dtype -> dst (device floatX at row offset 0), through the loader's row reader; BF16
// weights into the bf16 build are copied as they are (the same bits the conversion would give), 64 MB at a time
static int umt5_gpu_upload_(Umt5Gpu* m, floatX* dst, const UmMat* W, char* err) {
    int64_t R = W->rows, C = W->cols, chunk = (int64_t)m->host.chunk_rows;
    if (W->dtype == ST_BF16 && sizeof(floatX) == 2) {
        size_t bytes = (size_t)(R * C) * 2, step = (size_t)64 << 20;
        unsigned char* buf = W->mem ? NULL : (unsigned char*)malloc(step);
        if (!W->mem && !buf) {
            st_errf(err, "out of host memory staging %s", W->name);
            return 1;
        }
        if (!W->mem && st_fseek(W->fp, W->begin) != 0) {
            free(buf);
            st_errf(err, "%s: cannot seek: %s", W->name, strerror(errno));
            return 1;
        }
        for (size_t o = 0; o < bytes; o += step) {
            size_t n = bytes - o < step ? bytes - o : step;
            const unsigned char* src = W->mem ? W->mem + o : buf;
            if (!W->mem && fread(buf, 1, n, W->fp) != n) {
                free(buf);
                st_errf(err,
                        "%s: could not read %zu bytes at %zu: %s; the file is truncated or changed since it was opened",
                        W->name, n, o, strerror(errno));
                return 1;
            }
            cudaCheck(cudaMemcpy((unsigned char*)dst + o, src, n, cudaMemcpyHostToDevice));
        }
        free(buf);
        return 0;
    }
    floatX* stage = (floatX*)malloc(sizeof(floatX) * (size_t)(chunk * C));
    if (!stage) {
        st_errf(err, "out of host memory staging %s", W->name);
        return 1;
    }
    for (int64_t r0 = 0; r0 < R; r0 += chunk) {
        int64_t nr = R - r0 < chunk ? R - r0 : chunk;
        if (um_read_rows(&m->host, W, r0, nr, m->host.wrows, err)) {
            free(stage);
            return 1;
        }
        for (int64_t i = 0; i < nr * C; i++) stage[i] = from_float<floatX>((float)m->host.wrows[i]);
        cudaCheck(cudaMemcpy(dst + r0 * C, stage, sizeof(floatX) * (size_t)(nr * C), cudaMemcpyHostToDevice));
    }
    free(stage);
    return 0;
}
static void umt5_gpu_upload_f_(float* dst, const double* src, size_t n) {
    float* f = (float*)malloc(sizeof(float) * n);
    if (!f) {
        fprintf(stderr, "umt5_gpu: out of host memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) f[i] = (float)src[i];
    cudaCheck(cudaMemcpy(dst, f, sizeof(float) * n, cudaMemcpyHostToDevice));
    free(f);
}

static void umt5_gpu_close(Umt5Gpu* m) {
    if (!m) return;
    void* dev[10] = {m->weights, m->h, m->n, m->qkv, m->att, m->ab, m->g, m->tmp, m->bucket, m->lens};
    for (int i = 0; i < 10; i++)
        if (dev[i]) cudaCheck(cudaFree(dev[i]));
    free(m->layer);
    free(m->hbuf);
    free(m->row);
    free(m->hbucket);
    umt5_close(&m->host);
    memset(m, 0, sizeof(*m));
}

// Takes over an opened CPU model (umt5_open, or one built in memory by a test): uploads its blocks and sizes the
// activations for max_batch prompts of up to text_len tokens. On failure the model is closed.
static int umt5_gpu_init(Umt5Gpu* m, Umt5Model* host, int max_batch, int text_len, char* err) {
    memset(m, 0, sizeof(*m));
    m->host = *host;
    memset(host, 0, sizeof(*host));
    const Umt5Config* c = &m->host.c;
    if (max_batch < 1 || text_len < 1) {
        st_errf(err, "umt5_gpu_open: max_batch %d and text_len %d must be >= 1 (Wan: text_len 512)", max_batch,
                text_len);
        umt5_close(&m->host);
        return 1;
    }
    m->max_batch = max_batch;
    m->text_len = text_len;
    m->stream = 0;
    size_t d = (size_t)c->d_model, inner = (size_t)c->num_heads * c->d_kv, F = (size_t)c->d_ff,
           L = (size_t)c->num_layers;
    m->weight_bytes = umt5_gpu_weight_bytes_(c);
    m->act_bytes = umt5_gpu_act_bytes_(c, max_batch, text_len);
    m->weights = cuda_malloc_named(m->weight_bytes, "umT5 weights",
                                   "the encoder's blocks must fit: free the device first (the DiT is loaded after it)");
    m->layer = (Umt5GpuLayer*)calloc(L, sizeof(Umt5GpuLayer));
    if (!m->layer) {
        st_errf(err, "out of host memory");
        umt5_close(&m->host);
        cudaCheck(cudaFree(m->weights));
        return 1;
    }
    // carve: the floatX matrices of every layer first, then the fp32 tensors (alignment: every size is a multiple of
    // 4 bytes; cuBLASLt is told each pointer's alignment)
    floatX* wx = (floatX*)m->weights;
    for (size_t i = 0; i < L; i++) {
        Umt5GpuLayer* Y = &m->layer[i];
        Y->qkv = wx;
        wx += 3 * inner * d;
        Y->o = wx;
        wx += d * inner;
        Y->wi = wx;
        wx += 2 * F * d;
        Y->wo = wx;
        wx += d * F;
    }
    float* wf = (float*)wx;
    for (size_t i = 0; i < L; i++) {
        Umt5GpuLayer* Y = &m->layer[i];
        Y->ln1 = wf;
        wf += d;
        Y->ln2 = wf;
        wf += d;
        Y->rel_bias = wf;
        wf += (size_t)c->num_buckets * c->num_heads;
    }
    m->final_ln = wf;
    int rc = 0;
    for (size_t i = 0; i < L && !rc; i++) {
        const Umt5Layer* H = &m->host.layer[i];
        Umt5GpuLayer* Y = &m->layer[i];
        rc = umt5_gpu_upload_(m, Y->qkv, &H->q, err) || umt5_gpu_upload_(m, Y->qkv + inner * d, &H->k, err) ||
             umt5_gpu_upload_(m, Y->qkv + 2 * inner * d, &H->v, err) || umt5_gpu_upload_(m, Y->o, &H->o, err) ||
             umt5_gpu_upload_(m, Y->wi, &H->wi0, err) || umt5_gpu_upload_(m, Y->wi + F * d, &H->wi1, err) ||
             umt5_gpu_upload_(m, Y->wo, &H->wo, err);
        if (rc) break;
        umt5_gpu_upload_f_(Y->ln1, H->ln1, d);
        umt5_gpu_upload_f_(Y->ln2, H->ln2, d);
        umt5_gpu_upload_f_(Y->rel_bias, H->rel_bias, (size_t)c->num_buckets * c->num_heads);
    }
    if (rc) {
        free(m->layer);
        cudaCheck(cudaFree(m->weights));
        umt5_close(&m->host);
        memset(m, 0, sizeof(*m));
        return 1;
    }
    umt5_gpu_upload_f_(m->final_ln, m->host.final_ln, d);
    size_t N = (size_t)max_batch * text_len;
    const char* knobs = "encode fewer prompts at once (max_batch) or shorter ones (text_len)";
    m->h = (float*)cuda_malloc_named(sizeof(float) * N * d, "umT5 residual stream", knobs);
    m->n = (floatX*)cuda_malloc_named(sizeof(floatX) * N * d, "umT5 norm output", knobs);
    m->qkv = (floatX*)cuda_malloc_named(sizeof(floatX) * N * 3 * inner, "umT5 q, k, v", knobs);
    m->att = (floatX*)cuda_malloc_named(sizeof(floatX) * N * inner, "umT5 attention output", knobs);
    m->ab = (floatX*)cuda_malloc_named(sizeof(floatX) * N * 2 * F, "umT5 FFN hidden", knobs);
    m->g = (floatX*)cuda_malloc_named(sizeof(floatX) * N * F, "umT5 gated FFN hidden", knobs);
    m->tmp = (floatX*)cuda_malloc_named(sizeof(floatX) * N * d, "umT5 projection output", knobs);
    m->bucket = (int*)cuda_malloc_named(sizeof(int) * (2 * (size_t)text_len + 1), "umT5 bucket table", knobs);
    m->lens = (int*)cuda_malloc_named(sizeof(int) * (size_t)max_batch, "umT5 prompt lengths", knobs);
    m->hbuf = (float*)malloc(sizeof(float) * N * d);
    m->row = (double*)malloc(sizeof(double) * d);
    m->hbucket = (int*)malloc(sizeof(int) * (2 * (size_t)text_len + 1));
    if (!m->hbuf || !m->row || !m->hbucket) {
        st_errf(err, "out of host memory for %zu x %zu staging floats", N, d);
        umt5_gpu_close(m);
        return 1;
    }
    gemm_init();
    return 0;
}

// opens the weights (umt5_open: a .safetensors, an index.json or a folder; its errors name what is wrong), uploads
// them and prints the memory plan to stdout
static int umt5_gpu_open(Umt5Gpu* m, const char* weights, int max_batch, int text_len, char* err) {
    memset(m, 0, sizeof(*m));
    Umt5Model host;
    if (umt5_open(&host, weights, err)) return 1;
    size_t need = umt5_gpu_plan_bytes(&host.c, max_batch, text_len), free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    if (need > free_b) {
        st_errf(
            err,
            "%s: the umT5 encoder needs %.2f GB on the device (weights and activations for %d x %d tokens), %.2f GB of "
            "%.2f GB are free; free the device first or encode fewer prompts at once",
            weights, need / 1e9, max_batch, text_len, free_b / 1e9, total_b / 1e9);
        umt5_close(&host);
        return 1;
    }
    if (umt5_gpu_init(m, &host, max_batch, text_len, err)) return 1;
    umt5_gpu_print_plan(m, stdout);
    return 0;
}

// the last hidden states of B prompts: ctx [B, text_len, d_model] (host, fp32), rows >= lens[b] zero
static int umt5_gpu_encode(Umt5Gpu* m, const int* const* ids, const int* lens, int B, float* ctx_out, char* err) {
    const Umt5Config* c = &m->host.c;
    int d = c->d_model, H = c->num_heads, dk = c->d_kv, inner = H * dk, F = c->d_ff;
    if (B < 1 || B > m->max_batch) {
        st_errf(err, "umt5_gpu_encode: %d prompts, the encoder was opened for 1 to %d at once", B, m->max_batch);
        return 1;
    }
    int L = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > m->text_len) {
            st_errf(err,
                    "prompt %d has %d tokens; need 1 to %d (text_len; an empty prompt still has </s>, a longer one is "
                    "cut by the tokenizer)",
                    b, lens[b], m->text_len);
            return 1;
        }
        for (int i = 0; i < lens[b]; i++)
            if (ids[b][i] < 0 || ids[b][i] >= c->vocab) {
                st_errf(err,
                        "prompt %d: token %d of %d is id %d, outside the encoder's vocabulary of %d; was the tokenizer "
                        "made for these weights?",
                        b, i, lens[b], ids[b][i], c->vocab);
                return 1;
            }
        if (lens[b] > L) L = lens[b];
    }
    // the embedding on the host: token i of prompt b at row b·L + i; the padding holds the pad token 0
    for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++) {
            if (um_read_rows(&m->host, &m->host.shared, i < lens[b] ? ids[b][i] : 0, 1, m->row, err)) return 1;
            float* dst = m->hbuf + ((size_t)b * L + i) * d;
            for (int e = 0; e < d; e++) dst[e] = (float)m->row[e];
        }
    for (int r = -L; r <= L; r++) m->hbucket[r + L] = umt5_bucket(r, c->num_buckets, c->max_distance);
    int N = B * L;
    cudaStream_t st = m->stream;
    cudaCheck(cudaMemcpyAsync(m->h, m->hbuf, sizeof(float) * (size_t)N * d, cudaMemcpyHostToDevice, st));
    cudaCheck(cudaMemcpyAsync(m->bucket, m->hbucket, sizeof(int) * (2 * (size_t)L + 1), cudaMemcpyHostToDevice, st));
    cudaCheck(cudaMemcpyAsync(m->lens, lens, sizeof(int) * (size_t)B, cudaMemcpyHostToDevice, st));
    float eps = (float)c->eps;
    for (int li = 0; li < c->num_layers; li++) {
        const Umt5GpuLayer* Y = &m->layer[li];
        umt5_rmsnorm<floatX>(m->n, m->h, Y->ln1, N, d, eps, st);
        matmul_forward<floatX>(m->qkv, NULL, m->n, Y->qkv, NULL, N, d, 3 * inner, 0, st);
        umt5_attention(m->att, m->qkv, Y->rel_bias, m->bucket, m->lens, B, L, H, dk, st);
        matmul_forward<floatX>(m->tmp, NULL, m->att, Y->o, NULL, N, inner, d, 0, st);
        residual_forward<floatX>(m->h, m->tmp, NULL, 0, 1, N, d, st);
        umt5_rmsnorm<floatX>(m->n, m->h, Y->ln2, N, d, eps, st);
        matmul_forward<floatX>(m->ab, NULL, m->n, Y->wi, NULL, N, d, 2 * F, 0, st);
        umt5_gated_gelu(m->g, m->ab, N, F, st);
        matmul_forward<floatX>(m->tmp, NULL, m->g, Y->wo, NULL, N, F, d, 0, st);
        residual_forward<floatX>(m->h, m->tmp, NULL, 0, 1, N, d, st);
    }
    umt5_rmsnorm<float>(m->h, m->h, m->final_ln, N, d, eps, st);
    cudaCheck(cudaMemcpyAsync(m->hbuf, m->h, sizeof(float) * (size_t)N * d, cudaMemcpyDeviceToHost, st));
    cudaCheck(cudaStreamSynchronize(st));
    for (int b = 0; b < B; b++) {
        float* o = ctx_out + (size_t)b * m->text_len * d;
        memcpy(o, m->hbuf + (size_t)b * L * d, sizeof(float) * (size_t)lens[b] * d);
        memset(o + (size_t)lens[b] * d, 0, sizeof(float) * (size_t)(m->text_len - lens[b]) * d);
    }
    return 0;
}
