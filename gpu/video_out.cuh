// gpu/video_out.cuh: sample_tmd's --vae: every sampled latent [C, T, h, w] decoded by the Wan2.1 VAE on the GPU
// (gpu/vae_gpu.cuh) and written as an mp4 through ffmpeg (lib/mp4.h). Without ffmpeg on the PATH it says so once and
// writes nothing (the caller still writes the latents as .npy).
//   video_out_init    loads the VAE (cpu/vae_cpu.h's loader), checks it fits the latents, plans the GPU decoder
//   video_out_name    NAME.npy -> NAME.mp4 (one sample) or NAME-b.mp4 (sample b of a batch)
//   video_out_write   one latent -> one mp4
// Latents are the DiT's, normalized with Wan2.1's latents_mean / latents_std (z_dim 16), unless raw (the VAE's own
// latents, as diffusers' decode takes them; any z_dim).
#pragma once
#include "vae_gpu.cuh"  // the decoder
#include "../lib/mp4.h" // mp4_write_video, mp4_have_ffmpeg

// the flags: --vae FILE, --vae-raw, --fps
typedef struct {
    const char* vae;
    int raw, fps;
} VideoOutOpts;

typedef struct {
    Vae v; // the host model (the GPU decoder's layout)
    VaeGpu g;
    int T, raw, fps, ffmpeg;
    float* video; // one decoded video [3, T', H, W] on the host
    size_t nvideo;
} VideoOut;

// latents of [C, T, h, w]. Prints the config and plan; one line when ffmpeg is missing.
static int video_out_init(VideoOut* o, const VideoOutOpts* opt, int C, int T, int h, int w, char* err) {
    memset(o, 0, sizeof(*o));
    const char* vae_path = opt->vae;
    int raw = opt->raw, fps = opt->fps;
    if (vae_load(&o->v, vae_path, NULL, err)) return -1;
    if (C != o->v.c.z_dim) {
        snprintf(
            err, ST_ERRLEN,
            "--vae %s: the samples have %d channels but this VAE's latent has z_dim %d; --vae decodes the latents of "
            "a Wan model (16 channels; the built-in world's models sample pixels and need no VAE)",
            vae_path, C, o->v.c.z_dim);
        vae_free(&o->v);
        return -1;
    }
    if (!raw && o->v.c.z_dim != 16) {
        snprintf(
            err, ST_ERRLEN,
            "--vae %s: z_dim %d; Wan2.1's latents_mean/latents_std (the DiT's normalized latents) are for z_dim 16: "
            "give --vae-raw if the latents are this VAE's own",
            vae_path, o->v.c.z_dim);
        vae_free(&o->v);
        return -1;
    }
    if (fps < 1) {
        snprintf(err, ST_ERRLEN, "--fps %d: expected a positive frame rate (Wan2.1 makes 16)", fps);
        vae_free(&o->v);
        return -1;
    }
    o->T = T;
    o->raw = raw;
    o->fps = fps;
    int s = vae_spatial_factor(&o->v.c);
    o->nvideo = (size_t)3 * vae_decoded_frames(&o->v.c, T) * h * s * w * s;
    o->video = (float*)malloc(sizeof(float) * o->nvideo);
    if (!o->video) {
        snprintf(err, ST_ERRLEN, "out of host memory for a decoded video of %zu floats", o->nvideo);
        vae_free(&o->v);
        return -1;
    }
    if (vae_gpu_init(&o->g, &o->v, h, w, err)) {
        free(o->video);
        vae_free(&o->v);
        return -1;
    }
    vae_config_print(&o->v.c, stdout);
    printf("--vae: latents [%d, %d, %d, %d]%s -> videos [3, %d, %d, %d] at %d fps\n", C, T, h, w,
           raw ? " (raw)" : " (normalized)", vae_decoded_frames(&o->v.c, T), h * s, w * s, fps);
    o->ffmpeg = mp4_have_ffmpeg();
    if (!o->ffmpeg)
        printf(
            "--vae: ffmpeg not found on the PATH: no mp4 is written, the latents are (.npy); install ffmpeg for mp4\n");
    return 0;
}

static void video_out_free(VideoOut* o) {
    vae_gpu_free(&o->g);
    vae_free(&o->v);
    free(o->video);
    memset(o, 0, sizeof(*o));
}

// the mp4 beside out (NAME.npy or NAME): NAME.mp4 for a batch of one, NAME-b.mp4 otherwise
static void video_out_name(char* dst, size_t n, const char* out, int b, int batch) {
    size_t len = strlen(out);
    if (len >= 4 && !strcmp(out + len - 4, ".npy")) len -= 4;
    if (batch == 1)
        snprintf(dst, n, "%.*s.mp4", (int)len, out);
    else
        snprintf(dst, n, "%.*s-%d.mp4", (int)len, out, b);
}

// latent [C, T, h, w] (the sampler's) -> path. Returns 0 (also when ffmpeg is missing: init said so), or 1 with err.
static int video_out_write(VideoOut* o, const float* latent, const char* path, char* err) {
    if (!o->ffmpeg) return 0;
    const VaeConfig* c = &o->v.c;
    int s = vae_spatial_factor(c);
    double t0 = now_s();
    if (vae_gpu_decode(&o->g, o->video, latent, o->T, !o->raw, NULL, NULL, err)) return 1;
    double t1 = now_s();
    char merr[MP4_ERRLEN];
    if (mp4_write_video(path, o->video, vae_decoded_frames(c, o->T), o->g.h * s, o->g.w * s, o->fps, 0, merr)) {
        snprintf(err, ST_ERRLEN, "%s", merr);
        return 1;
    }
    printf("wrote %s (%d frames; wall time: VAE decode %.2f s, mp4 %.2f s)\n", path, vae_decoded_frames(c, o->T),
           t1 - t0, now_s() - t1);
    return 0;
}
