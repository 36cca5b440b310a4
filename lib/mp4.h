// lib/mp4.h: video files through ffmpeg on the PATH, the one place the project writes and reads mp4 (the world's
// contact-sheet video, ./test_tmd vae decode --mp4 and encode of an mp4, sample_tmd --vae). Frames travel as raw
// rgb24 through a pipe; nothing is linked against FFmpeg's libraries.
//   mp4_have_ffmpeg    whether `ffmpeg -version` runs
//   mp4_pipe_open      ffmpeg reading w x h rgb24 frames from the returned pipe into `path` (lossy or lossless)
//   mp4_pipe_close     waits for ffmpeg and says whether it succeeded
//   mp4_write_video    video [3, T, H, W] in [-1, 1] -> path (pixel value round((x + 1) * 127.5), clamped to 0..255)
//   mp4_read_rgb24     path -> frames [T][H][W][3] (ffprobe for the size, ffmpeg to decode)
// Encodings: the default is ffmpeg's default codec for .mp4 (H.264 through libx264 where ffmpeg has it) in yuv420p
// at its default quality, what players and VBench's decoders take (odd sizes are padded by one pixel); lossless = 1 is H.264 in RGB at -qp 0 (libx264rgb), which decodes to the same rgb24
// bytes (the round trip test in lib/io_tests.h checks exactly that).
#pragma once
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__cplusplus) && !defined(_POSIX_C_SOURCE)
FILE* popen(const char* command, const char* mode);   // POSIX, hidden by a strict -std=c11 when stdio.h came first
int pclose(FILE* stream);
#endif

#define MP4_ERRLEN 1024   // err buffers hold this much (as ST_ERRLEN and PNG_ERRLEN); paths are cut to 400 bytes in messages

static inline int mp4_have_ffmpeg(void) {
    FILE* p = popen("ffmpeg -version 2>/dev/null", "r");
    if (!p) return 0;
    char line[256] = {0};
    int ok = fgets(line, sizeof(line), p) != NULL && strstr(line, "ffmpeg version") != NULL;
    while (fgets(line, sizeof(line), p)) {
    }
    return pclose(p) == 0 && ok;
}

// The pixel of a value in [-1, 1] (the decoded video's range): round((x + 1) * 127.5), clamped
static inline unsigned char mp4_pixel(float v) {
    v = (v + 1) * 127.5f;
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
}

#ifdef SIGPIPE
static void (*mp4_old_sigpipe_)(int) = SIG_DFL;   // the handler mp4_pipe_open replaced, put back by mp4_pipe_close
#endif

// Starts ffmpeg writing `path` from w x h rgb24 frames written to the returned pipe (SIGPIPE is ignored until
// mp4_pipe_close, so a dying ffmpeg makes fwrite fail instead of killing the caller). NULL with err on failure; *absent
// is set when the failure is that ffmpeg is not on the PATH.
static inline FILE* mp4_pipe_open(const char* path, int w, int h, int fps, int lossless, int* absent, char* err) {
    *absent = 0;
    if (w < 1 || h < 1 || fps < 1) { snprintf(err, MP4_ERRLEN, "%.400s: frames of %dx%d at %d fps: expected positive sizes and rate", path, w, h, fps); return NULL; }
    if (strchr(path, '\'')) { snprintf(err, MP4_ERRLEN, "%.400s: the mp4 path must not contain a quote", path); return NULL; }
    if (!mp4_have_ffmpeg()) {
        *absent = 1;
        snprintf(err, MP4_ERRLEN, "ffmpeg not found on the PATH: %.400s not written (install ffmpeg, e.g. apt-get install ffmpeg)", path);
        return NULL;
    }
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "ffmpeg -y -loglevel error -f rawvideo -pix_fmt rgb24 -s %dx%d -r %d -i - %s '%s'", w, h, fps,
             lossless ? "-c:v libx264rgb -qp 0 -pix_fmt rgb24" : "-pix_fmt yuv420p -vf 'pad=ceil(iw/2)*2:ceil(ih/2)*2'", path);
#ifdef SIGPIPE
    mp4_old_sigpipe_ = signal(SIGPIPE, SIG_IGN);
#endif
    FILE* p = popen(cmd, "w");
    if (!p) snprintf(err, MP4_ERRLEN, "%.400s: cannot start ffmpeg", path);
    return p;
}

// ok: every frame was written. Returns 0, or 1 with err when a write or ffmpeg failed.
static inline int mp4_pipe_close(FILE* p, const char* path, int ok, char* err) {
    int rc = pclose(p);
#ifdef SIGPIPE
    signal(SIGPIPE, mp4_old_sigpipe_);
#endif
    if (!ok || rc != 0) { snprintf(err, MP4_ERRLEN, "%.400s: ffmpeg failed (exit status %d%s)", path, rc, ok ? "" : ", a frame could not be written"); return 1; }
    return 0;
}

// Writes video [3, T, H, W] in [-1, 1] as an mp4 of T frames at fps. Returns 0; 2 when ffmpeg is not on the PATH (err
// says so); 1 on any other failure.
static inline int mp4_write_video(const char* path, const float* video, int T, int H, int W, int fps, int lossless, char* err) {
    int absent;
    if (T < 1) { snprintf(err, MP4_ERRLEN, "%.400s: a video needs at least one frame", path); return 1; }
    FILE* p = mp4_pipe_open(path, W, H, fps, lossless, &absent, err);
    if (!p) return absent ? 2 : 1;
    size_t plane = (size_t)H * W;
    unsigned char* img = (unsigned char*)malloc(plane * 3);
    int ok = img != NULL;
    for (int t = 0; t < T && ok; t++) {
        for (size_t i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) img[3 * i + c] = mp4_pixel(video[((size_t)c * T + t) * plane + i]);
        ok = fwrite(img, 1, plane * 3, p) == plane * 3;
    }
    free(img);
    return mp4_pipe_close(p, path, ok, err);
}

// Reads every frame of a video file as rgb24 [T][H][W][3] (malloc'ed). Returns 0, or 1 with err (2 when ffmpeg or
// ffprobe is not on the PATH).
static inline int mp4_read_rgb24(const char* path, unsigned char** frames, int* T, int* H, int* W, char* err) {
    if (strchr(path, '\'')) { snprintf(err, MP4_ERRLEN, "%.400s: the path must not contain a quote", path); return 1; }
    if (!mp4_have_ffmpeg()) { snprintf(err, MP4_ERRLEN, "%.400s: reading a video needs ffmpeg and ffprobe on the PATH", path); return 2; }
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x '%s'", path);
    FILE* p = popen(cmd, "r");
    int w = 0, h = 0;
    if (!p || fscanf(p, "%dx%d", &w, &h) != 2 || w <= 0 || h <= 0) { if (p) pclose(p); snprintf(err, MP4_ERRLEN, "%.400s: ffprobe could not read the frame size", path); return 1; }
    pclose(p);
    snprintf(cmd, sizeof(cmd), "ffmpeg -v error -i '%s' -f rawvideo -pix_fmt rgb24 -", path);
    p = popen(cmd, "r");
    if (!p) { snprintf(err, MP4_ERRLEN, "%.400s: cannot start ffmpeg", path); return 1; }
    size_t fsz = (size_t)3 * w * h, cap = 16, n = 0;
    unsigned char* raw = (unsigned char*)malloc(cap * fsz);
    while (raw && fread(raw + n * fsz, 1, fsz, p) == fsz) {
        if (++n == cap) { cap *= 2; unsigned char* r2 = (unsigned char*)realloc(raw, cap * fsz); if (!r2) { free(raw); raw = NULL; } else raw = r2; }
    }
    int rc = pclose(p);
    if (!raw || n == 0 || rc != 0) { free(raw); snprintf(err, MP4_ERRLEN, "%.400s: ffmpeg decoded %zu frames (exit status %d)", path, n, rc); return 1; }
    *frames = raw; *T = (int)n; *H = h; *W = w;
    return 0;
}
