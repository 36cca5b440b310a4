// dev/fuzz/make_seeds.c: writes the seed corpus of the harnesses into DIR/{safetensors,index,npy,dataset,latents}/: small
// valid files made by the project's own writers (every dtype, metadata, a whole micro Wan checkpoint, a world dataset,
// .npy files of 0 to 4 dimensions). The Makefile adds the committed test vectors of dev/peer/vectors.
//   ./make_seeds DIR
#include "../../wan.h"
#include "../../lib/npy.h"
#include "../../world/world.h"
#include "../../lib/latent_data.h"
#include <sys/stat.h>

static char dir[512];

static void put(const char* sub, const char* name, const void* data, size_t n) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    FILE* fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, n, fp) != n || fclose(fp) != 0) {
        perror(path);
        exit(1);
    }
}
static const char* at(const char* sub, const char* name) {
    static char path[1200];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    return path;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s", argv[1]);
    const char* subs[] = {"safetensors", "index", "npy", "dataset", "latents"};
    char err[ST_ERRLEN], p[1200];
    mkdir(dir, 0755);
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, subs[i]);
        mkdir(p, 0755);
    }
    // safetensors: F32 tensors of 0 to 5 dims with metadata; hand-written headers of the other dtypes
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)(i - 20) * 0.25f;
    StOut o[3];
    memset(o, 0, sizeof(o));
    o[0] = (StOut){.name = "a", .ndim = 2, .shape = {4, 3}, .f32 = v};
    o[1] = (StOut){.name = "blocks.0.self_attn.q.weight", .ndim = 5, .shape = {2, 1, 2, 2, 2}, .f32 = v};
    o[2] = (StOut){.name = "scalar", .ndim = 0, .f32 = v};
    const char* meta[] = {"format", "pt", "num_heads", "2", "text_len", "2", "eps", "1e-6"};
    if (st_write(at("safetensors", "three.safetensors"), o, 3, meta, 4, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char* hdrs[] = {
        "{\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],"
        "\"data_offsets\":[8,16]}}",
        "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},\"__metadata__\":{\"k\":\"\\u00fc\\n\"}}",
        "{\"i\":{\"dtype\":\"I64\",\"shape\":[1,2],\"data_offsets\":[0,16]}}"};
    for (int k = 0; k < 3; k++) {
        unsigned char b[512];
        size_t n = strlen(hdrs[k]);
        for (int j = 0; j < 8; j++) b[j] = (unsigned char)((uint64_t)n >> (8 * j));
        memcpy(b + 8, hdrs[k], n);
        memcpy(b + 8 + n, v, 16);
        snprintf(p, sizeof(p), "hand%d.safetensors", k);
        put("safetensors", p, b, 8 + n + 16);
    }
    // a whole micro Wan checkpoint (official names, config in the metadata), so wan_load gets past the inference
    WanConfig c = {"micro", 12, 8, 4, 2, 1, 1, 1, {1, 1, 1}, 2, 4, 1e-6};
    size_t np = wan_num_params(&c);
    float* w = (float*)calloc(np, sizeof(float));
    for (size_t i = 0; i < np; i++) w[i] = (float)((i * 7919) % 17) * 0.01f;
    if (wan_save(at("safetensors", "micro_wan.safetensors"), &c, w, NULL, 0, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    free(w);
    // index: the shards fuzz_index writes (a.safetensors: x, y; b.safetensors: z)
    const char* idx = "{\"metadata\":{\"total_size\":72},\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a."
                      "safetensors\",\"z\":\"b.safetensors\"}}";
    put("index", "two_shards.json", idx, strlen(idx));
    // npy: 0 to 4 dimensions, and a v2.0 header by hand
    int64_t shapes[5][4] = {{0}, {7}, {3, 5}, {2, 3, 4}, {1, 2, 2, 4}};
    for (int d = 0; d <= 4; d++) {
        snprintf(p, sizeof(p), "%dd.npy", d);
        if (npy_write(at("npy", p), v, d, shapes[d], err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    // dataset: one tiny-world clip with its context, held-out flag and caption
    WorldConfig wc = world_config_tiny();
    WorldSet s;
    world_generate(&wc, WORLD_HELDOUT, 1, 1, &s);
    if (world_save(&s, at("dataset", "tiny_one_clip.safetensors"), 1, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    world_set_free(&s);
    // latents: a latent dataset of 3 samples [2, 1, 2, 2] with 2-row contexts 4 wide, a negative prompt and captions,
    // written by ./test_tmd pack's writer
    LdWriter lw;
    const char* lmeta[] = {"written_by", "dev/fuzz/make_seeds.c"};
    if (ld_write_begin(&lw, at("latents", "three.safetensors"), 3, 2, 1, 2, 2, 2, 4, 1, 6, lmeta, 1, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    float lat[8], ctx[8], neg[4] = {0.5f, -1, 2, 0.25f};
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 8; k++) lat[k] = (float)(i + k) * 0.5f - 1, ctx[k] = (float)(k - i) * 0.25f;
        ld_write_sample(&lw, i, lat, ctx, i == 1 ? "a cat" : "dog");
    }
    ld_write_negative(&lw, neg);
    if (ld_write_end(&lw, 1, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("seeds written under %s\n", dir);
    return 0;
}
