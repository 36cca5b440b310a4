// cpu/vae_cli.h: ./test_tmd vae decode | encode | info — the Wan2.1 VAE on the CPU from the command line.
//   ./test_tmd vae decode --weights VAE --latent z.npy --out video.npy [--mp4 video.mp4] [--normalized 1]
//   ./test_tmd vae encode --weights VAE --video v.npy|v.mp4 --out z.npy [--normalized 1]
//   ./test_tmd vae info --weights VAE
// VAE: diffusers' vae/diffusion_pytorch_model.safetensors, or the official Wan2.1_VAE.pth converted to .safetensors
// with PyTorch (never unpickled here). Arrays carry no batch axis: video [3, T, H, W] in [-1, 1], latent
// [z_dim, T', H/8, W/8]; latents are raw (diffusers' encode mean / decode input) unless --normalized 1.
#pragma once
#include "vae_cpu.h"
#include "../lib/flags.h"
#include "../lib/npy.h"
#include "../lib/mp4.h"      // mp4_write_video, mp4_read_rgb24: video files through ffmpeg

// peak resident memory of this process (VmHWM), in MB; -1 where /proc is not there
static double vae_rss_peak_mb(void) {
    FILE* f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256]; double kb = -1;
    while (fgets(line, sizeof(line), f)) if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024;
}

// an mp4 (through ffprobe/ffmpeg on the PATH, lib/mp4.h) into [3, T, H, W] in [-1, 1]
static int vae_read_mp4(const char* path, double** video, int* T, int* H, int* W, char* err) {
    unsigned char* raw = NULL; int n = 0, h = 0, w = 0;
    int rc = mp4_read_rgb24(path, &raw, &n, &h, &w, err);
    if (rc) {
        if (rc == 2) snprintf(err, ST_ERRLEN, "%s: reading mp4 needs ffmpeg and ffprobe on the PATH; or convert the video to a float32 .npy [3, T, H, W] in [-1, 1]", path);
        return -1;
    }
    size_t fsz = (size_t)3 * w * h;
    double* v = (double*)malloc(sizeof(double) * 3 * n * w * h);
    for (size_t t = 0; t < (size_t)n; t++)
        for (size_t i = 0; i < (size_t)w * h; i++)
            for (int c = 0; c < 3; c++) v[((size_t)c * n + t) * w * h + i] = raw[t * fsz + 3 * i + c] / 127.5 - 1.0;
    free(raw);
    *video = v; *T = n; *H = h; *W = w;
    return 0;
}

static int vae_main(int argc, char** argv) {
    const char* sub = argc > 0 ? argv[0] : "";
    const char *weights = NULL, *latent = NULL, *video = NULL, *outp = NULL, *mp4 = NULL;
    int normalized = 0, fps = 16;
    Flag flags[] = {
        FLAG_STR("--weights", &weights, "the VAE: .safetensors (diffusers or official names), index.json or directory"),
        FLAG_STR("--latent", &latent, "decode: float32 .npy [z_dim, T', h, w]"),
        FLAG_STR("--video", &video, "encode: float32 .npy [3, T, H, W] in [-1, 1], or an .mp4 (ffmpeg)"),
        FLAG_STR("--out", &outp, "decode: video .npy [3, T, H, W]; encode: latent .npy [z_dim, T', h, w]"),
        FLAG_STR("--mp4", &mp4, "decode: also write an mp4 through ffmpeg (when on the PATH)"),
        FLAG_INT("--fps", &fps, "frames per second of --mp4 (Wan2.1 makes 16)"),
        FLAG_BOOL("--normalized", &normalized, "latents as the DiT sees them: (z - latents_mean) / latents_std"),
        FLAG_END};
    const char* synopsis = "usage: ./test_tmd vae decode --weights VAE --latent z.npy --out video.npy [--mp4 video.mp4]\n"
                           "       ./test_tmd vae encode --weights VAE --video v.npy|v.mp4 --out z.npy\n"
                           "       ./test_tmd vae info --weights VAE\n"
                           "The Wan2.1 VAE on the CPU in double precision (exact to diffusers' AutoencoderKLWan).";
    if (strcmp(sub, "decode") && strcmp(sub, "encode") && strcmp(sub, "info")) {
        flags_usage(flags, synopsis, strcmp(sub, "--help") && strcmp(sub, "-h") ? stderr : stdout);
        return strcmp(sub, "--help") && strcmp(sub, "-h") ? 2 : 0;
    }
    int rc = flags_parse(flags, argc, argv, 1, synopsis);
    if (rc) return rc == 1 ? 0 : 2;
    char err[ST_ERRLEN];
    if (!weights) { fprintf(stderr, "error: --weights is required (diffusers: Wan2.1-T2V-1.3B-Diffusers/vae/diffusion_pytorch_model.safetensors)\n"); return 2; }
    if (!strcmp(sub, "decode") && (!latent || !outp)) { fprintf(stderr, "error: decode needs --latent and --out\n"); return 2; }
    if (!strcmp(sub, "encode") && (!video || !outp)) { fprintf(stderr, "error: encode needs --video and --out\n"); return 2; }
    Vae v;
    double t0 = now_s();
    if (vae_load(&v, weights, NULL, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    vae_config_print(&v.c, stdout);
    printf("%zu parameters loaded in %.1f s\n", vae_num_params(&v.c), now_s() - t0);
    if (!strcmp(sub, "info")) { vae_free(&v); return 0; }
    int s = vae_spatial_factor(&v.c);
    if (!strcmp(sub, "decode")) {
        float* zf = NULL; int nd = 0; int64_t sh[ST_MAXDIM];
        if (npy_read(latent, &zf, &nd, sh, err) || vae_check_latent_shape(&v.c, nd, sh, latent, err)) { fprintf(stderr, "error: %s\n", err); free(zf); vae_free(&v); return 1; }
        int T = (int)sh[1], h = (int)sh[2], w = (int)sh[3], To = vae_decoded_frames(&v.c, T);
        size_t nv = (size_t)3 * To * h * s * w * s;
        float* out = (float*)malloc(sizeof(float) * nv);
        printf("decode: latent [%d, %d, %d, %d]%s -> video [3, %d, %d, %d]\n", v.c.z_dim, T, h, w, normalized ? " (normalized)" : "", To, h * s, w * s);
        double t1 = now_s(), f1 = vae_flops;
        rc = vae_decode_f(&v, out, zf, T, h, w, normalized, stdout, err);
        free(zf);
        if (rc) { fprintf(stderr, "error: %s\n", err); free(out); vae_free(&v); return 1; }
        double dt = now_s() - t1;
        printf("decoded %d frames in %.1f s (%.2f s per frame, %.2f GFLOP/s); memory peak: activations + caches %.1f MB, process %.1f MB\n",
               To, dt, dt / To, (vae_flops - f1) / dt * 1e-9, vae_mem_peak / 1048576.0, vae_rss_peak_mb());
        int64_t os[4] = {3, To, h * s, w * s};
        if (npy_write(outp, out, 4, os, err)) { fprintf(stderr, "error: %s\n", err); free(out); vae_free(&v); return 1; }
        printf("wrote %s\n", outp);
        if (mp4) {
            char perr[MP4_ERRLEN];
            int m = mp4_write_video(mp4, out, To, h * s, w * s, fps, 0, perr);
            if (m) fprintf(stderr, "%s: %s\n", m == 2 ? "warning" : "error", perr);
            else printf("wrote %s\n", mp4);
            if (m == 1) rc = 1;
        }
        free(out);
    } else {
        double* x = NULL; int T = 0, H = 0, W = 0;
        if (st_ends_with(video, ".mp4")) { if (vae_read_mp4(video, &x, &T, &H, &W, err)) { fprintf(stderr, "error: %s\n", err); vae_free(&v); return 1; } }
        else {
            float* xf = NULL; int nd = 0; int64_t sh[ST_MAXDIM];
            if (npy_read(video, &xf, &nd, sh, err)) { fprintf(stderr, "error: %s\n", err); vae_free(&v); return 1; }
            if (nd != 4 || sh[0] != 3) {
                char got[256]; st_shape_str(got, nd, sh);
                fprintf(stderr, "error: %s: video of shape %s, expected [3, T, H, W] in [-1, 1] (RGB first, no batch axis)\n", video, got);
                free(xf); vae_free(&v); return 1;
            }
            T = (int)sh[1]; H = (int)sh[2]; W = (int)sh[3];
            size_t n = (size_t)3 * T * H * W;
            x = (double*)malloc(sizeof(double) * n);
            for (size_t i = 0; i < n; i++) x[i] = xf[i];
            free(xf);
        }
        int Tl = vae_encoded_frames(&v.c, T), h = H / s, w = W / s;
        size_t nz = (size_t)v.c.z_dim * Tl * h * w;
        double* z = (double*)malloc(sizeof(double) * (nz ? nz : 1));
        printf("encode: video [3, %d, %d, %d] -> latent [%d, %d, %d, %d]%s\n", T, H, W, v.c.z_dim, Tl, h, w, normalized ? " (normalized)" : "");
        double t1 = now_s();
        rc = vae_encode(&v, z, x, T, H, W, stdout, err);
        if (!rc && normalized) rc = vae_normalize(z, v.c.z_dim, nz / v.c.z_dim, 1, err);
        free(x);
        if (rc) { fprintf(stderr, "error: %s\n", err); free(z); vae_free(&v); return 1; }
        printf("encoded %d frames in %.1f s; memory peak: activations + caches %.1f MB, process %.1f MB\n", T, now_s() - t1,
               vae_mem_peak / 1048576.0, vae_rss_peak_mb());
        float* zf = (float*)malloc(sizeof(float) * nz);
        for (size_t i = 0; i < nz; i++) zf[i] = (float)z[i];
        int64_t zs[4] = {v.c.z_dim, Tl, h, w};
        if (npy_write(outp, zf, 4, zs, err)) { fprintf(stderr, "error: %s\n", err); rc = 1; }
        else printf("wrote %s\n", outp);
        free(zf); free(z);
    }
    vae_free(&v);
    return rc;
}
