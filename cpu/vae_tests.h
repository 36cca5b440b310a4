// cpu/vae_tests.h: tests of the Wan2.1 VAE (cpu/vae_cpu.h). test_vae(tmpdir) runs them all through lib/testing.h in
// a few seconds: the real Wan2.1 VAE's tensor list against diffusers', the peer vectors of three small random
// configs (dev/peer/make_vae_vectors.py: diffusers AutoencoderKLWan in float32 and in true float64), the chunked
// cache's memory, the real preset's shapes chained end to end on a tiny frame, and bad inputs.
#pragma once
#include "vae_cpu.h"
#include "../lib/npy.h"
#include "../lib/rng.h"
#include "../lib/testing.h"
#include "vae_cli.h"   // vae_read_mp4 (and lib/mp4.h)

#define VAE_PEER_DIR "dev/peer/vectors"

// reads a float32 .npy of the given rank (any sizes) as doubles; shape into sh
static double* vt_read_npy(const char* name, int ndim, int64_t* sh, size_t* n_out) {
    char path[512], err[ST_ERRLEN]; snprintf(path, sizeof(path), "%s/%s", VAE_PEER_DIR, name);
    float* f = NULL; int nd = 0;
    if (npy_read(path, &f, &nd, sh, err)) { EXPECT(0, "%s (run dev/peer/make_vae_vectors.py, see dev/peer/README.md)", err); return NULL; }
    if (nd != ndim) { EXPECT(0, "%s: %d dimensions, expected %d", path, nd, ndim); free(f); return NULL; }
    size_t n = 1; for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    double* d = (double*)malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    free(f); if (n_out) *n_out = n;
    return d;
}

// the first n frames of x [C, T, H, W] as a new [C, n, H, W] array
static double* vt_frames(const double* x, int C, int T, int n, size_t plane) {
    double* y = (double*)malloc(sizeof(double) * C * n * plane);
    for (int c = 0; c < C; c++) memcpy(y + (size_t)c * n * plane, x + (size_t)c * T * plane, sizeof(double) * n * plane);
    return y;
}

// every tensor of the real Wan2.1 VAE (official name, diffusers name, shape) against AutoencoderKLWan()'s state_dict
static void test_vae_layout(void) {
    printf("\n[vae] the Wan2.1 VAE's tensors vs diffusers AutoencoderKLWan() (%s/vae_wan21_shapes.txt)\n", VAE_PEER_DIR);
    char path[512]; snprintf(path, sizeof(path), "%s/vae_wan21_shapes.txt", VAE_PEER_DIR);
    FILE* f = fopen(path, "r");
    EXPECT(f != NULL, "cannot open %s (run dev/peer/make_vae_vectors.py)", path);
    if (!f) return;
    VaeTensor* tl = (VaeTensor*)malloc(sizeof(VaeTensor) * VAE_MAX_TENSORS);
    size_t total;
    int nt = vae_layout(&VAE_WAN21, tl, NULL, NULL, &total);
    char line[512]; int nfile = -1; long long pfile = -1; int n = 0, bad = 0;
    int* seen = (int*)calloc((size_t)nt, sizeof(int));
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#') { char* p = strstr(line, "): "); if (p) sscanf(p + 3, "%d tensors, %lld parameters", &nfile, &pfile); continue; }
        char on[128], dn[128], shp[128];
        if (sscanf(line, "%127s %127s %127[^\n]", on, dn, shp) != 3) continue;
        n++;
        int found = -1;
        for (int i = 0; i < nt; i++) if (!strcmp(tl[i].name, on)) found = i;
        char mine[128]; vae_shape_str_(mine, sizeof(mine), found >= 0 ? tl[found].shape : NULL, found >= 0 ? tl[found].ndim : 0);
        if (found < 0 || strcmp(tl[found].dname, dn) || strcmp(mine, shp)) {
            if (bad++ < 5) printf("  mismatch: diffusers %s %s %s, here %s %s\n", on, dn, shp, found >= 0 ? tl[found].dname : "(missing)", mine);
        } else seen[found]++;
    }
    fclose(f);
    int unseen = 0; for (int i = 0; i < nt; i++) unseen += seen[i] != 1;
    printf("  %d tensors (%zu parameters) here, %d (%lld) in diffusers; %d mismatched, %d not matched exactly once\n", nt, total, nfile, pfile, bad, unseen);
    EXPECT(bad == 0 && unseen == 0 && n == nt && nfile == nt && pfile == (long long)total, "the Wan2.1 VAE layout differs from diffusers'");
    free(seen); free(tl);
}

typedef struct { const char* tag; int T, Tl; } VaePeerCase;

// one config: both name sets, encode of every 1+4k prefix and decode of every latent prefix vs float32 diffusers,
// the whole video and latent vs float64 diffusers
static void test_vae_peer_case(const char* tag, int has_official) {
    char name[128], path[512], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%s/vae_%s_diffusers.safetensors", VAE_PEER_DIR, tag);
    Vae v;
    if (vae_load(&v, path, NULL, err)) { EXPECT(0, "%s", err); return; }
    printf("  vae_%s: ", tag); vae_config_print(&v.c, stdout);
    if (has_official) {
        snprintf(path, sizeof(path), "%s/vae_%s_official.safetensors", VAE_PEER_DIR, tag);
        Vae o;
        if (vae_load(&o, path, &v.c, err)) EXPECT(0, "%s", err);
        else {
            size_t np = vae_num_params(&v.c), diff = 0;
            for (size_t i = 0; i < np; i++) diff += o.params[i] != v.params[i];
            printf("  official names load to the same %zu parameters: %zu differ\n", np, diff);
            EXPECT(diff == 0, "official and diffusers checkpoints differ in %zu parameters", diff);
            vae_free(&o);
        }
    }
    int64_t vs[4], ls[4]; size_t nv, nl;
    snprintf(name, sizeof(name), "vae_%s_video.npy", tag); double* video = vt_read_npy(name, 4, vs, &nv);
    snprintf(name, sizeof(name), "vae_%s_latent.npy", tag); double* latent = vt_read_npy(name, 4, ls, &nl);
    if (!video || !latent) { free(video); free(latent); vae_free(&v); return; }
    int T = (int)vs[1], H = (int)vs[2], W = (int)vs[3], Tl = (int)ls[1], h = (int)ls[2], w = (int)ls[3], s = vae_spatial_factor(&v.c);
    EXPECT(ls[0] == v.c.z_dim && h * s == H && w * s == W, "vae_%s: latent [%lld, %d, %d, %d] does not fit the config", tag, (long long)ls[0], Tl, h, w);
    double* z = NULL; double* x = NULL;
    for (int n = 1; n <= T; n += VAE_CHUNK) {   // encode: the first frame alone, then chunks of 4
        int64_t es[4]; size_t ne;
        snprintf(name, sizeof(name), "vae_%s_enc_T%d.npy", tag, n);
        double* ref = vt_read_npy(name, 4, es, &ne);
        if (!ref) continue;
        double* vin = vt_frames(video, 3, T, n, (size_t)H * W);
        int nl_ = vae_encoded_frames(&v.c, n);
        z = (double*)malloc(sizeof(double) * v.c.z_dim * nl_ * h * w);
        if (es[1] != nl_) EXPECT(0, "%s: %lld latent frames, the config gives %d", name, (long long)es[1], nl_);
        else if (vae_encode(&v, z, vin, n, H, W, NULL, err)) EXPECT(0, "%s", err);
        else { snprintf(path, sizeof(path), "encode %d frames -> %d vs diffusers fp32", n, nl_); expect_close_scaled(path, z, ref, (long)ne, 1e-5); }
        free(ref); free(vin); free(z); z = NULL;
    }
    for (int n = 1; n <= Tl; n++) {            // decode: one latent frame per chunk
        int64_t ds[4]; size_t nd;
        snprintf(name, sizeof(name), "vae_%s_dec_T%d.npy", tag, n);
        double* ref = vt_read_npy(name, 4, ds, &nd);
        if (!ref) continue;
        double* zin = vt_frames(latent, v.c.z_dim, Tl, n, (size_t)h * w);
        int nf = vae_decoded_frames(&v.c, n);
        x = (double*)malloc(sizeof(double) * 3 * nf * H * W);
        if (ds[1] != nf) EXPECT(0, "%s: %lld frames, the config gives %d", name, (long long)ds[1], nf);
        else if (vae_decode(&v, x, zin, n, h, w, NULL, err)) EXPECT(0, "%s", err);
        else {
            size_t clamped = 0; for (size_t i = 0; i < nd; i++) clamped += fabs(ref[i]) >= 1;
            snprintf(path, sizeof(path), "decode %d -> %d frames vs diffusers fp32 (%.1f%% at the clamp)", n, nf, 100.0 * clamped / nd);
            expect_close_scaled(path, x, ref, (long)nd, 1e-5);
        }
        free(ref); free(zin); free(x); x = NULL;
    }
    // float64: diffusers with model.double() (its one fp32 round trip in WanUpsample removed)
    StFile f;
    snprintf(path, sizeof(path), "%s/vae_%s_f64.safetensors", VAE_PEER_DIR, tag);
    if (st_open(&f, path, err)) EXPECT(0, "%s", err);
    else {
        const StTensor *te = st_find(&f, "enc"), *td = st_find(&f, "dec");
        int nle = vae_encoded_frames(&v.c, T), nfd = vae_decoded_frames(&v.c, Tl);
        size_t ne = (size_t)v.c.z_dim * nle * h * w, nd = (size_t)3 * nfd * H * W;
        EXPECT(te && td && (size_t)te->numel == ne && (size_t)td->numel == nd, "%s: expected enc of %zu and dec of %zu elements", path, ne, nd);
        if (te && td && (size_t)te->numel == ne && (size_t)td->numel == nd) {
            double* e64 = (double*)malloc(sizeof(double) * ne); double* d64 = (double*)malloc(sizeof(double) * nd);
            st_read_double(&f, te, e64, err); st_read_double(&f, td, d64, err);
            z = (double*)malloc(sizeof(double) * ne); x = (double*)malloc(sizeof(double) * nd);
            if (vae_encode(&v, z, video, T, H, W, NULL, err)) EXPECT(0, "%s", err);
            else { snprintf(name, sizeof(name), "encode %d frames vs diffusers float64", T); expect_close_scaled(name, z, e64, (long)ne, 1e-12); }
            if (vae_decode(&v, x, latent, Tl, h, w, NULL, err)) EXPECT(0, "%s", err);
            else { snprintf(name, sizeof(name), "decode %d latent frames vs diffusers float64", Tl); expect_close_scaled(name, x, d64, (long)nd, 1e-12); }
            free(e64); free(d64); free(z); free(x);
        }
        st_close(&f);
    }
    if (v.c.z_dim == 16) {  // --normalized: the float API on (z - mean) / std must decode what the raw latent decodes
        size_t per = (size_t)h * w * 2, nz = (size_t)16 * per, nd = (size_t)3 * vae_decoded_frames(&v.c, 2) * H * W;
        double* z2 = vt_frames(latent, 16, Tl, 2, (size_t)h * w); double* raw = (double*)malloc(sizeof(double) * nd);
        float* zf = (float*)malloc(sizeof(float) * nz); float* xf = (float*)malloc(sizeof(float) * nd);
        int rc = vae_decode(&v, raw, z2, 2, h, w, NULL, err);
        if (!rc) rc = vae_normalize(z2, 16, per, 1, err);
        for (size_t i = 0; i < nz; i++) zf[i] = (float)z2[i];
        if (!rc) rc = vae_decode_f(&v, xf, zf, 2, h, w, 1, NULL, err);
        if (rc) EXPECT(0, "%s", err);
        else {
            double* xd = (double*)malloc(sizeof(double) * nd);
            for (size_t i = 0; i < nd; i++) xd[i] = xf[i];
            expect_close_scaled("float API, normalized latent vs raw decode", xd, raw, (long)nd, 1e-5);
            free(xd);
        }
        free(z2); free(raw); free(zf); free(xf);
    }
    free(video); free(latent); vae_free(&v);
}

// random weights of a sensible scale, no norm trivially one
static void vt_random(Vae* v, uint64_t seed, int uniform) {   // uniform: same mean and std, ~10x cheaper (127M values)
    VaeTensor* tl = (VaeTensor*)malloc(sizeof(VaeTensor) * VAE_MAX_TENSORS);
    int nt = vae_layout(&v->c, tl, NULL, NULL, NULL);
    Rng r = rng_make(seed);
    for (int i = 0; i < nt; i++) {
        double* p = v->params + tl[i].offset;
        int gamma = strstr(tl[i].name, "gamma") != NULL, bias = strstr(tl[i].name, "bias") != NULL;
        double sd = gamma || bias ? 0.1 : 1.0 / sqrt((double)(tl[i].numel / (size_t)tl[i].shape[0]));
        for (size_t j = 0; j < tl[i].numel; j++) p[j] = (gamma ? 1 : 0) + sd * (uniform ? 1.7320508075688772 * (2 * rng_uniform(&r) - 1) : rng_normal(&r));
    }
    free(tl);
}

// the cache keeps memory flat: decoding 1 or 4 latent frames (or encoding 5 or 13 frames) peaks at the same bytes
static void test_vae_memory(void) {
    printf("\n[vae] chunked cache: the memory peak does not grow with the number of frames\n");
    VaeConfig c = {4, 4, 3, {1, 2, 2}, 1, {1, 0}};
    char err[ST_ERRLEN]; Vae v;
    if (vae_init(&v, &c, err)) { EXPECT(0, "%s", err); return; }
    vt_random(&v, 3, 0);
    int h = 4, w = 6, s = vae_spatial_factor(&c);
    size_t peak[2]; int lat[2] = {2, 6};   // from the second latent frame on, every cache exists
    for (int k = 0; k < 2; k++) {
        double* z = (double*)calloc((size_t)c.z_dim * lat[k] * h * w, sizeof(double));
        double* x = (double*)malloc(sizeof(double) * 3 * vae_decoded_frames(&c, lat[k]) * h * s * w * s);
        vae_mem_peak = vae_mem_now;
        if (vae_decode(&v, x, z, lat[k], h, w, NULL, err)) EXPECT(0, "%s", err);
        peak[k] = vae_mem_peak;
        free(z); free(x);
    }
    printf("  decode peak (activations + caches, the output aside): %zu bytes for %d latent frames, %zu for %d\n", peak[0], lat[0], peak[1], lat[1]);
    EXPECT(peak[1] == peak[0], "decode peak grew from %zu to %zu bytes", peak[0], peak[1]);
    int fr[2] = {5, 21};
    for (int k = 0; k < 2; k++) {
        double* x = (double*)calloc((size_t)3 * fr[k] * 16 * 24, sizeof(double));
        double* z = (double*)malloc(sizeof(double) * c.z_dim * vae_encoded_frames(&c, fr[k]) * 4 * 6);
        vae_mem_peak = vae_mem_now;
        if (vae_encode(&v, z, x, fr[k], 16, 24, NULL, err)) EXPECT(0, "%s", err);
        peak[k] = vae_mem_peak;
        free(z); free(x);
    }
    printf("  encode peak: %zu bytes for %d frames, %zu for %d\n", peak[0], fr[0], peak[1], fr[1]);
    EXPECT(peak[1] == peak[0], "encode peak grew from %zu to %zu bytes", peak[0], peak[1]);
    vae_free(&v);
}

// the real preset's widths chained end to end (1 + 4 frames at 16x16): every tensor shape of the Wan2.1 VAE is used
static void test_vae_real_shapes(void) {
    printf("\n[vae] the Wan2.1 preset (random weights) chained: 5 frames of 16x16 -> latent -> video\n");
    char err[ST_ERRLEN]; Vae v;
    if (vae_init(&v, &VAE_WAN21, err)) { EXPECT(0, "%s", err); return; }
    vt_random(&v, 5, 1);
    int T = 5, H = 16, W = 16, Tl = vae_encoded_frames(&v.c, T), h = H / 8, w = W / 8, Td = vae_decoded_frames(&v.c, Tl);
    double* x = (double*)malloc(sizeof(double) * 3 * T * H * W);
    Rng r = rng_make(9);
    for (int i = 0; i < 3 * T * H * W; i++) x[i] = 2 * rng_uniform(&r) - 1;
    double* z = (double*)malloc(sizeof(double) * v.c.z_dim * Tl * h * w);
    double* y = (double*)malloc(sizeof(double) * 3 * Td * H * W);
    int ok = vae_encode(&v, z, x, T, H, W, NULL, err) == 0;
    if (!ok) EXPECT(0, "%s", err);
    if (ok && vae_decode(&v, y, z, Tl, h, w, NULL, err)) { EXPECT(0, "%s", err); ok = 0; }
    if (ok) {
        int finite = 1; double zmax = 0;
        for (int i = 0; i < v.c.z_dim * Tl * h * w; i++) { finite &= isfinite(z[i]) != 0; zmax = fmax(zmax, fabs(z[i])); }
        for (int i = 0; i < 3 * Td * H * W; i++) finite &= isfinite(y[i]) && fabs(y[i]) <= 1;
        printf("  %zu parameters; video [3, %d, %d, %d] -> latent [%d, %d, %d, %d] (max |z| %.3g) -> video [3, %d, %d, %d]\n",
               vae_num_params(&v.c), T, H, W, v.c.z_dim, Tl, h, w, zmax, Td, H, W);
        EXPECT(finite && Tl == 2 && Td == 5 && zmax > 0, "real preset chain: finite %d, %d latent frames, %d frames", finite, Tl, Td);
    }
    free(x); free(z); free(y); vae_free(&v);
}

static void test_vae_bad_inputs(const char* tmpdir) {
    printf("\n[vae] bad inputs: wrong latent channels, frame counts, truncated and mismatched checkpoints\n");
    char err[ST_ERRLEN], path[600], src[600];
    VaeConfig c = {4, 4, 3, {1, 2, 2}, 1, {1, 0}};
    int64_t sh[4] = {16, 2, 4, 6};
    int rc = vae_check_latent_shape(&c, 4, sh, "z.npy", err);
    printf("  latent with 16 channels for z_dim 4 -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc && strstr(err, "16") && strstr(err, "z_dim 4"), "message: %s", err);
    Vae v;
    if (vae_init(&v, &c, err)) { EXPECT(0, "%s", err); return; }
    vt_random(&v, 1, 0);
    double* x = (double*)calloc(3 * 7 * 16 * 24, sizeof(double)); double* z = (double*)calloc(4 * 4 * 4 * 6, sizeof(double));
    rc = vae_encode(&v, z, x, 7, 16, 24, NULL, err);
    printf("  encode of 7 frames -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc && strstr(err, "7 frames") && strstr(err, "1 + 4k"), "message: %s", err);
    rc = vae_encode(&v, z, x, 5, 14, 24, NULL, err);
    printf("  encode of 14x24 frames -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc && strstr(err, "14x24"), "message: %s", err);
    free(x); free(z);
    // checkpoints: a good one round-trips; truncated, a tensor dropped, a shape changed, an extra tensor
    snprintf(path, sizeof(path), "%s/vae_ok.safetensors", tmpdir);
    EXPECT(vae_save(path, &v, 1, err) == 0, "%s", err);
    Vae u;
    rc = vae_load(&u, path, &c, err);
    EXPECT(rc == 0, "%s", err);
    if (!rc) {
        size_t np = vae_num_params(&c), diff = 0;
        for (size_t i = 0; i < np; i++) diff += u.params[i] != (double)(float)v.params[i];
        printf("  save (diffusers names, F32) and load: %zu of %zu parameters differ from the F32 rounding\n", diff, np);
        EXPECT(diff == 0, "round trip changed %zu parameters", diff);
        vae_free(&u);
    }
    VaeConfig other = c; other.z_dim = 8;
    rc = vae_load(&u, path, &other, err);
    printf("  expected z_dim 8 -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc && strstr(err, "z_dim 4") && strstr(err, "z_dim 8"), "message: %s", err);
    snprintf(src, sizeof(src), "%s", path);
    FILE* f = fopen(src, "rb"); fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
    char* bytes = (char*)malloc((size_t)size);
    EXPECT(fread(bytes, 1, (size_t)size, f) == (size_t)size, "read %s", src); fclose(f);
    snprintf(path, sizeof(path), "%s/vae_trunc.safetensors", tmpdir);
    f = fopen(path, "wb"); fwrite(bytes, 1, (size_t)size - 100, f); fclose(f);
    rc = vae_load(&u, path, NULL, err);
    printf("  truncated by 100 bytes -> %s\n", rc ? err : "(accepted!)");
    EXPECT(rc != 0, "a truncated checkpoint loaded");
    free(bytes);
    // variants written tensor by tensor
    VaeTensor* tl = (VaeTensor*)malloc(sizeof(VaeTensor) * VAE_MAX_TENSORS);
    int nt = vae_layout(&c, tl, NULL, NULL, NULL);
    StOut* o = (StOut*)calloc((size_t)nt + 1, sizeof(StOut));
    const char* cases[3] = {"missing", "shape", "extra"};
    const char* target = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight";
    for (int k = 0; k < 3; k++) {
        int n = 0;
        for (int i = 0; i < nt; i++) {
            if (k == 0 && !strcmp(tl[i].dname, target)) continue;
            o[n].name = tl[i].dname; o[n].ndim = tl[i].ndim; o[n].f64 = v.params + tl[i].offset;
            for (int d = 0; d < tl[i].ndim; d++) o[n].shape[d] = tl[i].shape[d];
            if (k == 1 && !strcmp(tl[i].dname, target)) { o[n].shape[0] = tl[i].shape[1]; o[n].shape[1] = tl[i].shape[0]; }
            n++;
        }
        if (k == 2) { o[n] = o[0]; o[n].name = "decoder.up_blocks.0.attentions.0.proj.weight"; n++; }
        snprintf(path, sizeof(path), "%s/vae_%s.safetensors", tmpdir, cases[k]);
        if (st_write(path, o, n, NULL, 0, err)) { EXPECT(0, "%s", err); continue; }
        rc = vae_load(&u, path, NULL, err);
        printf("  %s tensor -> %s\n", cases[k], rc ? err : "(accepted!)");
        const char* want = k == 2 ? "attentions.0.proj.weight" : target;
        EXPECT(rc && strstr(err, want), "%s: message does not name %s: %s", cases[k], want, err);
        if (!rc) vae_free(&u);
    }
    free(o); free(tl); vae_free(&v);
}

// lib/mp4.h round trip through ffmpeg (skipped with one line without it): a tiny clip written lossless (H.264 RGB at
// -qp 0) must decode to exactly the bytes written (tolerance 0: lossless is lossless), and read by vae_read_mp4 (the
// encoder's input path) to exactly pixel / 127.5 - 1; the default (lossy yuv420p) file of a smooth clip must have its
// frames and size, at PSNR >= 30 dB: yuv420p halves the chroma resolution and H.264 at ffmpeg's default quality keeps
// smooth content near 40 dB, while a wrong channel order, frame order or flip gives ~10 dB.
static void test_vae_mp4(const char* tmpdir) {
    printf("\n[vae] mp4 writer (lib/mp4.h) read back through ffmpeg\n");
    if (!mp4_have_ffmpeg()) { printf("  mp4 round trip: skipped (ffmpeg not found on the PATH)\n"); return; }
    enum { T = 5, H = 16, W = 24 };
    size_t plane = (size_t)H * W, n = (size_t)3 * T * plane;
    float* clip = (float*)malloc(sizeof(float) * n); float* smooth = (float*)malloc(sizeof(float) * n);
    Rng r = rng_make(17);
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < T; t++)
            for (size_t i = 0; i < plane; i++) {
                size_t k = ((size_t)c * T + t) * plane + i;
                clip[k] = (float)(2.2 * rng_uniform(&r) - 1.1);   // every level, and some beyond the clamp
                double y = (double)(i / W) / H, x = (double)(i % W) / W;
                smooth[k] = (float)(0.6 * sin(1.0 + 1.2 * x + 0.8 * y + 0.3 * t + 0.5 * c));
            }
    char path[512], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "%.400s/vae_mp4_lossless.mp4", tmpdir);
    unsigned char* back = NULL; int bt = 0, bh = 0, bw = 0;
    int rc = mp4_write_video(path, clip, T, H, W, 16, 1, err);
    if (rc) EXPECT(0, "lossless mp4: %s", err);
    else if (mp4_read_rgb24(path, &back, &bt, &bh, &bw, err)) EXPECT(0, "lossless mp4: %s", err);
    else {
        size_t diff = 0;
        if (bt == T && bh == H && bw == W)
            for (int t = 0; t < T; t++)
                for (size_t i = 0; i < plane; i++)
                    for (int c = 0; c < 3; c++) diff += back[((size_t)t * plane + i) * 3 + c] != mp4_pixel(clip[((size_t)c * T + t) * plane + i]);
        printf("  lossless (libx264rgb -qp 0): %d frames of %dx%d read back, %zu of %zu bytes differ\n", bt, bw, bh, diff, n);
        EXPECT(bt == T && bh == H && bw == W && diff == 0, "lossless mp4: %d frames of %dx%d (wrote %d of %dx%d), %zu bytes differ", bt, bw, bh, T, W, H, diff);
        double* v = NULL; int vt = 0, vh = 0, vw = 0;
        if (vae_read_mp4(path, &v, &vt, &vh, &vw, err)) EXPECT(0, "vae_read_mp4: %s", err);
        else {
            size_t bad = 0;
            for (int c = 0; c < 3 && vt == T; c++)
                for (int t = 0; t < T; t++)
                    for (size_t i = 0; i < plane; i++) bad += v[((size_t)c * T + t) * plane + i] != mp4_pixel(clip[((size_t)c * T + t) * plane + i]) / 127.5 - 1.0;
            printf("  vae_read_mp4 (the encoder's input): [3, %d, %d, %d], %zu values differ from pixel / 127.5 - 1\n", vt, vh, vw, bad);
            EXPECT(vt == T && vh == H && vw == W && bad == 0, "vae_read_mp4 gave [3, %d, %d, %d] with %zu wrong values", vt, vh, vw, bad);
            free(v);
        }
    }
    free(back); back = NULL; remove(path);
    snprintf(path, sizeof(path), "%.400s/vae_mp4_default.mp4", tmpdir);
    rc = mp4_write_video(path, smooth, T, H, W, 16, 0, err);
    if (rc) EXPECT(0, "default mp4: %s", err);
    else if (mp4_read_rgb24(path, &back, &bt, &bh, &bw, err)) EXPECT(0, "default mp4: %s", err);
    else {
        double se = 0;
        if (bt == T && bh == H && bw == W)
            for (int t = 0; t < T; t++)
                for (size_t i = 0; i < plane; i++)
                    for (int c = 0; c < 3; c++) { double d = (double)back[((size_t)t * plane + i) * 3 + c] - mp4_pixel(smooth[((size_t)c * T + t) * plane + i]); se += d * d; }
        double psnr = se > 0 ? 10 * log10(255.0 * 255.0 / (se / n)) : INFINITY;
        printf("  default (yuv420p): %d frames of %dx%d read back, PSNR %.1f dB (>= 30)\n", bt, bw, bh, psnr);
        EXPECT(bt == T && bh == H && bw == W && psnr >= 30, "default mp4: %d frames of %dx%d, PSNR %.1f dB", bt, bw, bh, psnr);
    }
    free(back); remove(path);
    free(clip); free(smooth);
}

static void test_vae(const char* tmpdir) {
    test_vae_layout();
    printf("\n[vae] peer: CPU encode/decode vs diffusers AutoencoderKLWan (%s/vae_*)\n", VAE_PEER_DIR);
    test_vae_peer_case("a", 1);
    test_vae_peer_case("b", 0);
    test_vae_peer_case("c", 0);
    test_vae_memory();
    test_vae_real_shapes();
    test_vae_bad_inputs(tmpdir);
    test_vae_mp4(tmpdir);
}
