// world/world_tests.h: tests of the built-in world (grammar, renderer, text encoder, dataset files, scorer, PNG).
// test_world() runs them all through lib/testing.h; it takes a few seconds on 2 CPU cores (small sets only).
#pragma once
#include "world.h"
#include "text.h"
#include "score.h"
#include "png.h"
#include "../lib/testing.h"
#include <time.h>

// ----------------------------------------------------------------------------------------------------------------
// degradations of a set of clips [n, 3, T, H, W] (in place) for the scorer's sanity tests

static inline void wt_blur(float* x, int n, int T, int H, int W, float sigma) { // separable Gaussian per frame
    float k[7], ks = 0;
    for (int i = -3; i <= 3; i++) {
        k[i + 3] = expf(-(float)(i * i) / (2 * sigma * sigma));
        ks += k[i + 3];
    }
    for (int i = 0; i < 7; i++) k[i] /= ks;
    float* tmp = (float*)malloc(sizeof(float) * (size_t)H * W);
    for (size_t pl = 0; pl < (size_t)n * 3 * T; pl++) {
        float* p = x + pl * H * W;
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                float s = 0;
                for (int i = -3; i <= 3; i++) {
                    int q = xx + i < 0 ? 0 : xx + i >= W ? W - 1 : xx + i;
                    s += k[i + 3] * p[y * W + q];
                }
                tmp[y * W + xx] = s;
            }
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                float s = 0;
                for (int i = -3; i <= 3; i++) {
                    int q = y + i < 0 ? 0 : y + i >= H ? H - 1 : y + i;
                    s += k[i + 3] * tmp[q * W + xx];
                }
                p[y * W + xx] = s;
            }
    }
    free(tmp);
}

enum { WT_REAL, WT_BLUR, WT_NOISE, WT_COLOUR, WT_STATIC, WT_FLICKER, WT_MEAN, WT_N };
static const char* const WT_NAMES[WT_N] = {"real",   "blurred",    "noisy",       "wrong-colour",
                                           "static", "flickering", "dataset-mean"};

static inline void wt_degrade(float* d, const float* real_clips, int kind, int n, int T, int H, int W) {
    size_t plane = (size_t)H * W, numel = 3 * (size_t)T * plane, tot = numel * n;
    memcpy(d, real_clips, sizeof(float) * tot);
    if (kind == WT_BLUR) wt_blur(d, n, T, H, W, 1.0f); // Gaussian, sigma 1 px
    if (kind == WT_NOISE) {                            // + N(0, 0.2^2), clamped
        WRng r = wrng_seed(99, 1, 1);
        for (size_t i = 0; i < tot; i++) {
            float v = d[i] + 0.2f * (float)wrng_normal(&r);
            d[i] = v > 1 ? 1 : v < -1 ? -1 : v;
        }
    }
    if (kind == WT_COLOUR) // (r, g, b) -> (g, b, r): red -> blue, ...
        for (int i = 0; i < n; i++) {
            float* p = d + (size_t)i * numel;
            for (size_t j = 0; j < T * plane; j++) {
                float r0 = p[j];
                p[j] = p[T * plane + j];
                p[T * plane + j] = p[2 * T * plane + j];
                p[2 * T * plane + j] = r0;
            }
        }
    if (kind == WT_STATIC) // every frame = frame 0
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                for (int t = 1; t < T; t++)
                    memcpy(d + i * numel + (c * T + t) * plane, d + i * numel + c * T * plane, sizeof(float) * plane);
    if (kind == WT_FLICKER) // odd frames washed out: 0.6 x + 0.25
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                for (int t = 1; t < T; t += 2) {
                    float* p = d + i * numel + (c * T + t) * plane;
                    for (size_t j = 0; j < plane; j++) p[j] = 0.6f * p[j] + 0.25f;
                }
    if (kind == WT_MEAN) { // every clip = the per-pixel mean clip
        for (size_t j = 0; j < numel; j++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += real_clips[(size_t)i * numel + j];
            d[j] = (float)(s / n);
        }
        for (int i = 1; i < n; i++) memcpy(d + (size_t)i * numel, d, sizeof(float) * numel);
    }
}

// ----------------------------------------------------------------------------------------------------------------
// a minimal inflate (stored and fixed-Huffman blocks: what png_zlib writes) to read our PNGs back

typedef struct {
    const unsigned char* p;
    size_t n, pos;
    int bit;
    int bad;
} WtBits;
static inline int wt_bit(WtBits* b) {
    if (b->pos >= b->n) {
        b->bad = 1;
        return 0;
    }
    int v = (b->p[b->pos] >> b->bit) & 1;
    if (++b->bit == 8) {
        b->bit = 0;
        b->pos++;
    }
    return v;
}
static inline int wt_bits(WtBits* b, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) v |= wt_bit(b) << i;
    return v;
}
static inline int wt_fixed_sym(WtBits* b) {
    int code = 0;
    for (int len = 1; len <= 9 && !b->bad; len++) {
        code = (code << 1) | wt_bit(b);
        if (len == 7 && code <= 23) return 256 + code;
        if (len == 8 && code >= 48 && code <= 191) return code - 48;
        if (len == 8 && code >= 192 && code <= 199) return 280 + code - 192;
        if (len == 9 && code >= 400) return 144 + code - 400;
    }
    b->bad = 1;
    return -1;
}
// inflates a zlib stream into out[cap]; returns the byte count or -1
static inline long wt_inflate(const unsigned char* z, size_t zn, unsigned char* out, size_t cap) {
    if (zn < 6 || (z[0] & 15) != 8 || ((z[0] << 8) | z[1]) % 31 != 0) return -1;
    WtBits b = {z + 2, zn - 2, 0, 0, 0};
    size_t o = 0;
    int final = 0;
    while (!final && !b.bad) {
        final = wt_bit(&b);
        int type = wt_bits(&b, 2);
        if (type == 0) {
            if (b.bit) {
                b.bit = 0;
                b.pos++;
            }
            if (b.pos + 4 > b.n) return -1;
            size_t len = b.p[b.pos] | (size_t)b.p[b.pos + 1] << 8;
            b.pos += 4;
            if (b.pos + len > b.n || o + len > cap) return -1;
            memcpy(out + o, b.p + b.pos, len);
            o += len;
            b.pos += len;
        } else if (type == 1) {
            for (;;) {
                int s = wt_fixed_sym(&b);
                if (b.bad) return -1;
                if (s < 256) {
                    if (o >= cap) return -1;
                    out[o++] = (unsigned char)s;
                    continue;
                }
                if (s == 256) break;
                int lc = s - 257;
                if (lc > 28) return -1;
                int len = PNG_LEN_BASE[lc] + wt_bits(&b, PNG_LEN_EXTRA[lc]);
                int dc = 0;
                for (int i = 0; i < 5; i++) dc = (dc << 1) | wt_bit(&b);
                if (dc > 29) return -1;
                size_t dist = (size_t)PNG_DIST_BASE[dc] + (size_t)wt_bits(&b, PNG_DIST_EXTRA[dc]);
                if (dist > o || o + (size_t)len > cap) return -1;
                for (int i = 0; i < len; i++, o++) out[o] = out[o - dist];
            }
        } else
            return -1;
    }
    if (b.bad) return -1;
    if (b.bit) b.pos++;
    if (b.pos + 4 > b.n) return -1;
    uint32_t ad =
        (uint32_t)b.p[b.pos] << 24 | (uint32_t)b.p[b.pos + 1] << 16 | (uint32_t)b.p[b.pos + 2] << 8 | b.p[b.pos + 3];
    return ad == png_adler(out, o) ? (long)o : -1;
}

// reads back a PNG written by png_write: checks signature and CRCs, inflates, undoes the filters; 0 on success
static inline int wt_read_png(const char* path, unsigned char** rgb, int* w, int* h) {
    FILE* f = fopen(path, "rb");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char* d = (unsigned char*)malloc((size_t)n);
    int ok = fread(d, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    if (!ok || n < 8 || memcmp(d, sig, 8)) {
        free(d);
        return 1;
    }
    unsigned char* idat = NULL;
    size_t idat_n = 0, pos = 8;
    *w = *h = 0;
    int rc = 1;
    while (pos + 12 <= (size_t)n) {
        uint32_t len = (uint32_t)d[pos] << 24 | (uint32_t)d[pos + 1] << 16 | (uint32_t)d[pos + 2] << 8 | d[pos + 3];
        if (pos + 12 + len > (size_t)n) break;
        const unsigned char* type = d + pos + 4;
        uint32_t crc = (uint32_t)d[pos + 8 + len] << 24 | (uint32_t)d[pos + 9 + len] << 16 |
                       (uint32_t)d[pos + 10 + len] << 8 | d[pos + 11 + len];
        if (crc != png_crc(0, type, 4 + len)) break;
        if (!memcmp(type, "IHDR", 4)) {
            *w = (int)(d[pos + 8] << 24 | d[pos + 9] << 16 | d[pos + 10] << 8 | d[pos + 11]);
            *h = (int)(d[pos + 12] << 24 | d[pos + 13] << 16 | d[pos + 14] << 8 | d[pos + 15]);
        }
        if (!memcmp(type, "IDAT", 4)) {
            idat = (unsigned char*)realloc(idat, idat_n + len);
            memcpy(idat + idat_n, d + pos + 8, len);
            idat_n += len;
        }
        if (!memcmp(type, "IEND", 4)) {
            rc = 0;
            break;
        }
        pos += 12 + len;
    }
    if (rc == 0 && *w > 0 && *h > 0) {
        size_t stride = (size_t)*w * 3, raw_n = (stride + 1) * (size_t)*h;
        unsigned char* raw = (unsigned char*)malloc(raw_n);
        *rgb = (unsigned char*)malloc(stride * (size_t)*h);
        if (wt_inflate(idat, idat_n, raw, raw_n) != (long)raw_n) rc = 1;
        for (int y = 0; y < *h && !rc; y++) {
            int ft = raw[(size_t)y * (stride + 1)];
            for (size_t x = 0; x < stride; x++) {
                unsigned char v = raw[(size_t)y * (stride + 1) + 1 + x];
                unsigned char a = x >= 3 ? (*rgb)[(size_t)y * stride + x - 3] : 0,
                              u = y ? (*rgb)[(size_t)(y - 1) * stride + x] : 0;
                (*rgb)[(size_t)y * stride + x] = (unsigned char)(ft == 0 ? v : ft == 1 ? v + a : ft == 2 ? v + u : 0);
                if (ft > 2) rc = 1;
            }
        }
        free(raw);
        if (rc) {
            free(*rgb);
            *rgb = NULL;
        }
    } else
        rc = 1;
    free(idat);
    free(d);
    return rc;
}

// ----------------------------------------------------------------------------------------------------------------

static inline void test_world_grammar(void) {
    printf("world: grammar, captions <-> attributes, held-out split\n");
    for (int w = 0; w < 2; w++) {
        WorldConfig c = w == 0 ? world_config_gpu() : world_config_tiny();
        WRng r = wrng_seed(7, 0, (uint64_t)w);
        int bad_roundtrip = 0, too_long = 0, oov = 0, train_held = 0, held_not = 0, two = 0, maxw = 0, collide = 0;
        for (int i = 0; i < 2000; i++) {
            WorldScene s, p;
            char cap[WORLD_CAPLEN], err[256], words[64][TEXT_WORDLEN];
            int which = i % 2 ? WORLD_TRAIN : WORLD_HELDOUT;
            world_sample_scene(&c, &r, which, &s);
            world_caption(&s, cap, sizeof(cap));
            int nw = text_split_words(cap, words, 64);
            maxw = nw > maxw ? nw : maxw;
            too_long += nw > c.text_len;
            for (int k = 0; k < nw && k < 64; k++) oov += !world_in_vocab(words[k]);
            if (world_parse_caption(cap, &p, err)) {
                bad_roundtrip++;
                continue;
            }
            two += s.n_obj == 2;
            if (s.n_obj == 2) collide += world_objects_collide(&s.obj[0], &s.obj[1]);
            int same = p.n_obj == s.n_obj && p.bg == s.bg;
            for (int k = 0; k < s.n_obj && same; k++)
                same = p.obj[k].shape == s.obj[k].shape && p.obj[k].colour == s.obj[k].colour &&
                       p.obj[k].size == s.obj[k].size && p.obj[k].dir == s.obj[k].dir &&
                       p.obj[k].speed == s.obj[k].speed;
            bad_roundtrip += !same;
            if (which == WORLD_TRAIN)
                train_held += world_is_heldout(&c, &s);
            else
                held_not += !world_is_heldout(&c, &s);
        }
        printf(
            "  %-4s 2000 scenes: %d with two objects, longest caption %d words (text_len %d); round-trip failures %d, "
            "unknown words %d, overlapping pairs %d\n",
            c.name, two, maxw, c.text_len, bad_roundtrip, oov, collide);
        EXPECT(bad_roundtrip == 0, "%s: %d captions did not parse back to their attributes", c.name, bad_roundtrip);
        EXPECT(too_long == 0 && oov == 0, "%s: %d captions longer than text_len, %d unknown words", c.name, too_long,
               oov);
        EXPECT(train_held == 0 && held_not == 0,
               "%s: %d training scenes use a held-out pair, %d held-out scenes do not", c.name, train_held, held_not);
        EXPECT(collide == 0, "%s: %d two-object scenes overlap", c.name, collide);
        EXPECT(c.max_obj == 1 ? two == 0 : two > 500, "%s: %d two-object scenes of 2000", c.name, two);
    }
    // captions that are not from the grammar: a clear message, never a crash
    const char* bad[] = {"",
                         "big red circle moving left fast",
                         "big red moving left fast on black",
                         "big purple circle moving left fast on black",
                         "big red circle moving fast on black",
                         "big red circle standing still and small red square standing still on gray",
                         "big red circle standing still and small blue square standing still and big green circle "
                         "standing still on gray"};
    for (int i = 0; i < 7; i++) {
        WorldScene s;
        char err[256] = "";
        int rc = world_parse_caption(bad[i], &s, err);
        printf("  parse \"%s\" -> %s\n", bad[i], rc ? err : "accepted");
        EXPECT(rc != 0 && err[0], "caption \"%s\" should be rejected with a message", bad[i]);
    }
    WorldScene s;
    char err[256];
    EXPECT(world_parse_caption("On GRAY: Small, Cyan TRIANGLE standing still!", &s, err) == 0 &&
               s.obj[0].shape == SHAPE_TRIANGLE && s.obj[0].colour == COL_CYAN && s.bg == BG_GRAY &&
               s.obj[0].dir == DIR_STILL,
           "free word order and case should parse");
}

static inline void test_world_render(void) {
    printf("world: renderer\n");
    WorldConfig c = world_config_gpu();
    // determinism: the same (seed, split, index) gives the same clip; another seed another clip
    WorldSet a, b, d;
    world_generate(&c, WORLD_TRAIN, 4, 11, &a);
    world_generate(&c, WORLD_TRAIN, 4, 11, &b);
    world_generate(&c, WORLD_TRAIN, 4, 12, &d);
    size_t tot = world_clip_numel(&c) * 4;
    EXPECT(memcmp(a.clips, b.clips, sizeof(float) * tot) == 0 && strcmp(a.captions[3], b.captions[3]) == 0,
           "same seed, different data");
    EXPECT(memcmp(a.clips, d.clips, sizeof(float) * tot) != 0, "different seeds gave identical data");
    world_set_free(&a);
    world_set_free(&b);
    world_set_free(&d);
    // the training stream: context = text_encode(caption), clip = render(scene), never a held-out pair, resumable
    {
        int n = 32;
        size_t numel = world_clip_numel(&c), ctx = (size_t)c.text_len * c.text_dim;
        float* clips = (float*)malloc(sizeof(float) * numel * n);
        float* context = (float*)malloc(sizeof(float) * ctx * n);
        float* one = (float*)malloc(sizeof(float) * (numel > ctx ? numel : ctx));
        char* caps = (char*)malloc((size_t)WORLD_CAPLEN * n);
        WorldScene* scenes = (WorldScene*)malloc(sizeof(WorldScene) * n);
        WRng r = wrng_seed(1, 2, 3), saved;
        world_sample_batch(&c, &r, WORLD_TRAIN, n / 2, clips, context, caps, scenes);
        saved = r;
        world_sample_batch(&c, &r, WORLD_TRAIN, n / 2, clips + numel * (n / 2), context + ctx * (n / 2),
                           caps + WORLD_CAPLEN * (n / 2), scenes + n / 2);
        TextEncoder te = world_text_encoder(&c);
        int bad_ctx = 0, bad_clip = 0, held = 0;
        for (int i = 0; i < n; i++) {
            text_encode(&te, caps + (size_t)WORLD_CAPLEN * i, one, NULL);
            bad_ctx += memcmp(one, context + ctx * i, sizeof(float) * ctx) != 0;
            world_render_clip(one, &scenes[i], c.T, c.H, c.W);
            bad_clip += memcmp(one, clips + numel * i, sizeof(float) * numel) != 0;
            held += world_is_heldout(&c, &scenes[i]);
        }
        world_sample_batch(&c, &saved, WORLD_TRAIN, 1, one, NULL, NULL, NULL); // resume from the saved state
        int resumed = memcmp(one, clips + numel * (n / 2), sizeof(float) * numel) == 0;
        printf("  stream of %d: %d contexts and %d clips disagree with encode/render, %d held-out, resume %s\n", n,
               bad_ctx, bad_clip, held, resumed ? "exact" : "DIFFERENT");
        EXPECT(bad_ctx == 0 && bad_clip == 0 && held == 0 && resumed, "training stream is inconsistent");
        free(clips);
        free(context);
        free(one);
        free(caps);
        free(scenes);
    }
    // every object stays whole inside the frame: analytically (centre +- half extent inside [0, W] x [0, H] at every
    // frame), and in the pixels at the preset sizes: an object's ink (sum of |pixel - background|) is the same in
    // every frame, up to anti-aliasing. Odd sizes (T >= 2, H, W >= 8) render without trouble.
    const int sizes[4][3] = {{9, 32, 32}, {4, 16, 16}, {2, 8, 8}, {5, 12, 20}};
    for (int k = 0; k < 4; k++) {
        int T = sizes[k][0], H = sizes[k][1], W = sizes[k][2], outside = 0;
        WRng r = wrng_seed(3, 3, (uint64_t)k);
        float* clip = (float*)malloc(sizeof(float) * 3 * T * H * W);
        double worst = 0, lo = 1, hi = -1;
        for (int i = 0; i < 200; i++) {
            WorldScene s;
            world_sample_scene(&c, &r, WORLD_ANY, &s);
            world_render_clip(clip, &s, T, H, W);
            for (int j = 0; j < s.n_obj; j++)
                for (int t = 0; t < T; t++) {
                    float cx, cy, rad = WORLD_SIZE_FRAC[s.obj[j].size] * (float)(H < W ? H : W);
                    world_object_centre(&s.obj[j], t, T, H, W, &cx, &cy);
                    outside += cx - rad < 0 || cx + rad > W || cy - rad < 0 || cy + rad > H;
                }
            double ink0 = 0;
            for (int t = 0; t < T; t++) {
                double ink = 0;
                for (int ch = 0; ch < 3; ch++)
                    for (int p = 0; p < H * W; p++) {
                        float v = clip[((size_t)ch * T + t) * H * W + p];
                        ink += fabs(v - WORLD_BG_RGB[s.bg][ch]);
                        lo = v < lo ? v : lo;
                        hi = v > hi ? v : hi;
                    }
                if (t == 0)
                    ink0 = ink;
                else
                    worst = fmax(worst, fabs(ink - ink0) / ink0);
            }
        }
        printf("  %dx%dx%d: 200 scenes, values in [%.3f, %.3f], objects outside the frame %d, largest change of object "
               "ink "
               "across frames %.2f%%\n",
               T, H, W, lo, hi, outside, 100 * worst);
        EXPECT(lo >= -1 && hi <= 1, "values outside [-1, 1]");
        EXPECT(outside == 0, "%dx%dx%d: %d object-frames reach outside the frame", T, H, W, outside);
        if (k < 2) EXPECT(worst < 0.06, "%dx%dx%d: object ink changes by %.1f%% across frames", T, H, W, 100 * worst);
        free(clip);
    }
}

static inline void test_world_text(void) {
    printf("world: text encoder\n");
    WorldConfig c = world_config_tiny();
    TextEncoder te = world_text_encoder(&c);
    te.quiet = 1;
    int L = c.text_len, D = c.text_dim;
    float* a = (float*)malloc(sizeof(float) * L * D * 4);
    float *b = a + L * D, *e = b + L * D, *f = e + L * D;
    TextInfo ia, ib, ie, iff;
    text_encode(&te, "big red circle moving left fast on black", a, &ia);
    text_encode(&te, "big red circle moving left fast on black", b, &ib);
    text_encode(&te, "", e, &ie);
    text_encode(&te, "big blue circle moving left fast on black", f, &iff);
    double rms0 = 0, pad = 0, empty = 0, diff_row1 = 0, diff_row0 = 0;
    for (int d = 0; d < D; d++) rms0 += a[d] * a[d] / D;
    for (int i = ia.n_used * D; i < L * D; i++) pad += fabs(a[i]);
    for (int i = 0; i < L * D; i++) empty += fabs(e[i]);
    for (int d = 0; d < D; d++) {
        diff_row1 += fabs(a[D + d] - f[D + d]);
        diff_row0 += fabs(a[d] - f[d]);
    }
    printf("  8-word caption: %d rows used of %d, row 0 rms %.4f, padding |sum| %.1f; empty caption |sum| %.1f; "
           "red->blue changes row 1 by %.2f, row 0 by %.2f\n",
           ia.n_used, L, sqrt(rms0), pad, empty, diff_row1, diff_row0);
    EXPECT(ia.n_words == 8 && ia.n_used == 8 && ia.n_unknown == 0, "words %d used %d unknown %d", ia.n_words, ia.n_used,
           ia.n_unknown);
    EXPECT(fabs(sqrt(rms0) - 1) < 1e-4, "rows should have unit RMS, got %f", sqrt(rms0));
    EXPECT(pad == 0 && empty == 0 && ie.n_used == 0, "rows past the caption and the empty caption must be zero");
    EXPECT(memcmp(a, b, sizeof(float) * L * D) == 0, "the encoder is not deterministic");
    EXPECT(diff_row1 > 1 && diff_row0 == 0, "changing word 1 should change row 1 only");
    // the same word in another phrase of the caption reads differently (so attributes bind to their object)
    text_encode(&te, "red and red", f, &iff);
    double d02 = 0;
    for (int d = 0; d < D; d++) d02 += fabs(f[d] - f[2 * D + d]);
    EXPECT(d02 > 1, "'red' in phrase 1 and phrase 2 encode the same (|diff| %f)", d02);
    // unknown words get a hashed row and are counted; long captions are cut to text_len
    text_encode(&te, "big zorp circle", f, &iff);
    double row1 = 0;
    for (int d = 0; d < D; d++) row1 += fabs(f[D + d]);
    EXPECT(iff.n_unknown == 1 && row1 > 0, "unknown word: n_unknown %d, row |sum| %f", iff.n_unknown, row1);
    text_encode(&te, "big red circle moving left fast and small blue square moving up slow on black with extra words",
                f, &iff);
    printf("  18-word caption: %d words, %d rows used (text_len %d), %d unknown\n", iff.n_words, iff.n_used, L,
           iff.n_unknown);
    EXPECT(iff.n_words == 18 && iff.n_used == L && iff.n_unknown == 3, "long caption: words %d used %d unknown %d",
           iff.n_words, iff.n_used, iff.n_unknown);
    text_encode(&te, NULL, f, &iff);
    EXPECT(iff.n_used == 0, "NULL caption should encode as empty");
    free(a);
}

static inline void test_world_files(void) {
    printf("world: dataset files\n");
    WorldConfig c = world_config_tiny();
    WorldSet s, r;
    char path[256], err[ST_ERRLEN];
    snprintf(path, sizeof(path), "/tmp/tmd_world_test_%lx.safetensors",
             (unsigned long)time(NULL) ^ (unsigned long)(uintptr_t)&s);
    world_generate(&c, WORLD_HELDOUT, 16, 5, &s);
    int rc = world_save(&s, path, 5, err);
    EXPECT(rc == 0, "save: %s", err);
    rc = world_load(&r, path, err);
    EXPECT(rc == 0, "load: %s", err);
    if (rc == 0) {
        size_t ctx = (size_t)c.text_len * c.text_dim * 16;
        int caps_ok = 1, nh = 0;
        for (int i = 0; i < 16; i++) {
            caps_ok &= strcmp(s.captions[i], r.captions[i]) == 0;
            nh += r.heldout[i] > 0.5f;
        }
        printf("  saved and loaded 16 tiny eval clips: %d held-out, world \"%s\", split \"%s\"\n", nh, r.world,
               r.split);
        EXPECT(r.n == 16 && r.T == c.T && r.H == c.H && r.W == c.W && r.text_len == c.text_len &&
                   r.text_dim == c.text_dim,
               "shapes changed on the way through the file");
        EXPECT(memcmp(s.clips, r.clips, sizeof(float) * world_clip_numel(&c) * 16) == 0 &&
                   memcmp(s.context, r.context, sizeof(float) * ctx) == 0,
               "clips or context changed on the way through the file");
        EXPECT(caps_ok && nh == 8 && strcmp(r.world, "tiny") == 0 && strcmp(r.split, "eval") == 0,
               "captions or metadata changed");
        world_set_free(&r);
    }
    // bad files: each gets a message, none crashes
    const char* meta[] = {"captions", "a\nb"};
    float* junk = (float*)calloc(2 * 3 * 4 * 16 * 16, sizeof(float));
    StOut t;
    memset(&t, 0, sizeof(t));
    t.name = "clips";
    t.ndim = 5;
    t.f32 = junk;
    t.shape[0] = 2;
    t.shape[1] = 3;
    t.shape[2] = 4;
    t.shape[3] = 4;
    t.shape[4] = 4; // frames 4x4: too small
    st_write(path, &t, 1, meta, 1, err);
    err[0] = 0;
    EXPECT(world_load(&r, path, err) != 0 && strstr(err, "shape"), "4x4 frames: %s", err);
    printf("  4x4 frames     -> %s\n", err);
    t.shape[3] = 16;
    t.shape[4] = 16;
    for (int i = 0; i < 2 * 3 * 4 * 16 * 16; i++) junk[i] = 200; // 0..255 pixels
    st_write(path, &t, 1, meta, 1, err);
    err[0] = 0;
    EXPECT(world_load(&r, path, err) != 0 && strstr(err, "[-1, 1]"), "range: %s", err);
    printf("  values 200     -> %s\n", err);
    for (int i = 0; i < 2 * 3 * 4 * 16 * 16; i++) junk[i] = 0;
    const char* meta3[] = {"captions", "a\nb\nc"};
    st_write(path, &t, 1, meta3, 1, err);
    err[0] = 0;
    EXPECT(world_load(&r, path, err) != 0 && strstr(err, "captions"), "captions: %s", err);
    printf("  3 captions     -> %s\n", err);
    t.shape[0] = 0;
    st_write(path, &t, 1, meta, 1, err);
    err[0] = 0;
    EXPECT(world_load(&r, path, err) != 0, "empty set should be refused");
    printf("  0 clips        -> %s\n", err);
    err[0] = 0;
    EXPECT(world_load(&r, "/nonexistent/world.safetensors", err) != 0 && err[0], "missing file should be refused");
    free(junk);
    remove(path);
    world_set_free(&s);
}

// the real set must score near the top and each degraded version clearly lower, at both sizes
static inline void test_world_score(void) {
    printf("world: toy VBench on real vs degraded clips\n");
    for (int w = 0; w < 2; w++) {
        WorldConfig c = w == 0 ? world_config_tiny() : world_config_gpu();
        int n = w == 0 ? 96 : 64, T = c.T, H = c.H, W = c.W;
        WorldSet real_set, ref;
        world_generate(&c, WORLD_HELDOUT, n, 21, &real_set); // scored: half held-out captions
        world_generate(&c, WORLD_TRAIN, n, 22, &ref);        // Frechet reference: other clips
        char err[ST_ERRLEN];
        ScoreRef sr;
        int rc = score_ref_init(&sr, ref.clips, n, T, H, W, err);
        EXPECT(rc == 0, "reference: %s", err);
        float* d = (float*)malloc(sizeof(float) * world_clip_numel(&c) * n);
        WorldScore sc[WT_N];
        printf("  %s world, %d clips, reference %d other real_set clips\n", c.name, n, n);
        printf("    %-13s %7s %7s %7s %7s | %7s %7s %7s %7s | %7s %7s %7s\n", "set", "colour", "shape", "count",
               "motion", "sharp", "tempor", "backgr", "frechet", "quality", "semant", "total");
        for (int k = 0; k < WT_N; k++) {
            wt_degrade(d, real_set.clips, k, n, T, H, W);
            rc = score_clips(&sc[k], d, n, T, H, W, (const char* const*)real_set.captions, &sr, &c, NULL, err);
            EXPECT(rc == 0, "%s: %s", WT_NAMES[k], err);
            printf("    %-13s", WT_NAMES[k]);
            for (int q = 0; q < SC_NDIM; q++) printf(" %7.2f%s", 100 * sc[k].norm[q], q == 3 || q == 7 ? " |" : "");
            printf(" %7.2f %7.2f %7.2f\n", 100 * sc[k].quality, 100 * sc[k].semantic, 100 * sc[k].total);
        }
        printf("    (frechet distances: real_set %.2f, blurred %.1f, static %.1f; held-out semantic accuracy %.1f%% on "
               "%d clips)\n",
               sc[WT_REAL].raw[SC_FRECHET], sc[WT_BLUR].raw[SC_FRECHET], sc[WT_STATIC].raw[SC_FRECHET],
               100 * sc[WT_REAL].semantic_heldout, sc[WT_REAL].n_heldout);
        const WorldScore* r = &sc[WT_REAL];
        EXPECT(r->total > 0.97 && r->semantic > 0.99 && r->quality > 0.96,
               "%s: real_set clips score total %.3f (quality %.3f, "
               "semantic %.3f); they should be near the top",
               c.name, r->total, r->quality, r->semantic);
        EXPECT(r->n_heldout == n / 2 && r->semantic_heldout > 0.99, "%s: held-out real_set clips: %d, semantic %.3f",
               c.name, r->n_heldout, r->semantic_heldout);
        for (int k = 1; k < WT_N; k++)
            EXPECT(sc[k].total < r->total - 0.04, "%s: %s clips score total %.3f vs real_set %.3f: not clearly lower",
                   c.name, WT_NAMES[k], sc[k].total, r->total);
        // and each degradation is caught by the dimension meant for it
        EXPECT(sc[WT_BLUR].norm[SC_SHARPNESS] < r->norm[SC_SHARPNESS] - 0.4, "%s: blur: sharpness %.3f", c.name,
               sc[WT_BLUR].norm[SC_SHARPNESS]);
        EXPECT(sc[WT_NOISE].norm[SC_BACKGROUND] < r->norm[SC_BACKGROUND] - 0.4, "%s: noise: background %.3f", c.name,
               sc[WT_NOISE].norm[SC_BACKGROUND]);
        EXPECT(sc[WT_COLOUR].norm[SC_COLOUR] < 0.2, "%s: wrong colour: colour accuracy %.3f", c.name,
               sc[WT_COLOUR].norm[SC_COLOUR]);
        EXPECT(sc[WT_STATIC].norm[SC_MOTION] < 0.4, "%s: static: motion accuracy %.3f", c.name,
               sc[WT_STATIC].norm[SC_MOTION]);
        EXPECT(sc[WT_STATIC].raw[SC_FRECHET] > 3 * r->raw[SC_FRECHET], "%s: static: frechet %.2f vs real_set %.2f",
               c.name, sc[WT_STATIC].raw[SC_FRECHET], r->raw[SC_FRECHET]);
        EXPECT(sc[WT_FLICKER].norm[SC_TEMPORAL] < r->norm[SC_TEMPORAL] - 0.4, "%s: flicker: temporal %.3f", c.name,
               sc[WT_FLICKER].norm[SC_TEMPORAL]);
        EXPECT(sc[WT_MEAN].semantic < 0.1 && sc[WT_MEAN].norm[SC_FRECHET] < 0.1,
               "%s: dataset mean: semantic %.3f, frechet %.3f", c.name, sc[WT_MEAN].semantic,
               sc[WT_MEAN].norm[SC_FRECHET]);
        // the Frechet distance of a set to itself is ~0, and grows with the strength of a blur
        ScoreRef self;
        WorldScore s0, s1, s2;
        score_ref_init(&self, real_set.clips, n, T, H, W, err);
        score_clips(&s0, real_set.clips, n, T, H, W, (const char* const*)real_set.captions, &self, &c, NULL, err);
        memcpy(d, real_set.clips, sizeof(float) * world_clip_numel(&c) * n);
        wt_blur(d, n, T, H, W, 0.5f);
        score_clips(&s1, d, n, T, H, W, (const char* const*)real_set.captions, &sr, &c, NULL, err);
        printf("    graded: FD(real_set, itself) %.2e; blur 0.5 px: sharpness %.1f%%, frechet %.1f, total %.1f%% (blur "
               "1 px: %.1f%%)\n",
               s0.raw[SC_FRECHET], 100 * s1.norm[SC_SHARPNESS], s1.raw[SC_FRECHET], 100 * s1.total,
               100 * sc[WT_BLUR].total);
        EXPECT(s0.raw[SC_FRECHET] < 1e-6, "%s: FD of a set to itself is %g", c.name, s0.raw[SC_FRECHET]);
        EXPECT(s1.total < r->total && s1.total > sc[WT_BLUR].total,
               "%s: a lighter blur should score between real_set and blurred", c.name);
        // bad input: empty set, wrong range, NaN, captions outside the grammar, mismatched reference
        err[0] = 0;
        EXPECT(score_clips(&s2, d, 0, T, H, W, (const char* const*)real_set.captions, &sr, &c, NULL, err) != 0,
               "empty set accepted");
        if (w == 0) printf("    empty set      -> %s\n", err);
        d[5] = 7;
        err[0] = 0;
        EXPECT(score_clips(&s2, d, n, T, H, W, (const char* const*)real_set.captions, &sr, &c, NULL, err) != 0,
               "value 7 accepted");
        if (w == 0) printf("    value 7        -> %s\n", err);
        d[5] = NAN;
        err[0] = 0;
        EXPECT(score_clips(&s2, d, n, T, H, W, (const char* const*)real_set.captions, &sr, &c, NULL, err) != 0,
               "NaN accepted");
        d[5] = 0;
        const char* junk[2] = {"hello world", NULL};
        err[0] = 0;
        EXPECT(score_clips(&s2, d, 2, T, H, W, junk, &sr, &c, NULL, err) != 0, "captions outside the grammar accepted");
        if (w == 0) printf("    no world caption -> %s\n", err);
        err[0] = 0;
        EXPECT(score_clips(&s2, d, n, T, H - 2, W, (const char* const*)real_set.captions, &sr, &c, NULL, err) != 0,
               "reference of another shape accepted");
        free(d);
        world_set_free(&real_set);
        world_set_free(&ref);
    }
}

static inline void test_world_png(void) {
    printf("world: PNG contact sheet\n");
    WorldConfig c = world_config_tiny();
    WorldSet s;
    world_generate(&c, WORLD_TRAIN, 3, 8, &s);
    char path[256], err[PNG_ERRLEN];
    snprintf(path, sizeof(path), "/tmp/tmd_world_sheet_%lx.png",
             (unsigned long)time(NULL) ^ (unsigned long)(uintptr_t)&s);
    int w, h;
    unsigned char* img = png_contact_sheet(s.clips, 3, c.T, c.H, c.W, (const char* const*)s.captions, 0, &w, &h);
    int rc = png_write(path, img, w, h, err);
    EXPECT(rc == 0, "png_write: %s", err);
    unsigned char* back = NULL;
    int bw = 0, bh = 0;
    rc = wt_read_png(path, &back, &bw, &bh);
    FILE* f = fopen(path, "rb");
    long size = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fclose(f);
    }
    int same = rc == 0 && bw == w && bh == h && memcmp(back, img, (size_t)w * h * 3) == 0;
    printf("  %dx%d sheet of 3 tiny clips: %ld bytes (raw %d), read back %s\n", w, h, size, w * h * 3,
           same ? "identical" : "DIFFERENT");
    EXPECT(same, "the PNG does not read back to the same pixels (rc %d, %dx%d)", rc, bw, bh);
    // frame 0 of clip 0 sits at (4, 4), scaled x4: its centre pixel is the clip's pixel (8, 8); a caption is drawn
    unsigned char px[3];
    png_pixel(s.clips, c.T, c.H, c.W, 0, 8, 8, px);
    int ink = 0;
    for (int y = 4 + 64 + 3; y < 4 + 64 + 3 + PNG_LINE_H; y++)
        for (int x = 0; x < w; x++) ink += img[((size_t)y * w + x) * 3] == PNG_TEXT_RGB[0];
    EXPECT(memcmp(img + ((size_t)(4 + 32) * w + 4 + 32) * 3, px, 3) == 0, "frame pixels are not where they should be");
    EXPECT(ink > 50, "no caption text under the first clip (%d text pixels)", ink);
    free(back);
    free(img);
    remove(path);
    // mp4: only when ffmpeg is present; a missing ffmpeg is reported, not an error
    snprintf(path, sizeof(path), "/tmp/tmd_world_sheet_%lx.mp4", (unsigned long)time(NULL));
    rc = png_write_mp4(path, s.clips, 3, c.T, c.H, c.W, (const char* const*)s.captions, 4, err);
    if (rc == 2)
        printf("  mp4: skipped, %s\n", err);
    else {
        f = fopen(path, "rb");
        size = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            size = ftell(f);
            fclose(f);
        }
        printf("  mp4: %s, %ld bytes\n", rc ? err : "written", size);
        EXPECT(rc == 0 && size > 1000, "mp4: %s", rc ? err : "file too small");
        remove(path);
    }
    err[0] = 0;
    EXPECT(png_write_sheet("/tmp/x.png", s.clips, 0, c.T, c.H, c.W, NULL, 0, err) != 0 && err[0],
           "empty sheet accepted");
    world_set_free(&s);
}

static inline void test_world(void) {
    test_world_grammar();
    test_world_render();
    test_world_text();
    test_world_files();
    test_world_score();
    test_world_png();
}
