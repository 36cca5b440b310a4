// dev/tiny_latent_data.c: the inputs of dev/data_check.sh at the tiny preset: a random Wan checkpoint (lib/random_params.h,
// written by wan.h's wan_save with its config in __metadata__) and a folder of random "encoded" samples as ./test_tmd
// vae encode and ./test_tmd encode would write them (OUT/lat/NNNN.npy [C, T, H, W], OUT/ctx/NNNN.npy [rows, text_dim]
// with rows 3..text_len, OUT/neg.npy [2, text_dim], OUT/captions.txt), for ./test_tmd pack. Not in make test (the
// "data" group packs its own arrays in-process); only a stand-in for the real VAE and umT5 outputs.
//   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L dev/tiny_latent_data.c -o /tmp/tiny_latent_data -lm
//   /tmp/tiny_latent_data OUT [N T H W]      (defaults 4 2 8 8)
#include <sys/stat.h>
#include "../wan.h"
#include "../lib/npy.h"
#include "../lib/random_params.h"

int main(int argc, char** argv) {
    if (argc != 2 && argc != 6) { fprintf(stderr, "usage: %s OUT [N T H W]\n", argv[0]); return 2; }
    const char* out = argv[1];
    int n = argc == 6 ? atoi(argv[2]) : 4, T = argc == 6 ? atoi(argv[3]) : 2, H = argc == 6 ? atoi(argv[4]) : 8, W = argc == 6 ? atoi(argv[5]) : 8;
    if (n < 1 || T < 1 || H < 1 || W < 1) { fprintf(stderr, "error: N, T, H, W must be >= 1\n"); return 2; }
    char err[ST_ERRLEN], p[1200];
    WanConfig c; wan_preset(&c, "tiny", err);
    real* w = (real*)malloc(sizeof(real) * wan_num_params(&c));
    random_params(&c, w, 7);
    snprintf(p, sizeof(p), "%s/tiny_teacher.safetensors", out);
    mkdir(out, 0755);
    const char* meta[] = {"note", "random tiny teacher (dev/tiny_latent_data.c)"};   // wan_save writes the config itself
    if (wan_save(p, &c, w, meta, 1, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    printf("wrote %s (%zu parameters)\n", p, wan_num_params(&c));
    snprintf(p, sizeof(p), "%s/lat", out); mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/ctx", out); mkdir(p, 0755);
    Rng r = rng_make(11);
    size_t nl = (size_t)c.in_dim * T * H * W;
    float* x = (float*)calloc(nl + (size_t)c.text_len * c.text_dim, sizeof(float));
    FILE* caps; snprintf(p, sizeof(p), "%s/captions.txt", out); caps = fopen(p, "w");
    for (int i = 0; i < n; i++) {
        int rows = 3 + i % (c.text_len - 2);
        for (size_t k = 0; k < nl; k++) x[k] = (float)rng_normal(&r);
        int64_t ls[4] = {c.in_dim, T, H, W}, cs[2] = {rows, c.text_dim};
        snprintf(p, sizeof(p), "%s/lat/%04d.npy", out, i);
        if (npy_write(p, x, 4, ls, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        for (size_t k = 0; k < (size_t)rows * c.text_dim; k++) x[k] = (float)rng_normal(&r);
        snprintf(p, sizeof(p), "%s/ctx/%04d.npy", out, i);
        if (npy_write(p, x, 2, cs, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
        fprintf(caps, "random sample %d\n", i);
    }
    fclose(caps);
    int64_t ns[2] = {2, c.text_dim};
    for (size_t k = 0; k < (size_t)2 * c.text_dim; k++) x[k] = (float)rng_normal(&r);
    snprintf(p, sizeof(p), "%s/neg.npy", out);
    if (npy_write(p, x, 2, ns, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    printf("wrote %d samples: %s/lat/*.npy [%d, %d, %d, %d], %s/ctx/*.npy [3..%d, %d], %s/neg.npy, %s/captions.txt\n", n, out, c.in_dim, T, H, W, out,
           c.text_len, c.text_dim, out, out);
    free(w); free(x);
    return 0;
}
