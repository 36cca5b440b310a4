// dev/fuzz/fuzz_index.c: a sharded checkpoint's *.safetensors.index.json through st_set_open, next to two valid
// shards (a.safetensors with tensors x, y; b.safetensors with z) in a private directory.
#include "fuzz_common.h"
#include "../../lib/safetensors.h"

static char dir[256], index_path[320];

static void write_shard(const char* name, const char* t1, const char* t2) {
    char path[400], err[ST_ERRLEN];
    float v[6] = {1, 2, 3, 4, 5, 6};
    StOut o[2];
    memset(o, 0, sizeof(o));
    o[0].name = t1;
    o[0].ndim = 2;
    o[0].shape[0] = 2;
    o[0].shape[1] = 3;
    o[0].f32 = v;
    o[1].name = t2;
    o[1].ndim = 1;
    o[1].shape[0] = 6;
    o[1].f32 = v;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (st_write(path, o, t2 ? 2 : 1, NULL, 0, err)) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/fuzz_index.XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
        write_shard("a.safetensors", "x", "y");
        write_shard("b.safetensors", "z", NULL);
        snprintf(index_path, sizeof(index_path), "%s/model.safetensors.index.json", dir);
    }
    FILE* fp = fopen(index_path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0) {
        perror(index_path);
        abort();
    }
    char err[ST_ERRLEN];
    StSet s;
    if (st_set_open(&s, index_path, err) == 0) {
        const StFile* f = NULL;
        const StTensor* t = st_set_find(&s, "x", &f);
        float v[6];
        if (t && t->numel == 6) st_read_float(f, t, v, err);
        st_set_close(&s);
    }
    return 0;
}
