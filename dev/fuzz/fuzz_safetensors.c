// dev/fuzz/fuzz_safetensors.c: one .safetensors file (header and data) through st_open, every read of a float tensor,
// the metadata lookups, and wan_load's config inference and shape checks on the same bytes.
#include "fuzz_common.h"
#include "../../wan.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    char err[ST_ERRLEN];
    StFile f;
    if (st_open(&f, path, err) == 0) {
        for (int k = 0; k < f.n; k++) {
            const StTensor* t = &f.tensors[k];
            if (t->numel > (1 << 16)) continue; // larger reads add nothing the small ones do not test
            float* v = (float*)malloc((size_t)t->numel * sizeof(float) + 4);
            st_read_float(&f, t, v, err);
            free(v);
        }
        (void)st_meta(&f, "num_heads");
        (void)st_find(&f, "patch_embedding.weight");
        st_close(&f);
    }
    WanConfig c;
    memset(&c, 0, sizeof(c));
    float* params = NULL;
    if (wan_load(path, &c, 0, 0, &params, err) == 0) free(params);
    return 0;
}
