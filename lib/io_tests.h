// lib/io_tests.h: tests of safetensors.h and npy.h, called as test_io("/tmp/somedir") from test_tmd.c.
// Round trips (st_write / st_read_*, hand-made F16 / BF16 / F64 files, a 2-shard checkpoint, npy), then one case per
// kind of corruption. Every failure case prints the library's message, so a reader can judge whether it names the
// file, says what is wrong and what to do; the check itself asks for the file name and one telling word.
// Files are created under tmpdir (created if missing) and removed at the end.
#pragma once
#include "safetensors.h"
#include "npy.h"
#include "testing.h"
#include <sys/stat.h> // mkdir for the shard directories

static char io_files[96][1100];
static int io_n_files = 0; // every path made by io_path, removed at the end
static const char* io_path(const char* dir, const char* name) {
    char* p = io_files[io_n_files < 95 ? io_n_files++ : 95];
    char tmp[1100]; // dir may itself be one of io_files
    snprintf(tmp, sizeof(tmp), "%s/%s", dir, name);
    memcpy(p, tmp, sizeof(tmp));
    return p;
}
static int io_write_bytes(const char* path, const void* p, size_t n) {
    FILE* fp = fopen(path, "wb");
    if (!fp) return 1;
    size_t w = fwrite(p, 1, n, fp);
    return (fclose(fp) != 0) | (w != n);
}
// a .safetensors file by hand: 8-byte length (hlen, or the header's own length when hlen == 0), header, data
static void io_write_raw_st(const char* path, const char* header, const void* data, size_t n_data, uint64_t hlen) {
    size_t nh = strlen(header);
    uint64_t len = hlen ? hlen : nh;
    unsigned char* b = (unsigned char*)malloc(8 + nh + n_data + 1);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(len >> (8 * k));
    memcpy(b + 8, header, nh);
    if (n_data) memcpy(b + 8 + nh, data, n_data);
    io_write_bytes(path, b, 8 + nh + n_data);
    free(b);
}
// a .npy file by hand: version major.0, header dict (padded to 64), n_data bytes of zeros
static void io_write_raw_npy(const char* path, int major, const char* dict, size_t n_data) {
    size_t pre = major == 1 ? 10 : 12, nd = strlen(dict), nh = nd + 1;
    while ((pre + nh) % 64) nh++;
    unsigned char* b = (unsigned char*)calloc(pre + nh + n_data + 1, 1);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t k = 0; k < pre - 8; k++) b[8 + k] = (unsigned char)(nh >> (8 * k));
    memset(b + pre, ' ', nh);
    memcpy(b + pre, dict, nd);
    b[pre + nh - 1] = '\n';
    io_write_bytes(path, b, pre + nh + n_data);
    free(b);
}
static void io_expect_fail(const char* what, int rc, const char* err, const char* path, const char* word) {
    const char* base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int ok = rc != 0 && strstr(err, base) != NULL && strstr(err, word) != NULL;
    printf("  io %-36s %s | %s\n", what, ok ? "ok  " : "FAIL", rc ? err : "(no error)");
    EXPECT(ok, "%s: expected a failure naming '%s' and saying '%s'", what, base, word);
}
static void io_expect_ok(const char* what, int ok, const char* detail) {
    printf("  io %-36s %s | %s\n", what, ok ? "ok  " : "FAIL", detail);
    EXPECT(ok, "%s: %s", what, detail);
}
static float io_val(int i) { return (float)((i * 7919) % 1000 - 500) * 0.0137f; } // varied, signed, exact in F32

static void test_io(const char* tmpdir) {
    char err[ST_ERRLEN], msg[ST_ERRLEN];
    int rc;
    StFile f;
    StSet s;
    memset(&f, 0, sizeof(f));
    memset(&s, 0, sizeof(s));
    mkdir(tmpdir, 0755);
    printf("test_io: safetensors and npy readers/writers (files under %s)\n", tmpdir);

    // ---- st_write round trip: F32 and F64 sources, 5-D, scalar, empty, escaped names and metadata
    {
        const char* path = io_path(tmpdir, "io_roundtrip.safetensors");
        float a[12], b[24], scalar = 42.5f;
        double c[5] = {0.1, -2.5, 1e-3, 123456789.0, 3e-39};
        for (int i = 0; i < 12; i++) a[i] = io_val(i);
        for (int i = 0; i < 24; i++) b[i] = io_val(100 + i);
        StOut ts[5];
        memset(ts, 0, sizeof(ts));
        ts[0] = (StOut){.name = "blocks.0.attn.q.weight", .ndim = 2, .shape = {3, 4}, .f32 = a};
        ts[1] = (StOut){.name = "five_d \"quoted\\name\"", .ndim = 5, .shape = {2, 1, 3, 2, 2}, .f32 = b};
        ts[2] = (StOut){.name = "from_f64", .ndim = 1, .shape = {5}, .f64 = c};
        ts[3] = (StOut){.name = "scalar", .ndim = 0, .f32 = &scalar};
        ts[4] = (StOut){.name = "empty", .ndim = 2, .shape = {0, 3}, .f32 = a};
        const char* meta[6] = {"format", "pt",   "step",
                               "1200",   "note", "quote \" backslash \\ newline \n tab \t u-umlaut \xc3\xbc"};
        rc = st_write(path, ts, 5, meta, 3, err);
        io_expect_ok("st_write 5 tensors + 3 metadata", rc == 0, rc ? err : path);
        rc = st_open(&f, path, err);
        int ok = rc == 0 && f.n == 5, exact = ok;
        for (int k = 0; ok && k < 5; k++) {
            const StTensor* t = st_find(&f, ts[k].name);
            if (!t || t->dtype != ST_F32 || t->ndim != ts[k].ndim ||
                memcmp(t->shape, ts[k].shape, sizeof(int64_t) * (size_t)ts[k].ndim) != 0) {
                ok = 0;
                break;
            }
            float got[24];
            double gotd[24];
            if (st_read_float(&f, t, got, err) || st_read_double(&f, t, gotd, err)) {
                ok = 0;
                break;
            }
            for (int64_t i = 0; i < t->numel; i++) {
                float want = ts[k].f32 ? ts[k].f32[i] : (float)ts[k].f64[i];
                if (memcmp(&got[i], &want, 4) != 0 || gotd[i] != (double)want) exact = 0;
            }
        }
        snprintf(msg, sizeof(msg), "%s",
                 rc ? err
                    : "5 tensors: names, dtype F32, shapes (incl. 5-D, scalar, [0, 3]) and values bit-exact (f64 "
                      "source rounded to f32)");
        io_expect_ok("st_open/st_read_float/double", ok && exact, msg);
        int meta_ok = rc == 0 && f.n_meta == 3 && st_meta(&f, "step") && strcmp(st_meta(&f, "step"), "1200") == 0 &&
                      st_meta(&f, "note") && strcmp(st_meta(&f, "note"), meta[5]) == 0 && st_meta(&f, "absent") == NULL;
        io_expect_ok("metadata round trip (with escapes)", meta_ok, "values equal; st_meta of an absent key is NULL");
        FILE* fp = fopen(path, "rb");
        unsigned char len8[8] = {0};
        uint64_t hl = 0;
        if (fp) {
            if (fread(len8, 1, 8, fp) != 8) hl = 1;
            fclose(fp);
        }
        for (int k = 7; k >= 0; k--) hl = (hl << 8) | len8[k];
        char tmp[1100];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        fp = fopen(tmp, "rb");
        if (fp) fclose(fp);
        snprintf(msg, sizeof(msg), "header is %llu bytes (multiple of 8), no .tmp file left behind",
                 (unsigned long long)hl);
        io_expect_ok("header padding, atomic write", hl % 8 == 0 && hl > 0 && !fp, msg);
        if (rc == 0) {
            StFile g;
            const char* p2 = io_path(tmpdir, "io_other.safetensors");
            st_write(p2, ts, 1, NULL, 0, err);
            st_open(&g, p2, err);
            rc = st_read_float(&g, st_find(&f, "scalar"), a, err);
            io_expect_fail("tensor from the wrong file", rc, err, p2, "does not belong");
            st_close(&g);
        }
        st_close(&f);
        rc = st_write(io_path(tmpdir, "no_such_dir/x.safetensors"), ts, 1, NULL, 0, err);
        io_expect_fail("st_write into a missing directory", rc, err, "x.safetensors", "cannot create");
    }

    // ---- hand-made F64 / F16 / BF16 / I32 file: conversion against known values
    {
        const char* path = io_path(tmpdir, "io_dtypes.safetensors");
        const char* hdr = "{\"d\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[0,32]},"
                          "\"h\":{\"dtype\":\"F16\",\"shape\":[10],\"data_offsets\":[32,52]},"
                          "\"b\":{\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[52,62]},"
                          "\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[62,70]}}";
        unsigned char data[70];
        memset(data, 0, sizeof(data));
        double dv[4] = {0.1, -2.5, 1e-300, 123456789.123};
        // f16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 1023*2^-24 (largest subnormal), +inf, -inf, nan, -0,
        // 0.333...
        uint16_t hv[10] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00, 0x8000, 0x3555};
        float hwant[10] = {1.0f,      -2.0f, 65504.0f, 5.9604644775390625e-08f, 6.0975551605224609e-05f, INFINITY,
                           -INFINITY, NAN,   -0.0f,    0.333251953125f};
        // bf16: 1, -3, 3.140625, +inf, 2^-133 (smallest subnormal)
        uint16_t bv[5] = {0x3F80, 0xC040, 0x4049, 0x7F80, 0x0001};
        float bwant[5] = {1.0f, -3.0f, 3.140625f, INFINITY, 9.18354961579912e-41f};
        memcpy(data, dv, 32);
        memcpy(data + 32, hv, 20);
        memcpy(data + 52, bv, 10);
        io_write_raw_st(path, hdr, data, sizeof(data), 0);
        rc = st_open(&f, path, err);
        float got[10];
        double gotd[10];
        int ok = rc == 0;
        ok = ok && !st_read_float(&f, st_find(&f, "h"), got, err);
        for (int i = 0; ok && i < 10; i++) ok = isnan(hwant[i]) ? isnan(got[i]) : memcmp(&got[i], &hwant[i], 4) == 0;
        io_expect_ok("F16 -> float (subnormal, inf, nan, -0)", ok, ok ? "10 values bit-exact" : err);
        ok = rc == 0 && !st_read_float(&f, st_find(&f, "b"), got, err);
        for (int i = 0; ok && i < 5; i++) ok = memcmp(&got[i], &bwant[i], 4) == 0;
        io_expect_ok("BF16 -> float (inf, subnormal)", ok, ok ? "5 values bit-exact" : err);
        ok = rc == 0 && !st_read_double(&f, st_find(&f, "d"), gotd, err) &&
             !st_read_float(&f, st_find(&f, "d"), got, err);
        for (int i = 0; ok && i < 4; i++) ok = gotd[i] == dv[i] && got[i] == (float)dv[i];
        io_expect_ok("F64 -> double exact, -> float rounded", ok, ok ? "4 values" : err);
        rc = rc ? rc : st_read_float(&f, st_find(&f, "i"), got, err);
        io_expect_fail("I32 read as float", rc, err, path, "I32");
        st_close(&f);
    }

    // ---- two shards + index.json, opened by the index path and by the directory
    {
        const char* dir = io_path(tmpdir, "io_shards");
        mkdir(dir, 0755); // registered before its files: removed after them
        const char* pa = io_path(dir, "model-00001-of-00002.safetensors");
        const char* pb = io_path(dir, "model-00002-of-00002.safetensors");
        const char* pc = io_path(dir, "stray.safetensors");
        const char* pi = io_path(dir, "model.safetensors.index.json");
        float a1[6], a2[3], b1[4];
        for (int i = 0; i < 6; i++) a1[i] = io_val(200 + i);
        for (int i = 0; i < 3; i++) a2[i] = io_val(300 + i);
        for (int i = 0; i < 4; i++) b1[i] = io_val(400 + i);
        StOut ts[3];
        memset(ts, 0, sizeof(ts));
        ts[0] = (StOut){.name = "a1", .ndim = 2, .shape = {2, 3}, .f32 = a1};
        ts[1] = (StOut){.name = "a2", .ndim = 1, .shape = {3}, .f32 = a2};
        ts[2] = (StOut){.name = "b1", .ndim = 1, .shape = {4}, .f32 = b1};
        rc = st_write(pa, ts, 2, NULL, 0, err) || st_write(pb, ts + 2, 1, NULL, 0, err);
        const char* idx =
            "{\"metadata\": {\"total_size\": 52}, \"weight_map\": {\"a1\": \"model-00001-of-00002.safetensors\", "
            "\"a2\": \"model-00001-of-00002.safetensors\", \"b1\": \"model-00002-of-00002.safetensors\"}}";
        io_write_bytes(pi, idx, strlen(idx));
        for (int by_dir = 0; by_dir < 2; by_dir++) {
            rc = st_set_open(&s, by_dir ? dir : pi, err);
            const StFile* sf = NULL;
            const StTensor* t = rc ? NULL : st_set_find(&s, "b1", &sf);
            float got[4];
            int ok = rc == 0 && s.n_files == 2 && t && sf == &s.files[1] && !st_read_float(sf, t, got, err) &&
                     memcmp(got, b1, 16) == 0;
            t = rc ? NULL : st_set_find(&s, "a1", &sf);
            float got6[6];
            ok = ok && t && sf == &s.files[0] && !st_read_float(sf, t, got6, err) && memcmp(got6, a1, 24) == 0;
            io_expect_ok(by_dir ? "sharded checkpoint by directory" : "sharded checkpoint by index.json", ok,
                         ok ? "2 shards; a1 and b1 found in the right shard, values exact" : err);
            if (!by_dir)
                io_expect_ok("st_set_find of a missing name",
                             rc == 0 && st_set_find(&s, "nope", &sf) == NULL && sf == NULL,
                             "returns NULL and sets *file = NULL");
            st_set_close(&s);
        }
        rc = st_set_open(&s, pa, err);
        io_expect_ok("st_set_open on a single file", rc == 0 && s.n_files == 1 && st_set_find(&s, "a2", NULL),
                     rc ? err : "1 file, a2 found");
        st_set_close(&s);

        const char* bad = io_path(tmpdir, "io_missing_shard.json");
        const char* j1 = "{\"weight_map\": {\"a1\": \"io_shards/model-00001-of-00002.safetensors\", \"zz\": "
                         "\"io_shards/gone-00003.safetensors\"}}";
        io_write_bytes(bad, j1, strlen(j1));
        rc = st_set_open(&s, bad, err);
        io_expect_fail("index naming a missing shard", rc, err, bad, "gone-00003.safetensors");
        bad = io_path(tmpdir, "io_absent_tensor.json");
        const char* j2 = "{\"weight_map\": {\"a1\": \"io_shards/model-00001-of-00002.safetensors\", \"b7\": "
                         "\"io_shards/model-00002-of-00002.safetensors\"}}";
        io_write_bytes(bad, j2, strlen(j2));
        rc = st_set_open(&s, bad, err);
        io_expect_fail("index naming a tensor absent from it", rc, err, bad, "no such tensor");
        StOut stray[2];
        stray[0] = ts[2];
        stray[1] = ts[2];
        stray[0].name = "x";
        stray[1].name = "a1"; // also holds a1
        st_write(pc, stray, 2, NULL, 0, err);
        bad = io_path(tmpdir, "io_two_shards.json");
        const char* j3 = "{\"weight_map\": {\"a1\": \"io_shards/model-00001-of-00002.safetensors\", \"x\": "
                         "\"io_shards/stray.safetensors\"}}";
        io_write_bytes(bad, j3, strlen(j3));
        rc = st_set_open(&s, bad, err);
        io_expect_fail("a tensor stored in two shards", rc, err, bad, "two shards");
        bad = io_path(tmpdir, "io_listed_twice.json");
        const char* j4 = "{\"weight_map\": {\"a1\": \"io_shards/model-00001-of-00002.safetensors\", \"a1\": "
                         "\"io_shards/stray.safetensors\"}}";
        io_write_bytes(bad, j4, strlen(j4));
        rc = st_set_open(&s, bad, err);
        io_expect_fail("a tensor listed twice in weight_map", rc, err, bad, "twice");
        const char* dir2 = io_path(tmpdir, "io_noindex");
        mkdir(dir2, 0755);
        st_write(io_path(dir2, "one.safetensors"), ts, 1, NULL, 0, err);
        st_write(io_path(dir2, "two.safetensors"), ts, 1, NULL, 0, err);
        rc = st_set_open(&s, dir2, err);
        io_expect_fail("directory with 2 files and no index", rc, err, dir2, "no *.safetensors.index.json");
    }

    // ---- corrupt .safetensors files: each must fail with the file name and a telling word
    {
        const char* p;
        float z[8] = {0};
        const char* one = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
        p = io_path(tmpdir, "io_short.safetensors");
        io_write_bytes(p, "abc", 3);
        rc = st_open(&f, p, err);
        io_expect_fail("file shorter than 8 bytes", rc, err, p, "truncated");
        p = io_path(tmpdir, "io_trunc_data.safetensors");
        io_write_raw_st(p, one, z, 8, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("truncated data section", rc, err, p, "truncated");
        p = io_path(tmpdir, "io_hlen_past_end.safetensors");
        io_write_raw_st(p, one, z, 16, 1000);
        rc = st_open(&f, p, err);
        io_expect_fail("header length past the file end", rc, err, p, "past the end");
        p = io_path(tmpdir, "io_hlen_absurd.safetensors");
        io_write_raw_st(p, one, z, 16, (uint64_t)1 << 62);
        rc = st_open(&f, p, err);
        io_expect_fail("absurd header length 2^62", rc, err, p, "absurd");
        p = io_path(tmpdir, "io_bad_json.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4] \"data_offsets\":[0,16]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("malformed JSON", rc, err, p, "not valid JSON");
        p = io_path(tmpdir, "io_bad_escape.safetensors");
        io_write_raw_st(p, "{\"a\\uD800\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("JSON lone surrogate \\uD800", rc, err, p, "surrogate");
        p = io_path(tmpdir, "io_deep_json.safetensors");
        char deep[400];
        snprintf(deep, sizeof(deep), "{\"a\":");
        for (int d = 0; d < 100; d++) {
            deep[5 + d] = '[';
            deep[105 + d] = ']';
        }
        snprintf(deep + 205, sizeof(deep) - 205, "}");
        io_write_raw_st(p, deep, z, 0, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("JSON nested 100 deep", rc, err, p, "nested too deeply");
        p = io_path(tmpdir, "io_dtype_q7.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"Q7\",\"shape\":[4],\"data_offsets\":[0,16]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("unknown dtype Q7", rc, err, p, "\"Q7\"");
        p = io_path(tmpdir, "io_size_mismatch.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", z, 24, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("shape / data_offsets size mismatch", rc, err, p, "needs 24 bytes");
        p = io_path(tmpdir, "io_overlap.safetensors");
        io_write_raw_st(p,
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\","
                        "\"shape\":[4],\"data_offsets\":[8,24]}}",
                        z, 24, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("overlapping data_offsets", rc, err, p, "overlap");
        p = io_path(tmpdir, "io_past_end.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("data_offsets past the end", rc, err, p, "past the end of the data section");
        p = io_path(tmpdir, "io_reversed.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("data_offsets with begin > end", rc, err, p, "begin <= end");
        p = io_path(tmpdir, "io_duplicate.safetensors");
        io_write_raw_st(p,
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\","
                        "\"shape\":[2],\"data_offsets\":[8,16]}}",
                        z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("duplicate tensor name", rc, err, p, "twice");
        p = io_path(tmpdir, "io_no_offsets.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("entry without data_offsets", rc, err, p, "data_offsets");
        p = io_path(tmpdir, "io_neg_dim.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", z, 16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("negative dim", rc, err, p, "non-negative");
        p = io_path(tmpdir, "io_9dims.safetensors");
        io_write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}}", z, 16,
                        0);
        rc = st_open(&f, p, err);
        io_expect_fail("9 dims", rc, err, p, "at most 8");
        p = io_path(tmpdir, "io_meta_num.safetensors");
        io_write_raw_st(
            p, "{\"__metadata__\":{\"step\":12},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", z,
            16, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("__metadata__ value not a string", rc, err, p, "must be strings");
        p = io_path(tmpdir, "io_not_object.safetensors");
        io_write_raw_st(p, "[1, 2, 3]", z, 0, 0);
        rc = st_open(&f, p, err);
        io_expect_fail("header is an array", rc, err, p, "a JSON object");
        p = io_path(tmpdir, "io_does_not_exist.safetensors");
        rc = st_open(&f, p, err);
        io_expect_fail("nonexistent file", rc, err, p, "No such file");
    }

    // ---- npy: round trips 0-D .. 4-D, then corruption
    {
        const char* p = io_path(tmpdir, "io_arr.npy");
        float v[120], *got = NULL;
        int nd = 0;
        int64_t sh[ST_MAXDIM];
        for (int i = 0; i < 120; i++) v[i] = io_val(500 + i);
        int64_t shapes[5][4] = {{0}, {7}, {3, 5}, {2, 3, 4}, {2, 3, 4, 5}};
        int ok = 1;
        for (int d = 0; d <= 4 && ok; d++) {
            ok = !npy_write(p, v, d, shapes[d], err) && !npy_read(p, &got, &nd, sh, err) && nd == d &&
                 memcmp(sh, shapes[d], sizeof(int64_t) * (size_t)d) == 0 &&
                 memcmp(got, v, 4 * (size_t)st_numel(d, shapes[d])) == 0;
            free(got);
            got = NULL;
        }
        io_expect_ok("npy write/read 0-D .. 4-D", ok, ok ? "shapes and values exact" : err);
        int64_t want_any[3] = {2, -1, 4}, want_bad[3] = {2, -1, 5};
        rc = npy_read_shape(p, &got, 3, want_any, err); // p now holds the 4-D array: rank mismatch first
        io_expect_fail("npy_read_shape: wrong rank", rc, err, p, "[2, 3, 4, 5]");
        npy_write(p, v, 3, shapes[3], err);
        rc = npy_read_shape(p, &got, 3, want_any, err);
        io_expect_ok("npy_read_shape with -1 (any)", rc == 0 && got && got[23] == v[23],
                     rc ? err : "[2, *, 4] accepts [2, 3, 4]");
        free(got);
        got = NULL;
        rc = npy_read_shape(p, &got, 3, want_bad, err);
        io_expect_fail("npy_read_shape: wrong shape", rc, err, p, "expected [2, *, 5]");
        p = io_path(tmpdir, "io_f8.npy");
        io_write_raw_npy(p, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 24);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy dtype '<f8'", rc, err, p, "astype(np.float32)");
        p = io_path(tmpdir, "io_fortran.npy");
        io_write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy fortran_order True", rc, err, p, "Fortran");
        p = io_path(tmpdir, "io_v2.npy");
        io_write_raw_npy(p, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy v2.0 with truncated data", rc, err, p, "truncated");
        p = io_path(tmpdir, "io_v3.npy");
        io_write_raw_npy(p, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", 24);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_ok("npy v3.0 with Python-2 style 2L", rc == 0 && nd == 2 && sh[0] == 2 && sh[1] == 3,
                     rc ? err : "shape (2, 3)");
        free(got);
        got = NULL;
        p = io_path(tmpdir, "io_v4.npy");
        io_write_raw_npy(p, 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy version 4.0", rc, err, p, "version 4.0");
        p = io_path(tmpdir, "io_bad_shape.npy");
        io_write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 24);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy unparsable shape", rc, err, p, "cannot parse shape");
        p = io_path(tmpdir, "io_no_shape.npy");
        io_write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, }", 24);
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy header without shape", rc, err, p, "lacks 'shape'");
        p = io_path(tmpdir, "io_hlen.npy");
        {
            unsigned char b[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0x7f, '{', '}'};
            io_write_bytes(p, b, 12);
        }
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy header length past the file", rc, err, p, "past the end");
        p = io_path(tmpdir, "io_magic.npy");
        {
            const char zip[] = "PK\x03\x04 not an npy file";
            io_write_bytes(p, zip, sizeof(zip) - 1);
        }
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy bad magic (an .npz?)", rc, err, p, "magic");
        p = io_path(tmpdir, "io_missing.npy");
        rc = npy_read(p, &got, &nd, sh, err);
        io_expect_fail("npy nonexistent file", rc, err, p, "No such file");
        io_expect_ok("failed reads leave data NULL", got == NULL, "*data == NULL after every failure");
    }

    for (int k = io_n_files - 1; k >= 0; k--) remove(io_files[k]); // newest first, so directories are empty by then
}
