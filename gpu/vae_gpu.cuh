// gpu/vae_gpu.cuh: the Wan2.1 VAE decoder and encoder on the GPU, fp32 (weights, activations, accumulation). Mirrors
// cpu/vae_cpu.h name for name (vae_gpu_resblock <-> vae_resblock, vae_gpu_decoder_chunk <-> vae_decoder_chunk,
// vae_gpu_encoder_chunk <-> vae_encoder_chunk, vae_gpu_encode <-> vae_encode, ...),
// which is its oracle (gpu/vae_gpu_tests.cuh); the facts about the model are in that file's header (diffusers'
// AutoencoderKLWan, the official wan/modules/vae.py).
//
// Weights: loaded by the CPU loader (vae_load: either naming, F32/BF16/F16) and uploaded as fp32. Only post_quant_conv
// and the decoder go to the GPU: in the layout (official order: encoder, conv1, conv2, decoder) they are one contiguous
// tail, so a device pointer is the host pointer's offset into that tail (vae_gpu_w).
// Decoding is causal and chunked as on the CPU: one latent frame at a time through the feature cache of every causal
// conv, so the memory is the weights, 4 activation buffers sized once by vae_plan for one chunk, and the caches (2
// frames of each causal conv's input): independent of the number of frames. The caches are allocated during the first
// chunk (their shapes are those of the tensors that chunk makes) and never again; vae_gpu_decode reports the bytes.
// Every layer overwrites its output; the residual and attention adds accumulate into x (vae_residual_add).
// The encoder (vae_gpu_init_encoder, vae_gpu_encode) is the same machinery the other way: the encoder and quant_conv
// (the layout's head) on the device, the first frame alone and then chunks of 4 through the caches, buffers planned by
// vae_plan(encode) for one chunk; its down-sampling convs are kernels/conv3d.cuh with down2, the downsample3d
// time_conv (stride 2 in time) the odd frames of a stride-1 causal conv (kernels/vae.cuh vae_time_stride2).
#pragma once
#include "../kernels/conv3d.cuh" // conv3d_forward: causal Conv3d / Conv2d / 1x1x1, the x2 up-sampling fused
#include "../kernels/vae.cuh"    // RMS norm + SiLU, attention, interleave, cache push, clamp
#include "../cpu/vae_cpu.h"      // VaeConfig, VaeParams (the structure), vae_plan, VAE_LATENT_MEAN/STD

// a device tensor [C][T][H][W]
typedef struct {
    float* p;
    int C, T, H, W;
} VaeGpuT;
static size_t vae_gpu_plane(const VaeGpuT* x) { return (size_t)x->H * x->W; }
static size_t vae_gpu_numel(const VaeGpuT* x) { return (size_t)x->C * x->T * x->H * x->W; }

// the feature cache of one causal conv: [C][2][H][W], frames right-aligned, zeros where no frame has been seen yet
// (kernels/vae.cuh vae_cache_shift). started: the upsample3d time_conv has seen its first chunk ("Rep").
typedef struct {
    float* p;
    int C, H, W, started;
} VaeGpuCache;
typedef struct {
    VaeGpuCache in, res[VAE_MAX_STAGES][VAE_MAX_RES][2], resample[VAE_MAX_STAGES], mid[2][2], out;
} VaeGpuCoderCache;

typedef struct {
    const Vae* v;          // the host model: config, structure, and the layout the device pointers follow
    float* params;         // device: post_quant_conv and the decoder (or the encoder and quant_conv), fp32 (vae_gpu_w)
    size_t first, nparams; // their offset in v->params and their count
    int encoder;           // 1: the encoder and quant_conv (vae_gpu_init_encoder), 0: the decoder
    int h, w;              // the frame size the buffers are planned for: latent (decoder) or video pixels (encoder)
    float* p[4];           // activation buffers of `act` floats each: x lives in p[0], layers use p[1..3]
    size_t act;
    float* zc; // one latent frame [z_dim, h, w] on the device (decoder)
    float* hz; // its host staging; the encoder's: one chunk of frames [3, 4, h, w]
    VaeGpuCoderCache kc;
    size_t bytes_weights, bytes_act, bytes_cache;
    cudaStream_t stream;
} VaeGpu;

// the device copy of a host parameter tensor
static const float* vae_gpu_w(const VaeGpu* g, const double* host) {
    return g->params + (size_t)(host - g->v->params) - g->first;
}

static float* vae_gpu_alloc_(size_t n, size_t* bytes, const char* what) {
    float* p = (float*)cuda_malloc_named(sizeof(float) * (n ? n : 1), what,
                                         "decode a smaller latent frame (the VAE buffers scale with h x w)");
    *bytes += sizeof(float) * n;
    return p;
}

// the cache of a conv whose input is x: allocated (zeroed) on first use, then its shape must stay that of x
static VaeGpuCache* vae_gpu_cache_for_(VaeGpu* g, VaeGpuCache* k, const VaeGpuT* x) {
    if (!k->p) {
        k->C = x->C;
        k->H = x->H;
        k->W = x->W;
        k->p = vae_gpu_alloc_((size_t)x->C * 2 * vae_gpu_plane(x), &g->bytes_cache, "VAE feature cache");
        cudaCheck(cudaMemsetAsync(k->p, 0, sizeof(float) * x->C * 2 * vae_gpu_plane(x), g->stream));
    } else if (k->C != x->C || k->H != x->H || k->W != x->W) {
        fprintf(stderr,
                "vae_gpu: a feature cache of [%d, 2, %d, %d] met an input of [%d, %d, %d, %d] (internal error)\n", k->C,
                k->H, k->W, x->C, x->T, x->H, x->W);
        exit(1);
    }
    return k;
}

static void vae_gpu_coder_cache_each_(VaeGpuCoderCache* kc, void (*f)(VaeGpuCache*, cudaStream_t), cudaStream_t st) {
    f(&kc->in, st);
    f(&kc->out, st);
    for (int i = 0; i < VAE_MAX_STAGES; i++) {
        f(&kc->resample[i], st);
        for (int r = 0; r < VAE_MAX_RES; r++) {
            f(&kc->res[i][r][0], st);
            f(&kc->res[i][r][1], st);
        }
    }
    for (int i = 0; i < 2; i++) {
        f(&kc->mid[i][0], st);
        f(&kc->mid[i][1], st);
    }
}
static void vae_gpu_cache_reset_(VaeGpuCache* k, cudaStream_t st) {
    if (k->p) cudaCheck(cudaMemsetAsync(k->p, 0, sizeof(float) * k->C * 2 * k->H * k->W, st));
    k->started = 0;
}
static void vae_gpu_cache_free_(VaeGpuCache* k, cudaStream_t st) {
    (void)st;
    if (k->p) cudaCheck(cudaFree(k->p));
    memset(k, 0, sizeof(*k));
}

// Uploads the decoder of v (which must outlive g) and plans the buffers for latent frames of h x w; with encoder = 1
// (vae_gpu_init_encoder) the encoder and quant_conv instead, for video frames of h x w pixels.
static int vae_gpu_init_(VaeGpu* g, const Vae* v, int encoder, int h, int w, char* err) {
    memset(g, 0, sizeof(*g));
    if (h < 1 || w < 1) {
        snprintf(err, ST_ERRLEN, "vae_gpu_init: %s frame %dx%d must have at least one pixel",
                 encoder ? "video" : "latent", h, w);
        return -1;
    }
    g->v = v;
    g->h = h;
    g->w = w;
    g->stream = 0;
    g->encoder = encoder;
    size_t total = vae_num_params(&v->c), split = (size_t)(v->P.post_quant_w - v->params);
    // the layout's order is encoder, quant_conv, post_quant_conv, decoder: either half is one contiguous range
    g->first = encoder ? 0 : split;
    g->nparams = encoder ? split : total - split;
    float* hp = (float*)malloc(sizeof(float) * g->nparams);
    if (!hp) {
        snprintf(err, ST_ERRLEN, "vae_gpu_init: out of host memory for %zu parameters", g->nparams);
        return -1;
    }
    for (size_t i = 0; i < g->nparams; i++) hp[i] = (float)v->params[g->first + i];
    g->params = vae_gpu_alloc_(g->nparams, &g->bytes_weights, encoder ? "VAE encoder weights" : "VAE decoder weights");
    cudaCheck(cudaMemcpy(g->params, hp, sizeof(float) * g->nparams, cudaMemcpyHostToDevice));
    free(hp);
    g->act = vae_plan(&v->c, !encoder, h, w);
    for (int i = 0; i < 4; i++) g->p[i] = vae_gpu_alloc_(g->act, &g->bytes_act, "VAE activation buffer");
    size_t staging =
        encoder ? (size_t)3 * VAE_CHUNK * h * w : (size_t)v->c.z_dim * h * w; // a chunk of frames / a latent frame
    if (!encoder) g->zc = vae_gpu_alloc_(staging, &g->bytes_act, "VAE latent frame");
    g->hz = (float*)malloc(sizeof(float) * staging);
    if (!g->hz) {
        snprintf(err, ST_ERRLEN, "vae_gpu_init: out of host memory for %zu floats", staging);
        return -1;
    }
    return 0;
}
static int vae_gpu_init(VaeGpu* g, const Vae* v, int h, int w, char* err) { return vae_gpu_init_(g, v, 0, h, w, err); }
// the encoder for videos of H x W pixels (multiples of the spatial factor)
static int vae_gpu_init_encoder(VaeGpu* g, const Vae* v, int H, int W, char* err) {
    int s = vae_spatial_factor(&v->c);
    if (H < s || W < s || H % s || W % s) {
        snprintf(err, ST_ERRLEN,
                 "encode: frame size %dx%d must be a positive multiple of %d (the spatial factor); crop or resize", H,
                 W, s);
        return -1;
    }
    return vae_gpu_init_(g, v, 1, H, W, err);
}

static void vae_gpu_free(VaeGpu* g) {
    vae_gpu_coder_cache_each_(&g->kc, vae_gpu_cache_free_, g->stream);
    for (int i = 0; i < 4; i++) cudaCheck(cudaFree(g->p[i]));
    cudaCheck(cudaFree(g->zc));
    cudaCheck(cudaFree(g->params));
    free(g->hz);
    memset(g, 0, sizeof(*g));
}

static void vae_gpu_print_plan(const VaeGpu* g, FILE* f) {
    fprintf(f,
            "VAE %s on the GPU (fp32), %s frames of %dx%d: weights %.1f MB (%zu parameters), 4 activation buffers "
            "of %.1f MB, feature caches %.1f MB (allocated in the first chunk, constant afterwards): %.1f MB in all\n",
            g->encoder ? "encoder" : "decoder", g->encoder ? "video" : "latent", g->h, g->w,
            g->bytes_weights / 1048576.0, g->nparams, sizeof(float) * g->act / 1048576.0, g->bytes_cache / 1048576.0,
            (g->bytes_weights + g->bytes_act + g->bytes_cache) / 1048576.0);
}

// ----------------------------------------------------------------------------------------------------------------
// layers (cpu/vae_cpu.h's, in its order)

static void vae_gpu_conv_(const VaeGpu* g, VaeGpuT* out, const VaeGpuT* x, const float* cache, const double* w,
                          const double* b, int Cout, int KT, int KH, int KW, int up2) {
    *out = (VaeGpuT){out->p, Cout, x->T, up2 ? 2 * x->H : x->H, up2 ? 2 * x->W : x->W};
    Conv3dShape s = {x->C, Cout, out->T, out->H, out->W, KT, KH, KW, cache ? 2 : 0, up2};
    conv3d_forward(out->p, x->p, cache, vae_gpu_w(g, w), b ? vae_gpu_w(g, b) : NULL, s, g->stream);
}

// causal conv with kernel (3, 3, 3) through the cache, then the cache takes the last 2 frames of x
static void vae_gpu_causal_conv3(VaeGpu* g, VaeGpuT* out, const VaeGpuT* x, VaeGpuCache* k, const double* w,
                                 const double* b, int Cout) {
    vae_gpu_cache_for_(g, k, x);
    vae_gpu_conv_(g, out, x, k->p, w, b, Cout, 3, 3, 3, 0);
    vae_cache_shift(k->p, x->p, x->C, x->T, vae_gpu_plane(x), g->stream);
}

// pointwise conv (1x1x1 or 1x1); out may not alias x
static void vae_gpu_pointwise(const VaeGpu* g, VaeGpuT* out, const VaeGpuT* x, const double* w, const double* b,
                              int Cout) {
    vae_gpu_conv_(g, out, x, NULL, w, b, Cout, 1, 1, 1, 0);
}

static void vae_gpu_norm(const VaeGpu* g, VaeGpuT* out, const VaeGpuT* x, const double* gamma, int silu) {
    *out = (VaeGpuT){out->p, x->C, x->T, x->H, x->W};
    vae_rms_norm_silu(out->p, x->p, vae_gpu_w(g, gamma), x->C, (size_t)x->T * vae_gpu_plane(x), silu, g->stream);
}

static void vae_gpu_swap_(float** a, float** b) {
    float* t = *a;
    *a = *b;
    *b = t;
}
#define VAE_GPU_BUF(ptr) ((VaeGpuT){(ptr), 0, 0, 0, 0})

// ResidualBlock on x (in p[0]), the result written over it
static void vae_gpu_resblock(VaeGpu* g, VaeGpuT* x, const VaeResBlock* r, VaeGpuCache* k1, VaeGpuCache* k2) {
    VaeGpuT h = VAE_GPU_BUF(g->p[1]), c1 = VAE_GPU_BUF(g->p[2]), sc = VAE_GPU_BUF(g->p[3]);
    vae_gpu_norm(g, &h, x, r->norm1, 1);
    vae_gpu_causal_conv3(g, &c1, &h, k1, r->conv1_w, r->conv1_b, r->cout);
    vae_gpu_norm(g, &h, &c1, r->norm2, 1);
    vae_gpu_causal_conv3(g, &c1, &h, k2, r->conv2_w, r->conv2_b, r->cout);
    if (r->shortcut_w) { // x = shortcut(x) + conv2(...): the shortcut's output (p[3]) becomes p[0]
        vae_gpu_pointwise(g, &sc, x, r->shortcut_w, r->shortcut_b, r->cout);
        vae_gpu_swap_(&g->p[0], &g->p[3]);
        *x = sc;
        x->p = g->p[0];
    }
    vae_residual_add(x->p, c1.p, vae_gpu_numel(x), g->stream);
}

// AttentionBlock: per frame, one head over the H*W pixels; x += proj(softmax(q k^T / sqrt(C)) v)
static void vae_gpu_attention(VaeGpu* g, VaeGpuT* x, const VaeAttn* a) {
    VaeGpuT n = VAE_GPU_BUF(g->p[1]), qkv = VAE_GPU_BUF(g->p[2]), o = {g->p[3], x->C, x->T, x->H, x->W},
            pr = VAE_GPU_BUF(g->p[2]);
    vae_gpu_norm(g, &n, x, a->norm, 0);
    vae_gpu_pointwise(g, &qkv, &n, a->qkv_w, a->qkv_b, 3 * x->C);
    vae_frame_attention(o.p, qkv.p, x->C, x->T, (int)vae_gpu_plane(x), g->stream);
    vae_gpu_pointwise(g, &pr, &o, a->proj_w, a->proj_b, x->C); // over qkv, no longer needed
    vae_residual_add(x->p, pr.p, vae_gpu_numel(x), g->stream);
}

// Resample, up only (the decoder's): [upsample3d: time_conv through the cache, interleave] nearest x2 + conv3x3
static void vae_gpu_resample(VaeGpu* g, VaeGpuT* x, const VaeResample* r, VaeGpuCache* k) {
    if (r->temporal) {
        vae_gpu_cache_for_(g, k, x);
        if (!k->started)
            k->started = 1; // first chunk: no time conv ("Rep"); the cache stays zeros
        else {
            // time_conv (3,1,1) C -> 2C, causal over [cache, x]; then frame 2j = channels [0,C), 2j+1 = [C,2C)
            VaeGpuT tc = VAE_GPU_BUF(g->p[1]);
            vae_gpu_conv_(g, &tc, x, k->p, r->time_w, r->time_b, 2 * r->c, 3, 1, 1, 0);
            vae_cache_shift(k->p, x->p, x->C, x->T, vae_gpu_plane(x), g->stream);
            vae_time_interleave(x->p, tc.p, r->c, x->T, vae_gpu_plane(x), g->stream);
            x->T *= 2;
        }
    }
    VaeGpuT y = VAE_GPU_BUF(g->p[2]);
    vae_gpu_conv_(g, &y, x, NULL, r->conv_w, r->conv_b, r->cout, 1, 3, 3, 1);
    vae_gpu_swap_(&g->p[0], &g->p[2]);
    *x = y;
    x->p = g->p[0];
}

static void vae_gpu_mid(VaeGpu* g, VaeGpuT* x, const VaeCoder* k, VaeGpuCoderCache* kc) {
    vae_gpu_resblock(g, x, &k->mid_res0, &kc->mid[0][0], &kc->mid[0][1]);
    vae_gpu_attention(g, x, &k->mid_attn);
    vae_gpu_resblock(g, x, &k->mid_res1, &kc->mid[1][0], &kc->mid[1][1]);
}

// norm_out, SiLU, conv_out through its cache: x -> [cout, T, H, W] in p[0]
static void vae_gpu_head(VaeGpu* g, VaeGpuT* x, const VaeCoder* k, VaeGpuCoderCache* kc, int cout) {
    VaeGpuT h = VAE_GPU_BUF(g->p[1]), y = VAE_GPU_BUF(g->p[2]);
    vae_gpu_norm(g, &h, x, k->norm_out, 1);
    vae_gpu_causal_conv3(g, &y, &h, &kc->out, k->conv_out_w, k->conv_out_b, cout);
    vae_gpu_swap_(&g->p[0], &g->p[2]);
    *x = y;
    x->p = g->p[0];
}

// one decoder chunk: latent frame z [z_dim, 1, h, w] (in g->zc) -> frames [3, t, 8h, 8w] in p[0] (x describes them)
static void vae_gpu_decoder_chunk(VaeGpu* g, VaeGpuT* x) {
    const Vae* v = g->v;
    const VaeCoder* k = &v->P.dec;
    VaeGpuCoderCache* kc = &g->kc;
    VaeGpuT z = {g->zc, v->c.z_dim, 1, g->h, g->w}, y = VAE_GPU_BUF(g->p[1]);
    vae_gpu_pointwise(g, &y, &z, v->P.post_quant_w, v->P.post_quant_b, v->c.z_dim);
    VaeGpuT c0 = VAE_GPU_BUF(g->p[0]);
    vae_gpu_causal_conv3(g, &c0, &y, &kc->in, k->conv_in_w, k->conv_in_b, k->mid_res0.cin);
    *x = c0;
    vae_gpu_mid(g, x, k, kc);
    for (int i = 0; i < v->c.num_stages; i++) {
        for (int r = 0; r < k->nres; r++) vae_gpu_resblock(g, x, &k->res[i][r], &kc->res[i][r][0], &kc->res[i][r][1]);
        if (i < v->c.num_stages - 1) vae_gpu_resample(g, x, &k->resample[i], &kc->resample[i]);
    }
    vae_gpu_head(g, x, k, kc, 3);
}

// Decodes latent [z_dim, T, h, w] (h, w as planned; normalized = 1: as the DiT makes them, de-normalised first with
// Wan2.1's latents_mean / latents_std) into video [3, vae_decoded_frames(T), s*h, s*w] on the host, clamped to
// [-1, 1]. One latent frame per chunk through the feature caches, which start from zeros (a new video).
// progress: NULL or a stream for one line per chunk. cache_bytes_after_first: if not NULL, the cache bytes after
// the first chunk (a caller can check that later chunks allocate nothing).
static int vae_gpu_decode(VaeGpu* g, float* video, const float* latent, int T, int normalized, FILE* progress,
                          size_t* cache_bytes_after_first, char* err) {
    const VaeConfig* c = &g->v->c;
    int h = g->h, w = g->w, s = vae_spatial_factor(c), H = h * s, W = w * s, To = vae_decoded_frames(c, T);
    if (T < 1) {
        snprintf(err, ST_ERRLEN, "decode: latent [%d, %d, %d, %d] must have at least one frame", c->z_dim, T, h, w);
        return -1;
    }
    if (normalized && c->z_dim != 16) {
        snprintf(err, ST_ERRLEN,
                 "--normalized: Wan2.1's latents_mean/latents_std are for z_dim 16, this VAE has z_dim %d", c->z_dim);
        return -1;
    }
    vae_gpu_coder_cache_each_(&g->kc, vae_gpu_cache_reset_, g->stream);
    size_t plane = (size_t)h * w;
    int f0 = 0;
    for (int t = 0; t < T; t++) {
        double t0 = now_s();
        for (int ch = 0; ch < c->z_dim; ch++)
            for (size_t i = 0; i < plane; i++) {
                double zv = latent[((size_t)ch * T + t) * plane + i]; // de-normalised in double, as vae_decode_f
                g->hz[(size_t)ch * plane + i] =
                    (float)(normalized ? zv * VAE_LATENT_STD[ch] + VAE_LATENT_MEAN[ch] : zv);
            }
        cudaCheck(cudaMemcpyAsync(g->zc, g->hz, sizeof(float) * c->z_dim * plane, cudaMemcpyHostToDevice, g->stream));
        VaeGpuT x;
        vae_gpu_decoder_chunk(g, &x);
        if (x.C != 3 || x.H != H || x.W != W || f0 + x.T > To) {
            snprintf(err, ST_ERRLEN, "decode: chunk %d gave [%d, %d, %d, %d] (internal error)", t, x.C, x.T, x.H, x.W);
            return -1;
        }
        vae_clamp_video(x.p, vae_gpu_numel(&x), g->stream);
        for (int ch = 0; ch < 3; ch++)
            cudaCheck(cudaMemcpyAsync(video + ((size_t)ch * To + f0) * H * W, x.p + (size_t)ch * x.T * H * W,
                                      sizeof(float) * x.T * H * W, cudaMemcpyDeviceToHost, g->stream));
        cudaCheck(cudaStreamSynchronize(g->stream));
        if (t == 0 && cache_bytes_after_first) *cache_bytes_after_first = g->bytes_cache;
        if (progress)
            fprintf(progress, "  decode chunk %d/%d (GPU): latent frame %d -> frames %d..%d, %.3f s, caches %.1f MB\n",
                    t + 1, T, t, f0, f0 + x.T - 1, now_s() - t0, g->bytes_cache / 1048576.0);
        f0 += x.T;
    }
    if (f0 != To) {
        snprintf(err, ST_ERRLEN, "decode: produced %d frames, expected %d (internal error)", f0, To);
        return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// the encoder (vae_gpu_init_encoder): cpu/vae_cpu.h's vae_encoder_chunk and vae_encode, the same caches and buffers

// Resample, down only (the encoder's): zero pad (0, 1, 0, 1) and conv 3x3 stride 2 [downsample3d: time_conv stride 2
// over [last frame of the previous chunk, this chunk]; the first chunk passes through and is remembered]
static int vae_gpu_resample_down(VaeGpu* g, VaeGpuT* x, const VaeResample* r, VaeGpuCache* k, char* err) {
    VaeGpuT y = {g->p[2], r->c, x->T, x->H / 2, x->W / 2}; // even sizes: vae_gpu_init_encoder's multiple of the factor
    Conv3dShape s = {x->C, r->c, y.T, y.H, y.W, 1, 3, 3, 0, 0, 1};
    conv3d_forward(y.p, x->p, NULL, vae_gpu_w(g, r->conv_w), vae_gpu_w(g, r->conv_b), s, g->stream);
    float** result = &g->p[2];
    if (r->temporal) {
        vae_gpu_cache_for_(g, k, &y);
        if (!k->started)
            k->started = 1; // first chunk: passes through (its last frame is kept below)
        else {
            if (y.T < 2) {
                snprintf(err, ST_ERRLEN,
                         "a temporal down-sampling got a chunk of %d frame(s); it needs at least 2 (frame counts must "
                         "be 1 + 4k)",
                         y.T);
                return -1;
            }
            // the stride-1 causal conv over [cache, y] into p[3], its odd frames into p[1]
            Conv3dShape st = {r->c, r->c, y.T, y.H, y.W, 3, 1, 1, 2, 0, 0};
            conv3d_forward(g->p[3], y.p, k->p, vae_gpu_w(g, r->time_w), vae_gpu_w(g, r->time_b), st, g->stream);
            int To = (1 + y.T - 3) / 2 + 1;
            vae_time_stride2(g->p[1], g->p[3], r->c, y.T, To, vae_gpu_plane(&y), g->stream);
            vae_cache_shift(k->p, y.p, y.C, y.T, vae_gpu_plane(&y), g->stream);
            y.p = g->p[1];
            y.T = To;
            result = &g->p[1];
            *x = y;
            vae_gpu_swap_(&g->p[0], result);
            return 0;
        }
        vae_cache_shift(k->p, y.p, y.C, y.T, vae_gpu_plane(&y), g->stream);
    }
    *x = y;
    vae_gpu_swap_(&g->p[0], result);
    return 0;
}

// one encoder chunk: frames [3, t, H, W] already in p[0] (x) -> [2 z_dim, t', H/s, W/s] in p[0]
static int vae_gpu_encoder_chunk(VaeGpu* g, VaeGpuT* x, char* err) {
    const Vae* v = g->v;
    const VaeCoder* k = &v->P.enc;
    VaeGpuCoderCache* kc = &g->kc;
    VaeGpuT c0 = VAE_GPU_BUF(g->p[1]);
    vae_gpu_causal_conv3(g, &c0, x, &kc->in, k->conv_in_w, k->conv_in_b, k->res[0][0].cin);
    vae_gpu_swap_(&g->p[0], &g->p[1]);
    *x = c0;
    for (int i = 0; i < v->c.num_stages; i++) {
        for (int r = 0; r < k->nres; r++) vae_gpu_resblock(g, x, &k->res[i][r], &kc->res[i][r][0], &kc->res[i][r][1]);
        if (i < v->c.num_stages - 1 && vae_gpu_resample_down(g, x, &k->resample[i], &kc->resample[i], err)) return -1;
    }
    vae_gpu_mid(g, x, k, kc);
    vae_gpu_head(g, x, k, kc, 2 * v->c.z_dim);
    VaeGpuT q = VAE_GPU_BUF(g->p[1]);
    vae_gpu_pointwise(g, &q, x, v->P.quant_w, v->P.quant_b, 2 * v->c.z_dim);
    vae_gpu_swap_(&g->p[0], &g->p[1]);
    *x = q;
    return 0;
}

// Encodes video [3, T, H, W] (host, in [-1, 1]; H x W as planned, T = 1 + 4k) into the posterior mean [z_dim,
// vae_encoded_frames(T), H/s, W/s] on the host (diffusers' encode(x).latent_dist.mode(), cpu vae_encode); normalized
// = 1: then (z - latents_mean) / latents_std, what the DiT sees. The first frame alone, then chunks of 4, through the
// feature caches, which start from zeros (a new video). progress: NULL or a stream for one line per chunk.
static int vae_gpu_encode(VaeGpu* g, float* z, const float* video, int T, int normalized, FILE* progress, char* err) {
    const VaeConfig* c = &g->v->c;
    if (!g->encoder) {
        snprintf(err, ST_ERRLEN, "vae_gpu_encode: this VaeGpu holds the decoder; open it with vae_gpu_init_encoder");
        return -1;
    }
    if (T < 1 || (T - 1) % VAE_CHUNK) {
        snprintf(err, ST_ERRLEN,
                 "encode: %d frames; the causal layout takes 1 + %dk frames (1, 5, 9, ..., 81): the first frame "
                 "alone, then chunks of %d; trim the video to %d frames",
                 T, VAE_CHUNK, VAE_CHUNK, T < 1 ? 1 : 1 + (T - 1) / VAE_CHUNK * VAE_CHUNK);
        return -1;
    }
    if (normalized && c->z_dim != 16) {
        snprintf(err, ST_ERRLEN,
                 "normalized latents: Wan2.1's latents_mean/latents_std are for z_dim 16, this VAE has z_dim %d",
                 c->z_dim);
        return -1;
    }
    int H = g->h, W = g->w, s = vae_spatial_factor(c), h = H / s, w = W / s, Tl = vae_encoded_frames(c, T);
    size_t plane = (size_t)H * W, lplane = (size_t)h * w;
    vae_gpu_coder_cache_each_(&g->kc, vae_gpu_cache_reset_, g->stream);
    int f0 = 0, l0 = 0, nchunks = 1 + (T - 1) / VAE_CHUNK;
    for (int i = 0; i < nchunks; i++) {
        double t0 = now_s();
        int n = i == 0 ? 1 : VAE_CHUNK;
        for (int ch = 0; ch < 3; ch++)
            memcpy(g->hz + (size_t)ch * n * plane, video + ((size_t)ch * T + f0) * plane, sizeof(float) * n * plane);
        cudaCheck(cudaMemcpyAsync(g->p[0], g->hz, sizeof(float) * 3 * n * plane, cudaMemcpyHostToDevice, g->stream));
        VaeGpuT x = {g->p[0], 3, n, H, W};
        if (vae_gpu_encoder_chunk(g, &x, err)) return -1;
        if (x.C != 2 * c->z_dim || x.H != h || x.W != w || l0 + x.T > Tl) {
            snprintf(err, ST_ERRLEN, "encode: chunk %d gave [%d, %d, %d, %d] (internal error)", i, x.C, x.T, x.H, x.W);
            return -1;
        }
        for (int ch = 0; ch < c->z_dim; ch++) // the posterior mean: the first z_dim of the 2 z_dim channels
            cudaCheck(cudaMemcpyAsync(z + ((size_t)ch * Tl + l0) * lplane, x.p + (size_t)ch * x.T * lplane,
                                      sizeof(float) * x.T * lplane, cudaMemcpyDeviceToHost, g->stream));
        cudaCheck(cudaStreamSynchronize(g->stream));
        if (progress)
            fprintf(progress,
                    "  encode chunk %d/%d (GPU): frames %d..%d -> latent frame(s) %d..%d, %.3f s, caches %.1f MB\n",
                    i + 1, nchunks, f0, f0 + n - 1, l0, l0 + x.T - 1, now_s() - t0, g->bytes_cache / 1048576.0);
        f0 += n;
        l0 += x.T;
    }
    if (l0 != Tl) {
        snprintf(err, ST_ERRLEN, "encode: produced %d latent frames, expected %d (internal error)", l0, Tl);
        return -1;
    }
    if (normalized) // in double, as cpu vae_normalize
        for (int ch = 0; ch < 16; ch++)
            for (size_t i = 0; i < (size_t)Tl * lplane; i++) {
                float* p = z + (size_t)ch * Tl * lplane + i;
                *p = (float)(((double)*p - VAE_LATENT_MEAN[ch]) / VAE_LATENT_STD[ch]);
            }
    return 0;
}
