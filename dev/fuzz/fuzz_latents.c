// dev/fuzz/fuzz_latents.c: one latent dataset (lib/latent_data.h: latents, contexts, negative_context, captions) through
// ld_open, ld_check_model against a model the file's own shapes fit, and every read train_tmd --data makes of it
// (the first 4 samples, the negative prompt, the captions) and the visiting order.
#include "fuzz_common.h"
#include "../../lib/latent_data.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    char err[ST_ERRLEN], cap[64];
    LatentData d;
    if (ld_open(&d, path, err)) return 0;
    int patch[3] = {1, 1, 1}, text_len = d.L > (int)d.neg->shape[0] ? d.L : (int)d.neg->shape[0];
    if (ld_check_model(&d, "fuzz", d.C, d.C, patch, text_len, d.D, err) == 0) {
        float* x = (float*)malloc(sizeof(float) * (size_t)d.C * d.T * d.H * d.W);
        float* c = (float*)malloc(sizeof(float) * (size_t)text_len * d.D);
        LdOrder o;
        memset(&o, 0, sizeof(o));
        int64_t idx[4];
        uint64_t pos = 0;
        if (x && c && ld_order_init(&o, 1, d.n) == 0) {
            ld_order_batch(&o, &pos, 1, 2, 4, idx);
            for (int b = 0; b < 4; b++) {
                ld_read_latent(&d, idx[b], x, err);
                ld_read_context(&d, idx[b], c, text_len, err);
                ld_caption(&d, idx[b], cap, sizeof(cap), err);
            }
            ld_read_negative(&d, c, text_len, err);
        }
        ld_order_free(&o);
        free(x); free(c);
    }
    ld_close(&d);
    return 0;
}
