// gpu/vae_gpu_tests.cuh: the GPU VAE decoder and encoder (gpu/vae_gpu.cuh, fp32) against the CPU reference
// (cpu/vae_cpu.h in double, itself checked against diffusers' AutoencoderKLWan by the test group `vae`). Included by
// test_gpu.cu (lib/testing.h). On the committed peer configs of dev/peer/vectors: vae_a (the Wan2.1 layout at base dim
// 4: z_dim 16, 4 stages, 2 residual blocks, both temporal up-samplings) and vae_c (z_dim 4, 3 stages, one temporal
// up-sampling at the other stage), decoding several latent frames, so every feature cache is used with 0, 1 and 2
// frames and the upsample3d time_conv takes its "Rep" first chunk and then its cache:
//   - the video against vae_decode (double), the whole of it and its last chunk on its own (the frames that need
//     every cache);
//   - a second decode of the same latent gives the same bits (the caches restart from zeros; no float atomics);
//   - the feature caches allocated after the first chunk are all there is (memory does not grow with frames);
//   - vae_a: the normalized latent (z - latents_mean) / latents_std decodes to what vae_decode_f gives;
//   - at full size only (not --vae-small), vae_c on a random latent of 36 x 32, so the middle block's attention takes
//     its keys in two tiles (dev/cuda/vae.cu checks that path under the simulator).
// The encoder on the peer videos (vae_a: both temporal down-samplings, vae_b: none, vae_c: one), 9 or 13 frames (the
// simulator's sizes: 9 frames of vae_a at 16 x 16 and of vae_c at 8 x 8): the latent against vae_encode (double), its
// last latent frame on its own, a second encode bit for bit, the normalized latent (z_dim 16), and the bad inputs (a
// frame count that is not 1 + 4k, a frame size that is not a multiple of the spatial factor).
// Tolerance VAE_GPU_TOL = 1e-4 of max|reference|: the GPU computes in fp32 in another summation order than the double
// reference, through ~40 layers in series (each conv sums up to 27*Cin products, the RMS norms divide by a channel
// sum); diffusers' own fp32 run is 7.6e-6 away from its fp64 run on vae_a (dev/peer/vectors/vae_manifest.txt), and the
// fp32 GPU decode is expected within the same order. 1e-4 leaves room for a different order, and a wrong cache or index
// gives errors of order 1e-1 (a broken cache, once, on purpose: see dev/results/vae-decode-sim-20261201.txt).
#pragma once
#include "vae_gpu.cuh"
#include "../lib/npy.h"
#include "../lib/rng.h"

#define VAE_GPU_TOL      1e-4
#define VAE_GPU_PEER_DIR "dev/peer/vectors"

// one peer config: its weights, its latent's first Tl frames cropped to h x w (0: the peer's); seed != 0: a random
// N(0, 1) latent of [z_dim, Tl, h, w] instead (any size)
static void test_vae_gpu_case(const char* tag, int Tl, int h, int w, uint64_t seed) {
    char path[512], name[160], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%s/vae_%s_diffusers.safetensors", VAE_GPU_PEER_DIR, tag);
    Vae v;
    if (vae_load(&v, path, NULL, err)) {
        EXPECT(0, "%s", err);
        return;
    }
    snprintf(path, sizeof(path), "%s/vae_%s_latent.npy", VAE_GPU_PEER_DIR, tag);
    float* lat = NULL;
    int nd = 0;
    int64_t sh[ST_MAXDIM];
    if (npy_read(path, &lat, &nd, sh, err) || vae_check_latent_shape(&v.c, nd, sh, path, err)) {
        EXPECT(0, "%s", err);
        free(lat);
        vae_free(&v);
        return;
    }
    int T0 = (int)sh[1], h0 = (int)sh[2], w0 = (int)sh[3], z = v.c.z_dim, s = vae_spatial_factor(&v.c);
    if (!seed) {
        if (Tl <= 0 || Tl > T0) Tl = T0;
        if (h <= 0 || h > h0) h = h0;
        if (w <= 0 || w > w0) w = w0;
    }
    int To = vae_decoded_frames(&v.c, Tl), H = h * s, W = w * s;
    size_t nz = (size_t)z * Tl * h * w, nv = (size_t)3 * To * H * W;
    float* zf = (float*)malloc(sizeof(float) * nz);
    double* zd = (double*)malloc(sizeof(double) * nz);
    for (int c = 0; c < z; c++)
        for (int t = 0; t < Tl; t++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    size_t i = (((size_t)c * Tl + t) * h + y) * w + x;
                    zf[i] = seed ? 0.f : lat[(((size_t)c * T0 + t) * h0 + y) * w0 + x];
                    zd[i] = zf[i];
                }
    free(lat);
    if (seed) {
        Rng r = rng_make(seed);
        for (size_t i = 0; i < nz; i++) {
            zf[i] = (float)rng_normal(&r);
            zd[i] = zf[i];
        }
    }
    printf("  vae_%s: ", tag);
    vae_config_print(&v.c, stdout);
    printf("  %slatent [%d, %d, %d, %d] -> video [3, %d, %d, %d]%s\n", seed ? "random " : "", z, Tl, h, w, To, H, W,
           h * w > VAE_ATTN_TILE ? " (the middle attention over more than one key tile)" : "");
    double* ref = (double*)malloc(sizeof(double) * nv);
    if (vae_decode(&v, ref, zd, Tl, h, w, NULL, err)) {
        EXPECT(0, "%s", err);
        free(ref);
        free(zf);
        free(zd);
        vae_free(&v);
        return;
    }

    VaeGpu g;
    if (vae_gpu_init(&g, &v, h, w, err)) {
        EXPECT(0, "%s", err);
        free(ref);
        free(zf);
        free(zd);
        vae_free(&v);
        return;
    }
    float* out = (float*)malloc(sizeof(float) * nv);
    float* out2 = (float*)malloc(sizeof(float) * nv);
    double* od = (double*)malloc(sizeof(double) * nv);
    size_t cache_first = 0;
    int rc = vae_gpu_decode(&g, out, zf, Tl, 0, NULL, &cache_first, err);
    if (rc)
        EXPECT(0, "%s", err);
    else {
        vae_gpu_print_plan(&g, stdout);
        for (size_t i = 0; i < nv; i++) od[i] = out[i];
        snprintf(name, sizeof(name), "vae_%s decode, %d latent frames", tag, Tl);
        expect_close_scaled(name, od, ref, (long)nv, VAE_GPU_TOL);
        int last = Tl > 1 ? vae_decoded_frames(&v.c, Tl - 1) : 0,
            nl = To - last; // the last chunk's frames, per channel
        double* a = (double*)malloc(sizeof(double) * 3 * nl * H * W);
        double* b = (double*)malloc(sizeof(double) * 3 * nl * H * W);
        for (int c = 0; c < 3; c++) {
            memcpy(a + (size_t)c * nl * H * W, od + ((size_t)c * To + last) * H * W, sizeof(double) * nl * H * W);
            memcpy(b + (size_t)c * nl * H * W, ref + ((size_t)c * To + last) * H * W, sizeof(double) * nl * H * W);
        }
        snprintf(name, sizeof(name), "vae_%s last chunk (frames %d..%d)", tag, last, To - 1);
        expect_close_scaled(name, a, b, (long)(3 * nl * H * W), VAE_GPU_TOL);
        free(a);
        free(b);
        printf("  feature caches: %zu bytes after the first chunk, %zu after %d chunks\n", cache_first, g.bytes_cache,
               Tl);
        EXPECT(cache_first == g.bytes_cache, "vae_%s: the caches grew after the first chunk (%zu -> %zu bytes)", tag,
               cache_first, g.bytes_cache);
        if (vae_gpu_decode(&g, out2, zf, Tl, 0, NULL, NULL, err))
            EXPECT(0, "%s", err);
        else {
            size_t diff = 0;
            for (size_t i = 0; i < nv; i++) diff += memcmp(&out[i], &out2[i], sizeof(float)) != 0;
            printf("  a second decode of the same latent: %zu of %zu values differ\n", diff, nv);
            EXPECT(diff == 0, "vae_%s: decoding twice gave different bits (%zu values)", tag, diff);
        }
    }
    if (!rc && z == 16) { // the DiT's normalized latent: de-normalised on the way in, as vae_decode_f does on the CPU
        float* zn = (float*)malloc(sizeof(float) * nz);
        for (int c = 0; c < z; c++)
            for (size_t i = 0; i < nz / z; i++)
                zn[c * (nz / z) + i] = (float)((zd[c * (nz / z) + i] - VAE_LATENT_MEAN[c]) / VAE_LATENT_STD[c]);
        if (vae_decode_f(&v, out2, zn, Tl, h, w, 1, NULL, err) || vae_gpu_decode(&g, out, zn, Tl, 1, NULL, NULL, err))
            EXPECT(0, "%s", err);
        else {
            double* rn = (double*)malloc(sizeof(double) * nv);
            for (size_t i = 0; i < nv; i++) {
                od[i] = out[i];
                rn[i] = out2[i];
            }
            snprintf(name, sizeof(name), "vae_%s decode of the normalized latent", tag);
            expect_close_scaled(name, od, rn, (long)nv, VAE_GPU_TOL);
            free(rn);
        }
        free(zn);
    }
    vae_gpu_free(&g);
    free(out);
    free(out2);
    free(od);
    free(ref);
    free(zf);
    free(zd);
    vae_free(&v);
}

// the encoder on a peer config's video: its first T frames cropped to H x W (0: the peer's), against vae_encode
// (double)
static void test_vae_gpu_encode_case(const char* tag, int T, int H, int W) {
    char path[512], name[160], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%s/vae_%s_diffusers.safetensors", VAE_GPU_PEER_DIR, tag);
    Vae v;
    if (vae_load(&v, path, NULL, err)) {
        EXPECT(0, "%s", err);
        return;
    }
    snprintf(path, sizeof(path), "%s/vae_%s_video.npy", VAE_GPU_PEER_DIR, tag);
    float* vid = NULL;
    int nd = 0;
    int64_t sh[ST_MAXDIM];
    if (npy_read(path, &vid, &nd, sh, err) || nd != 4 || sh[0] != 3) {
        EXPECT(0, "%s: %s", path, nd != 4 ? "not [3, T, H, W]" : err);
        free(vid);
        vae_free(&v);
        return;
    }
    int T0 = (int)sh[1], H0 = (int)sh[2], W0 = (int)sh[3], s = vae_spatial_factor(&v.c), zd = v.c.z_dim;
    if (T <= 0 || T > T0) T = T0;
    if (H <= 0 || H > H0) H = H0;
    if (W <= 0 || W > W0) W = W0;
    int Tl = vae_encoded_frames(&v.c, T), h = H / s, w = W / s;
    size_t nv = (size_t)3 * T * H * W, nz = (size_t)zd * Tl * h * w;
    float* x = (float*)malloc(sizeof(float) * nv);
    double* xd = (double*)malloc(sizeof(double) * nv);
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < T; t++)
            for (int y = 0; y < H; y++)
                for (int q = 0; q < W; q++) {
                    size_t i = (((size_t)c * T + t) * H + y) * W + q;
                    x[i] = vid[(((size_t)c * T0 + t) * H0 + y) * W0 + q];
                    xd[i] = x[i];
                }
    free(vid);
    printf("  vae_%s: video [3, %d, %d, %d] -> latent [%d, %d, %d, %d]\n", tag, T, H, W, zd, Tl, h, w);
    double* ref = (double*)malloc(sizeof(double) * nz);
    VaeGpu g;
    if (vae_encode(&v, ref, xd, T, H, W, NULL, err))
        EXPECT(0, "CPU: %s", err);
    else if (vae_gpu_init_encoder(&g, &v, H, W, err))
        EXPECT(0, "%s", err);
    else {
        float* z = (float*)malloc(sizeof(float) * nz);
        float* z2 = (float*)malloc(sizeof(float) * nz);
        double* got = (double*)malloc(sizeof(double) * nz);
        if (vae_gpu_encode(&g, z, x, T, 0, NULL, err))
            EXPECT(0, "%s", err);
        else {
            vae_gpu_print_plan(&g, stdout);
            for (size_t i = 0; i < nz; i++) got[i] = z[i];
            snprintf(name, sizeof(name), "vae_%s encode, %d frames", tag, T);
            expect_close_scaled(name, got, ref, (long)nz, VAE_GPU_TOL);
            // the last latent frame on its own: the one every cache (and a strided time conv's remembered frame) feeds
            double* a = (double*)malloc(sizeof(double) * zd * h * w);
            double* b = (double*)malloc(sizeof(double) * zd * h * w);
            for (int c = 0; c < zd; c++) {
                memcpy(a + (size_t)c * h * w, got + ((size_t)c * Tl + Tl - 1) * h * w, sizeof(double) * h * w);
                memcpy(b + (size_t)c * h * w, ref + ((size_t)c * Tl + Tl - 1) * h * w, sizeof(double) * h * w);
            }
            snprintf(name, sizeof(name), "vae_%s last latent frame (%d)", tag, Tl - 1);
            expect_close_scaled(name, a, b, (long)zd * h * w, VAE_GPU_TOL);
            free(a);
            free(b);
            if (vae_gpu_encode(&g, z2, x, T, 0, NULL, err))
                EXPECT(0, "%s", err);
            else {
                size_t diff = 0;
                for (size_t i = 0; i < nz; i++) diff += memcmp(&z[i], &z2[i], sizeof(float)) != 0;
                printf("  a second encode of the same video: %zu of %zu values differ\n", diff, nz);
                EXPECT(diff == 0, "vae_%s: encoding twice gave different bits (%zu values)", tag, diff);
            }
            if (zd == 16) { // normalized = 1: what the DiT sees, as cpu vae_normalize
                if (vae_gpu_encode(&g, z2, x, T, 1, NULL, err) || vae_normalize(ref, zd, nz / zd, 1, err))
                    EXPECT(0, "%s", err);
                else {
                    for (size_t i = 0; i < nz; i++) got[i] = z2[i];
                    snprintf(name, sizeof(name), "vae_%s encode, normalized", tag);
                    expect_close_scaled(name, got, ref, (long)nz, VAE_GPU_TOL);
                }
            }
            int rc = vae_gpu_encode(&g, z2, x, T - 1, 0, NULL, err); // T - 1 frames: not 1 + 4k
            printf("  %d frames -> %s\n", T - 1, rc ? err : "(accepted!)");
            EXPECT(rc != 0 && strstr(err, "1 + 4k"), "a frame count that is not 1 + 4k was accepted");
        }
        vae_gpu_free(&g);
        free(z);
        free(z2);
        free(got);
    }
    VaeGpu bad;
    int rc = vae_gpu_init_encoder(&bad, &v, H + s / 2, W, err);
    printf("  frames of %dx%d -> %s\n", H + s / 2, W, rc ? err : "(accepted!)");
    EXPECT(rc != 0 && strstr(err, "multiple"), "a frame size that is not a multiple of %d was accepted", s);
    if (!rc) vae_gpu_free(&bad);
    free(x);
    free(xd);
    free(ref);
    vae_free(&v);
}

// small: the simulator's sizes (fewer frames and pixels, every cache still used with 0, 1 and 2 frames)
static void test_vae_gpu(int small) {
    printf("\n[vae] the GPU VAE decoder (fp32) vs the CPU reference (double), tolerance %.0e of max|ref|\n",
           VAE_GPU_TOL);
    if (small) {
        test_vae_gpu_case("a", 3, 2, 2, 0);
        test_vae_gpu_case("c", 3, 2, 2, 0);
    } else {
        test_vae_gpu_case("a", 0, 0, 0, 0);
        test_vae_gpu_case("c", 0, 0, 0, 0);
        test_vae_gpu_case("c", 3, 36, 32, 7); // 1152 pixels per latent frame: 2 key tiles (kernels/vae.cuh)
    }
}

// the encoder: 9 frames are 3 chunks (the first frame, then 4 and 4), so every cache is used with 0, 1 and 2 frames and
// each downsample3d time_conv passes its first chunk through and then strides over [remembered frame, chunk]
static void test_vae_gpu_encoder(int small) {
    printf("\n[vae] the GPU VAE encoder (fp32) vs the CPU reference (double), tolerance %.0e of max|ref|\n",
           VAE_GPU_TOL);
    if (small) {
        test_vae_gpu_encode_case("a", 9, 16, 16);
        test_vae_gpu_encode_case("c", 9, 8, 8);
    } else {
        test_vae_gpu_encode_case("a", 0, 0, 0);
        test_vae_gpu_encode_case("b", 0, 0, 0);
        test_vae_gpu_encode_case("c", 0, 0, 0);
    }
}
