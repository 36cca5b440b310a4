// dev/mpi/ckpt_diff.c: two train_tmd checkpoints compared buffer by buffer (the multi-rank records of dev/results:
// K ranks against one rank at the same global batch, resumed against uninterrupted). Per buffer: elements whose bits
// differ, the largest absolute difference, the largest elementwise relative one (|a − b| / max(|a|, |b|), over elements
// with max(|a|, |b|) > 1e-30: large where a sum cancels to a small value) and the normwise one ‖a − b‖₂ / ‖a‖₂; then
// the metadata entries that differ. Exit 0 when every buffer is bit-identical, 1 when
// some differ, 2 on a bad file or buffers of different sizes.
//   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L dev/mpi/ckpt_diff.c -o dev/mpi/ckpt_diff -lm
//   dev/mpi/ckpt_diff A.safetensors B.safetensors
#include <math.h>
#include "../../lib/safetensors.h"

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s A.safetensors B.safetensors\n", argv[0]); return 2; }
    char err[1024]; StFile a, b;
    if (st_open(&a, argv[1], err) || st_open(&b, argv[2], err)) { fprintf(stderr, "error: %s\n", err); return 2; }
    int differ = 0;
    for (int i = 0; i < a.n; i++) {
        const StTensor* ta = &a.tensors[i]; const StTensor* tb = st_find(&b, ta->name);
        if (!tb || tb->numel != ta->numel) { fprintf(stderr, "error: %s: %s in %s\n", ta->name, tb ? "another size" : "missing", argv[2]); return 2; }
        float* x = (float*)malloc(sizeof(float) * (size_t)ta->numel); float* y = (float*)malloc(sizeof(float) * (size_t)ta->numel);
        if (!x || !y || st_read_float(&a, ta, x, err) || st_read_float(&b, tb, y, err)) { fprintf(stderr, "error: %s\n", x && y ? err : "out of memory"); return 2; }
        size_t nd = 0; double mabs = 0, mrel = 0, mag = 0, d2 = 0, a2 = 0;
        for (int64_t k = 0; k < ta->numel; k++) {
            if (memcmp(&x[k], &y[k], sizeof(float))) nd++;
            double d = fabs((double)x[k] - (double)y[k]), s = fmax(fabs((double)x[k]), fabs((double)y[k]));
            if (d > mabs) mabs = d;
            if (s > 1e-30 && d / s > mrel) mrel = d / s;
            if (s > mag) mag = s;
            d2 += d * d; a2 += (double)x[k] * x[k];
        }
        printf("  %-18s %7lld elements: %7zu differ in their bits, max |a-b| %.2e (max |a| %.2e), max elementwise relative %.2e, normwise %.2e\n",
               ta->name, (long long)ta->numel, nd, mabs, mag, mrel, a2 > 0 ? sqrt(d2 / a2) : 0.0);
        differ |= nd > 0;
        free(x); free(y);
    }
    for (int i = 0; i < a.n_meta; i++) {
        const char* vb = NULL;
        for (int j = 0; j < b.n_meta; j++) if (!strcmp(a.meta_keys[i], b.meta_keys[j])) vb = b.meta_vals[j];
        if (!vb || strcmp(vb, a.meta_vals[i])) printf("  metadata %s: %s / %s\n", a.meta_keys[i], a.meta_vals[i], vb ? vb : "(missing)");
    }
    printf("%s\n", differ ? "buffers differ" : "every buffer bit-identical");
    st_close(&a); st_close(&b);
    return differ;
}
