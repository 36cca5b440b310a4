// world/world.h: the built-in world. A compositional text-to-video toy: a caption grammar, the procedural
// renderer that draws the matching clip, the held-out split used for compositional evaluation, and the dataset
// files the trainer reads. Everything is deterministic from a seed and needs nothing from outside.
//
// A scene is one or two objects on a solid background. Each object has a shape, a colour, a size, a motion
// direction and a speed; its caption phrase is "<size> <colour> <shape> moving <dir> <speed>" or
// "<size> <colour> <shape> standing still", two phrases are joined by "and", and the caption ends "on <bg>":
//     "big red circle moving left fast on black"
//     "small cyan triangle standing still and big yellow square moving up slow on gray"      (15 words max)
// Object colours and background colours are disjoint, two objects never share a colour and never overlap, and
// every object stays inside the frame for the whole clip, so the scorer can find each object by its colour.
//
// Clips are [C=3, T, H, W] floats in [-1, 1] (Wan's pixel range), channel-major like Wan's [C, F, H, W].
// Sizes and travel are fractions of S = min(H, W), positions fractions of W and H, so any T >= 2, H, W >= 8 works.
// Shapes are drawn with signed-distance anti-aliasing (coverage = clamp(0.5 - signed distance in pixels, 0, 1)).
#pragma once
#include "../lib/safetensors.h" // dataset files (included first: it sets _FILE_OFFSET_BITS)
#include "text.h"               // the text encoder that turns captions into context
#include "../lib/rng.h"         // splitmix64
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <ctype.h>

// ----------------------------------------------------------------------------------------------------------------
// deterministic RNG: splitmix64 (never rand(), so a seed means the same data on every machine)

typedef struct {
    uint64_t s;
} WRng;
static inline uint64_t wrng_next(WRng* r) { return splitmix64(&r->s); }
static inline WRng wrng_seed(uint64_t a, uint64_t b, uint64_t c) { // independent stream per (seed, split, index)
    WRng r;
    r.s = a;
    wrng_next(&r);
    r.s ^= b * 0xD1B54A32D192ED03ull;
    wrng_next(&r);
    r.s ^= c * 0xAEF17502108EF2D9ull;
    wrng_next(&r);
    return r;
}
static inline double wrng_uniform(WRng* r) {
    return (double)(wrng_next(r) >> 11) * (1.0 / 9007199254740992.0);
} // [0,1)
static inline int wrng_int(WRng* r, int n) { return (int)(wrng_uniform(r) * n); } // [0,n)
static inline double wrng_normal(WRng* r) {
    double u1 = wrng_uniform(r), u2 = wrng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

// ----------------------------------------------------------------------------------------------------------------
// the grammar's attribute values; the word tables are the caption vocabulary (with WORLD_GLUE below)

enum { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, N_SHAPES };
enum { COL_RED, COL_GREEN, COL_BLUE, COL_YELLOW, COL_CYAN, COL_MAGENTA, N_COLOURS };
enum { BG_BLACK, BG_GRAY, BG_WHITE, N_BGS };
enum { SIZE_SMALL, SIZE_BIG, N_SIZES };
enum { DIR_LEFT, DIR_RIGHT, DIR_UP, DIR_DOWN, DIR_STILL, N_DIRS };
enum { SPEED_SLOW, SPEED_FAST, N_SPEEDS };

static const char* const WORLD_SHAPE_WORDS[N_SHAPES] = {"circle", "square", "triangle"};
static const char* const WORLD_COLOUR_WORDS[N_COLOURS] = {"red", "green", "blue", "yellow", "cyan", "magenta"};
static const char* const WORLD_BG_WORDS[N_BGS] = {"black", "gray", "white"};
static const char* const WORLD_SIZE_WORDS[N_SIZES] = {"small", "big"};
static const char* const WORLD_DIR_WORDS[N_DIRS] = {"left", "right", "up", "down", "still"};
static const char* const WORLD_SPEED_WORDS[N_SPEEDS] = {"slow", "fast"};
static const char* const WORLD_GLUE[] = {"moving", "standing", "and", "on"};
#define WORLD_N_GLUE 4

// RGB in [-1, 1]: saturated primaries and secondaries for objects, achromatic backgrounds (disjoint sets)
static const float WORLD_COLOUR_RGB[N_COLOURS][3] = {{1, -1, -1}, {-1, 1, -1}, {-1, -1, 1},
                                                     {1, 1, -1},  {-1, 1, 1},  {1, -1, 1}};
static const float WORLD_BG_RGB[N_BGS][3] = {{-1, -1, -1}, {0, 0, 0}, {1, 1, 1}};
static const float WORLD_SIZE_FRAC[N_SIZES] = {0.15f, 0.23f};   // "radius" (half extent) as a fraction of S
static const float WORLD_SPEED_FRAC[N_SPEEDS] = {0.20f, 0.40f}; // distance travelled over the clip, fraction of S
static const float WORLD_MARGIN = 0.03f;                        // objects keep this far (fraction of S) from the edge
static const int WORLD_DIR_DX[N_DIRS] = {-1, 1, 0, 0, 0};
static const int WORLD_DIR_DY[N_DIRS] = {0, 0, -1, 1, 0}; // image rows grow downwards: "up" is -y

#define WORLD_MAX_OBJ     2
#define WORLD_CAPLEN      128 // every caption of the grammar fits (the longest is ~100 chars)
#define WORLD_MAX_HELDOUT 4

typedef struct {
    int shape, colour, size, dir, speed; // enums above; speed is ignored when dir == DIR_STILL
    float u0, v0;                        // centre at frame 0, as fractions of W and H
} WorldObject;

typedef struct {
    int n_obj; // 1 or 2
    WorldObject obj[WORLD_MAX_OBJ];
    int bg;
} WorldScene;

// A world preset: clip and text shapes plus which attribute values its grammar uses (bit i of a mask = value i).
typedef struct {
    const char* name;
    int C, T, H, W;         // clip [C, T, H, W]
    int text_len, text_dim; // text encoder output [text_len, text_dim]
    int max_obj;            // captions have 1..max_obj objects
    unsigned shapes, colours, sizes, dirs, speeds, bgs;
    int n_heldout; // (colour, shape) pairs kept out of training, used only in evaluation
    int heldout[WORLD_MAX_HELDOUT][2];
    int n_train, n_eval; // default dataset sizes
} WorldConfig;

// GPU default: 3x9x32x32, one or two objects, the full grammar. 2048 training clips = 226 MB as F32.
static inline WorldConfig world_config_gpu(void) {
    WorldConfig c;
    memset(&c, 0, sizeof(c));
    c.name = "gpu";
    c.C = 3;
    c.T = 9;
    c.H = 32;
    c.W = 32;
    c.text_len = 16;
    c.text_dim = 64;
    c.max_obj = 2;
    c.shapes = 0x7;
    c.colours = 0x3f;
    c.sizes = 0x3;
    c.dirs = 0x1f;
    c.speeds = 0x3;
    c.bgs = 0x7;
    c.n_heldout = 3;
    c.heldout[0][0] = COL_RED;
    c.heldout[0][1] = SHAPE_TRIANGLE;
    c.heldout[1][0] = COL_GREEN;
    c.heldout[1][1] = SHAPE_CIRCLE;
    c.heldout[2][0] = COL_BLUE;
    c.heldout[2][1] = SHAPE_SQUARE;
    c.n_train = 2048;
    c.n_eval = 256;
    return c;
}

// tiny CPU world: 3x4x16x16, one big fast object, 4 colours, black or gray background (120 distinct captions),
// so that a tiny DiT learns it on 2 CPU cores in a minute or two.
static inline WorldConfig world_config_tiny(void) {
    WorldConfig c;
    memset(&c, 0, sizeof(c));
    c.name = "tiny";
    c.C = 3;
    c.T = 4;
    c.H = 16;
    c.W = 16;
    c.text_len = 12;
    c.text_dim = 32;
    c.max_obj = 1;
    c.shapes = 0x7;
    c.colours = 0xf;
    c.sizes = 1u << SIZE_BIG;
    c.dirs = 0x1f;
    c.speeds = 1u << SPEED_FAST;
    c.bgs = (1u << BG_BLACK) | (1u << BG_GRAY);
    c.n_heldout = 2;
    c.heldout[0][0] = COL_RED;
    c.heldout[0][1] = SHAPE_TRIANGLE;
    c.heldout[1][0] = COL_BLUE;
    c.heldout[1][1] = SHAPE_CIRCLE;
    c.n_train = 1024;
    c.n_eval = 64;
    return c;
}

static inline int world_config_by_name(WorldConfig* c, const char* name) {
    if (strcmp(name, "gpu") == 0) {
        *c = world_config_gpu();
        return 0;
    }
    if (strcmp(name, "tiny") == 0) {
        *c = world_config_tiny();
        return 0;
    }
    return 1;
}

static inline size_t world_clip_numel(const WorldConfig* c) { return (size_t)c->C * c->T * c->H * c->W; }

// ----------------------------------------------------------------------------------------------------------------
// captions <-> scenes

static inline int world_is_heldout(const WorldConfig* c, const WorldScene* s) {
    for (int i = 0; i < s->n_obj; i++)
        for (int k = 0; k < c->n_heldout; k++)
            if (s->obj[i].colour == c->heldout[k][0] && s->obj[i].shape == c->heldout[k][1]) return 1;
    return 0;
}

// writes the caption of s into buf (WORLD_CAPLEN bytes is always enough)
static inline void world_caption(const WorldScene* s, char* buf, int len) {
    int p = 0;
    buf[0] = 0;
    for (int i = 0; i < s->n_obj && p < len; i++) {
        const WorldObject* o = &s->obj[i];
        if (o->dir == DIR_STILL)
            p += snprintf(buf + p, (size_t)(len - p), "%s%s %s %s standing still", i ? " and " : "",
                          WORLD_SIZE_WORDS[o->size], WORLD_COLOUR_WORDS[o->colour], WORLD_SHAPE_WORDS[o->shape]);
        else
            p += snprintf(buf + p, (size_t)(len - p), "%s%s %s %s moving %s %s", i ? " and " : "",
                          WORLD_SIZE_WORDS[o->size], WORLD_COLOUR_WORDS[o->colour], WORLD_SHAPE_WORDS[o->shape],
                          WORLD_DIR_WORDS[o->dir], WORLD_SPEED_WORDS[o->speed]);
    }
    if (p < len) snprintf(buf + p, (size_t)(len - p), " on %s", WORLD_BG_WORDS[s->bg]);
}

static inline int world_word_index(const char* const* table, int n, const char* w) {
    for (int i = 0; i < n; i++)
        if (strcmp(table[i], w) == 0) return i;
    return -1;
}

static inline int world_in_vocab(const char* w) {
    if (world_word_index(WORLD_SHAPE_WORDS, N_SHAPES, w) >= 0) return 1;
    if (world_word_index(WORLD_COLOUR_WORDS, N_COLOURS, w) >= 0) return 1;
    if (world_word_index(WORLD_BG_WORDS, N_BGS, w) >= 0) return 1;
    if (world_word_index(WORLD_SIZE_WORDS, N_SIZES, w) >= 0) return 1;
    if (world_word_index(WORLD_DIR_WORDS, N_DIRS, w) >= 0) return 1;
    if (world_word_index(WORLD_SPEED_WORDS, N_SPEEDS, w) >= 0) return 1;
    return world_word_index(WORLD_GLUE, WORLD_N_GLUE, w) >= 0;
}

// Parses a caption back into attributes (positions are set to -1: captions do not say where). Word order within
// a phrase is free, "and" starts the next object, a background word may stand anywhere. Returns 0, or 1 with
// a message in err (unknown word, missing shape/colour/size/direction, too many objects, shared colour, ...).
static inline int world_parse_caption(const char* caption, WorldScene* s, char* err) {
    char words[64][TEXT_WORDLEN];
    int nw = text_split_words(caption, words, 64);
    memset(s, 0, sizeof(*s));
    s->bg = -1;
    if (nw == 0) {
        snprintf(err, 256, "empty caption");
        return 1;
    }
    if (nw > 64) {
        snprintf(err, 256, "caption has %d words, the grammar has at most 15", nw);
        return 1;
    }
    WorldObject* o = &s->obj[0];
    o->shape = o->colour = o->size = o->dir = o->speed = -1;
    s->n_obj = 1;
    int k;
    for (int i = 0; i < nw; i++) {
        const char* w = words[i];
        if (strcmp(w, "and") == 0) {
            if (s->n_obj == WORLD_MAX_OBJ) {
                snprintf(err, 256, "more than %d objects", WORLD_MAX_OBJ);
                return 1;
            }
            o = &s->obj[s->n_obj++];
            o->shape = o->colour = o->size = o->dir = o->speed = -1;
        } else if ((k = world_word_index(WORLD_SHAPE_WORDS, N_SHAPES, w)) >= 0)
            o->shape = k;
        else if ((k = world_word_index(WORLD_COLOUR_WORDS, N_COLOURS, w)) >= 0)
            o->colour = k;
        else if ((k = world_word_index(WORLD_BG_WORDS, N_BGS, w)) >= 0)
            s->bg = k;
        else if ((k = world_word_index(WORLD_SIZE_WORDS, N_SIZES, w)) >= 0)
            o->size = k;
        else if ((k = world_word_index(WORLD_DIR_WORDS, N_DIRS, w)) >= 0)
            o->dir = k;
        else if ((k = world_word_index(WORLD_SPEED_WORDS, N_SPEEDS, w)) >= 0)
            o->speed = k;
        else if (world_word_index(WORLD_GLUE, WORLD_N_GLUE, w) < 0) {
            snprintf(err, 256, "unknown word \"%.40s\"", w);
            return 1;
        }
    }
    for (int i = 0; i < s->n_obj; i++) {
        o = &s->obj[i];
        const char* miss = o->shape < 0                            ? "shape"
                           : o->colour < 0                         ? "colour"
                           : o->size < 0                           ? "size"
                           : o->dir < 0                            ? "direction"
                           : (o->dir != DIR_STILL && o->speed < 0) ? "speed"
                                                                   : NULL;
        if (miss) {
            snprintf(err, 256, "object %d has no %s", i + 1, miss);
            return 1;
        }
        if (o->dir == DIR_STILL) o->speed = SPEED_SLOW;
        o->u0 = o->v0 = -1;
    }
    if (s->bg < 0) {
        snprintf(err, 256, "no background colour (black, gray or white)");
        return 1;
    }
    if (s->n_obj == 2 && s->obj[0].colour == s->obj[1].colour) {
        snprintf(err, 256, "both objects are %s: the world gives every object its own colour",
                 WORLD_COLOUR_WORDS[s->obj[0].colour]);
        return 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// sampling scenes

static inline int world_pick(WRng* r, unsigned mask, int n) { // uniform over the set bits of mask
    int cnt = 0, i;
    for (i = 0; i < n; i++) cnt += (mask >> i) & 1;
    int k = wrng_int(r, cnt);
    for (i = 0; i < n; i++)
        if (((mask >> i) & 1) && k-- == 0) return i;
    return 0;
}

// centre of object o at frame t, in pixels, for a T x H x W clip
static inline void world_object_centre(const WorldObject* o, int t, int T, int H, int W, float* cx, float* cy) {
    float S = (float)(H < W ? H : W);
    float travel = o->dir == DIR_STILL ? 0.0f : WORLD_SPEED_FRAC[o->speed] * S;
    float f = T > 1 ? (float)t / (float)(T - 1) : 0.0f;
    *cx = o->u0 * (float)W + (float)WORLD_DIR_DX[o->dir] * travel * f;
    *cy = o->v0 * (float)H + (float)WORLD_DIR_DY[o->dir] * travel * f;
}

// start position so that the whole trajectory stays inside the frame (in units of a square frame)
static inline void world_place(WRng* r, WorldObject* o) {
    float rad = WORLD_SIZE_FRAC[o->size] + WORLD_MARGIN;
    float travel = o->dir == DIR_STILL ? 0.0f : WORLD_SPEED_FRAC[o->speed];
    float lo_u = rad, hi_u = 1 - rad, lo_v = rad, hi_v = 1 - rad;
    if (o->dir == DIR_LEFT) lo_u += travel;
    if (o->dir == DIR_RIGHT) hi_u -= travel;
    if (o->dir == DIR_UP) lo_v += travel;
    if (o->dir == DIR_DOWN) hi_v -= travel;
    o->u0 = lo_u + (float)wrng_uniform(r) * (hi_u - lo_u);
    o->v0 = lo_v + (float)wrng_uniform(r) * (hi_v - lo_v);
}

// two objects overlap if their bounding discs come closer than 1/32 of the frame at any of 16 times along the clip
static inline int world_objects_collide(const WorldObject* a, const WorldObject* b) {
    float need = WORLD_SIZE_FRAC[a->size] + WORLD_SIZE_FRAC[b->size] + 1.0f / 32;
    for (int t = 0; t <= 16; t++) {
        float ax, ay, bx, by;
        world_object_centre(a, t, 17, 1000, 1000, &ax, &ay);
        world_object_centre(b, t, 17, 1000, 1000, &bx, &by);
        float dx = (ax - bx) / 1000, dy = (ay - by) / 1000;
        if (dx * dx + dy * dy < need * need) return 1;
    }
    return 0;
}

// which = WORLD_TRAIN: never a held-out pair; WORLD_HELDOUT: at least one held-out pair; WORLD_ANY: either.
enum { WORLD_TRAIN, WORLD_HELDOUT, WORLD_ANY };

static inline void world_sample_scene(const WorldConfig* c, WRng* r, int which, WorldScene* s) {
    for (int attempt = 0;; attempt++) {
        memset(s, 0, sizeof(*s));
        s->n_obj = 1 + wrng_int(r, c->max_obj);
        s->bg = world_pick(r, c->bgs, N_BGS);
        for (int i = 0; i < s->n_obj; i++) {
            WorldObject* o = &s->obj[i];
            o->shape = world_pick(r, c->shapes, N_SHAPES);
            o->colour = world_pick(r, c->colours, N_COLOURS);
            o->size = world_pick(r, c->sizes, N_SIZES);
            o->dir = world_pick(r, c->dirs, N_DIRS);
            o->speed = world_pick(r, c->speeds, N_SPEEDS);
            if (o->dir == DIR_STILL) o->speed = SPEED_SLOW; // the caption has no speed: keep one canonical value
        }
        if (s->n_obj == 2 && s->obj[0].colour == s->obj[1].colour) continue;
        int h = world_is_heldout(c, s);
        if ((which == WORLD_TRAIN && h) || (which == WORLD_HELDOUT && !h)) {
            if (attempt < 100000) continue;
            fprintf(stderr, "world: cannot sample a %s scene in world %s\n",
                    which == WORLD_TRAIN ? "training" : "held-out", c->name);
            exit(1);
        }
        world_place(r, &s->obj[0]);
        if (s->n_obj == 1) return;
        for (int tries = 0; tries < 64; tries++) {
            world_place(r, &s->obj[1]);
            if (!world_objects_collide(&s->obj[0], &s->obj[1])) return;
        }
        // no room for this pair (two big objects on crossing paths): draw a new scene
    }
}

// ----------------------------------------------------------------------------------------------------------------
// rendering

// signed distance (pixels, negative inside) from pixel centre (px, py) to the shape centred at (cx, cy), half extent r
static inline float world_shape_sd(int shape, float px, float py, float cx, float cy, float r) {
    float dx = px - cx, dy = py - cy;
    if (shape == SHAPE_CIRCLE) return sqrtf(dx * dx + dy * dy) - r;
    if (shape == SHAPE_SQUARE) { // side 1.7 r, so its area (2.9 r^2) is close to the circle's (3.1 r^2)
        float qx = fabsf(dx) - 0.85f * r, qy = fabsf(dy) - 0.85f * r;
        return qx > qy ? qx : qy;
    }
    // triangle pointing up: apex (0, -r), base corners (+-r, r); fills exactly half of its 2r x 2r box
    const float inv = 0.4472135955f; // 1/sqrt(5): the side normals are (+-2, -1)/sqrt(5)
    float base = dy - r, right = (2 * dx - dy - r) * inv, left = (-2 * dx - dy - r) * inv;
    float m = base > right ? base : right;
    return m > left ? m : left;
}

// Renders scene s into clip [3, T, H, W] (values in [-1, 1]).
static inline void world_render_clip(float* clip, const WorldScene* s, int T, int H, int W) {
    size_t plane = (size_t)H * W, frame_stride = (size_t)T * plane; // channel c, frame t at c*T*H*W + t*H*W
    for (int c = 0; c < 3; c++) {
        float v = WORLD_BG_RGB[s->bg][c];
        for (size_t i = 0; i < frame_stride; i++) clip[c * frame_stride + i] = v;
    }
    float S = (float)(H < W ? H : W);
    for (int i = 0; i < s->n_obj; i++) {
        const WorldObject* o = &s->obj[i];
        float r = WORLD_SIZE_FRAC[o->size] * S;
        const float* rgb = WORLD_COLOUR_RGB[o->colour];
        for (int t = 0; t < T; t++) {
            float cx, cy;
            world_object_centre(o, t, T, H, W, &cx, &cy);
            int x0 = (int)floorf(cx - r - 2), x1 = (int)ceilf(cx + r + 2);
            int y0 = (int)floorf(cy - r - 2), y1 = (int)ceilf(cy + r + 2);
            if (x0 < 0) x0 = 0;
            if (y0 < 0) y0 = 0;
            if (x1 > W - 1) x1 = W - 1;
            if (y1 > H - 1) y1 = H - 1;
            for (int y = y0; y <= y1; y++)
                for (int x = x0; x <= x1; x++) {
                    float a = 0.5f - world_shape_sd(o->shape, x + 0.5f, y + 0.5f, cx, cy, r);
                    if (a <= 0) continue;
                    if (a > 1) a = 1;
                    size_t idx = (size_t)t * plane + (size_t)y * W + x;
                    for (int c = 0; c < 3; c++) {
                        float* p = &clip[c * frame_stride + idx];
                        *p = *p * (1 - a) + rgb[c] * a;
                    }
                }
        }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// dataset files (safetensors, see world/README.md):
//   tensors  clips [N, 3, T, H, W] F32 in [-1, 1];  context [N, text_len, text_dim] F32 (optional);
//            heldout [N] F32 (1 = caption uses a held-out pair; optional)
//   metadata format = "tmd-world-v1", world, split, seed, n, and captions = the N captions joined by '\n'.
// The same format holds generated clips for `world sheet` / `world score` (context and heldout may be absent).

typedef struct {
    int n, C, T, H, W;
    int text_len, text_dim; // 0 when the file has no context
    float* clips;           // [n, C, T, H, W]
    float* context;         // [n, text_len, text_dim] or NULL
    float* heldout;         // [n] or NULL
    char** captions;        // n strings (every clip has one; "" if the file carried none)
    char world[16], split[16];
} WorldSet;

static inline void world_set_free(WorldSet* s) {
    if (s->captions)
        for (int i = 0; i < s->n; i++) free(s->captions[i]);
    free(s->captions);
    free(s->clips);
    free(s->context);
    free(s->heldout);
    memset(s, 0, sizeof(*s));
}

// joins the captions with '\n' into one malloc'd string (captions must not contain '\n'; they are replaced by ' ')
static inline char* world_join_captions(char* const* caps, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(caps[i] ? caps[i] : "") + 1;
    char *out = (char*)malloc(len), *p = out;
    for (int i = 0; i < n; i++) {
        const char* c = caps[i] ? caps[i] : "";
        for (; *c; c++) *p++ = (*c == '\n' || *c == '\r') ? ' ' : *c;
        if (i + 1 < n) *p++ = '\n';
    }
    *p = 0;
    return out;
}

// the world's text encoder: the config's sizes, the default seed, and the grammar's vocabulary for warnings
static inline TextEncoder world_text_encoder(const WorldConfig* c) {
    TextEncoder te = text_encoder_make(c->text_len, c->text_dim, TEXT_DEFAULT_SEED);
    te.in_vocab = world_in_vocab;
    return te;
}

// Checks that clips [n, 3, T, H, W] are usable: finite and within [-1.5, 1.5] (anything wider is not Wan's pixel
// range: [0, 1] or [0, 255] data must be rescaled first). Values in (1, 1.5] or [-1.5, -1) are clamped in place to
// [-1, 1], and a warning says how many. Returns 0, or 1 with the reason in err.
static inline int world_check_clips(float* clips, int n, int C, int T, int H, int W, const char* what, char* err) {
    if (n <= 0) {
        snprintf(err, ST_ERRLEN, "%s: no clips (n = %d)", what, n);
        return 1;
    }
    if (C != 3 || T < 2 || H < 8 || W < 8) {
        snprintf(err, ST_ERRLEN,
                 "%s: clips are [n, %d, %d, %d, %d]; expected [n, 3, T, H, W] with T >= 2, H >= 8, W >= 8", what, C, T,
                 H, W);
        return 1;
    }
    size_t numel = (size_t)n * C * T * H * W, clamped = 0;
    float lo = 0, hi = 0;
    for (size_t i = 0; i < numel; i++) {
        float v = clips[i];
        if (!(v == v) || v > 1e30f || v < -1e30f) {
            snprintf(err, ST_ERRLEN, "%s: value %zu (clip %zu) is not finite (%g)", what, i,
                     i / ((size_t)C * T * H * W), v);
            return 1;
        }
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (lo < -1.5f || hi > 1.5f) {
        snprintf(err, ST_ERRLEN,
                 "%s: values span [%g, %g]; clips must be in [-1, 1] (x/127.5 - 1 for 0..255 pixels, "
                 "2x - 1 for 0..1)",
                 what, lo, hi);
        return 1;
    }
    if (lo >= 0 && hi > 0.5f)
        fprintf(stderr, "%s: warning: values span [%g, %g], all >= 0: is this [0, 1] data? clips must be in [-1, 1]\n",
                what, lo, hi);
    for (size_t i = 0; i < numel; i++) {
        if (clips[i] > 1) {
            clips[i] = 1;
            clamped++;
        } else if (clips[i] < -1) {
            clips[i] = -1;
            clamped++;
        }
    }
    if (clamped)
        fprintf(stderr, "%s: warning: %zu of %zu values were outside [-1, 1] (range [%g, %g]) and were clamped\n", what,
                clamped, numel, lo, hi);
    return 0;
}

// Generates n clips of one split. split WORLD_TRAIN: training captions only (no held-out pair). WORLD_HELDOUT
// (any other value) makes an evaluation set: the first half of the clips use a held-out pair, the rest are
// training-distribution captions, so one file measures both. Clip i depends only on (seed, split, i).
static inline void world_generate(const WorldConfig* c, int split, int n, uint64_t seed, WorldSet* out) {
    memset(out, 0, sizeof(*out));
    out->n = n;
    out->C = c->C;
    out->T = c->T;
    out->H = c->H;
    out->W = c->W;
    out->text_len = c->text_len;
    out->text_dim = c->text_dim;
    snprintf(out->world, sizeof(out->world), "%s", c->name);
    snprintf(out->split, sizeof(out->split), "%s", split == WORLD_TRAIN ? "train" : "eval");
    size_t numel = world_clip_numel(c), ctx = (size_t)c->text_len * c->text_dim;
    out->clips = (float*)malloc(sizeof(float) * numel * (size_t)n);
    out->context = (float*)malloc(sizeof(float) * ctx * (size_t)n);
    out->heldout = (float*)malloc(sizeof(float) * (size_t)n);
    out->captions = (char**)calloc((size_t)n, sizeof(char*));
    if (!out->clips || !out->context || !out->heldout || !out->captions) {
        fprintf(stderr, "world: out of memory for %d clips of %s\n", n, c->name);
        exit(1);
    }
    TextEncoder te = world_text_encoder(c);
    for (int i = 0; i < n; i++) {
        WRng r = wrng_seed(seed, (uint64_t)(split == WORLD_TRAIN ? 1 : 2), (uint64_t)i);
        int which = split == WORLD_TRAIN || c->n_heldout == 0 ? WORLD_TRAIN : (i < n / 2 ? WORLD_HELDOUT : WORLD_TRAIN);
        WorldScene s;
        world_sample_scene(c, &r, which, &s);
        world_render_clip(out->clips + (size_t)i * numel, &s, c->T, c->H, c->W);
        out->captions[i] = (char*)malloc(WORLD_CAPLEN);
        world_caption(&s, out->captions[i], WORLD_CAPLEN);
        text_encode(&te, out->captions[i], out->context + (size_t)i * ctx, NULL);
        out->heldout[i] = (float)world_is_heldout(c, &s);
    }
}

// writes set s to path (atomically); seed goes into the metadata
static inline int world_save(const WorldSet* s, const char* path, uint64_t seed, char* err) {
    char nbuf[32], seedbuf[32], shape[64];
    snprintf(nbuf, sizeof(nbuf), "%d", s->n);
    snprintf(seedbuf, sizeof(seedbuf), "%llu", (unsigned long long)seed);
    snprintf(shape, sizeof(shape), "%d,%d,%d,%d", s->C, s->T, s->H, s->W);
    char* caps = world_join_captions(s->captions, s->n);
    const char* meta[] = {"format", "tmd-world-v1", "world",      s->world, "split",    s->split, "seed", seedbuf,
                          "n",      nbuf,           "clip_shape", shape,    "captions", caps};
    StOut t[3];
    int nt = 0;
    memset(t, 0, sizeof(t));
    t[nt].name = "clips";
    t[nt].ndim = 5;
    t[nt].f32 = s->clips;
    t[nt].shape[0] = s->n;
    t[nt].shape[1] = s->C;
    t[nt].shape[2] = s->T;
    t[nt].shape[3] = s->H;
    t[nt].shape[4] = s->W;
    nt++;
    if (s->context) {
        t[nt].name = "context";
        t[nt].ndim = 3;
        t[nt].f32 = s->context;
        t[nt].shape[0] = s->n;
        t[nt].shape[1] = s->text_len;
        t[nt].shape[2] = s->text_dim;
        nt++;
    }
    if (s->heldout) {
        t[nt].name = "heldout";
        t[nt].ndim = 1;
        t[nt].shape[0] = s->n;
        t[nt].f32 = s->heldout;
        nt++;
    }
    int rc = st_write(path, t, nt, meta, 7, err);
    free(caps);
    return rc;
}

// Loads a dataset or clips file. Requires a "clips" [N, 3, T, H, W] tensor (N >= 1, T >= 2, H, W >= 8) with values
// in [-1, 1] (see world_check_clips); "context" [N, L, D] and "heldout" [N] are read when present; captions come
// from the "captions" metadata ('\n'-separated, exactly N of them) and are "" with a warning when it is missing.
// Returns 0, or 1 with the reason in err (s is then empty).
static inline int world_load(WorldSet* s, const char* path, char* err) {
    StFile f;
    memset(s, 0, sizeof(*s));
    if (st_open(&f, path, err)) return 1;
    const StTensor* tc = st_find(&f, "clips");
    const StTensor* tx = st_find(&f, "context");
    const StTensor* th = st_find(&f, "heldout");
    const char* caps = st_meta(&f, "captions");
    int rc = 1;
    if (!tc) {
        snprintf(err, ST_ERRLEN,
                 "%s: no tensor named \"clips\"; a world file holds clips [N, 3, T, H, W] "
                 "(make one with `world gen`, or write clips + captions metadata as in world/README.md)",
                 path);
        goto done;
    }
    if (tc->ndim != 5 || tc->shape[0] < 1 || tc->shape[1] != 3 || tc->shape[2] < 2 || tc->shape[3] < 8 ||
        tc->shape[4] < 8 || tc->numel > ((int64_t)1 << 34)) {
        char sb[256];
        snprintf(err, ST_ERRLEN,
                 "%s: clips have shape %s; expected [N, 3, T, H, W] with N >= 1, T >= 2, H >= 8, W >= 8", path,
                 st_shape_str(sb, tc->ndim, tc->shape));
        goto done;
    }
    s->n = (int)tc->shape[0];
    s->C = 3;
    s->T = (int)tc->shape[2];
    s->H = (int)tc->shape[3];
    s->W = (int)tc->shape[4];
    s->clips = (float*)malloc(sizeof(float) * (size_t)tc->numel);
    if (!s->clips) {
        snprintf(err, ST_ERRLEN, "%s: out of memory for %lld clip values", path, (long long)tc->numel);
        goto done;
    }
    if (st_read_float(&f, tc, s->clips, err)) goto done;
    if (world_check_clips(s->clips, s->n, s->C, s->T, s->H, s->W, path, err)) goto done;
    if (tx) {
        if (tx->ndim != 3 || tx->shape[0] != s->n || tx->shape[1] < 1 || tx->shape[2] < 1) {
            char sb[256];
            snprintf(err, ST_ERRLEN, "%s: context has shape %s; expected [%d, text_len, text_dim]", path,
                     st_shape_str(sb, tx->ndim, tx->shape), s->n);
            goto done;
        }
        s->text_len = (int)tx->shape[1];
        s->text_dim = (int)tx->shape[2];
        s->context = (float*)malloc(sizeof(float) * (size_t)tx->numel);
        if (!s->context || st_read_float(&f, tx, s->context, err)) {
            if (!s->context) snprintf(err, ST_ERRLEN, "%s: out of memory for the context", path);
            goto done;
        }
    }
    if (th) {
        if (th->ndim != 1 || th->shape[0] != s->n) {
            snprintf(err, ST_ERRLEN, "%s: heldout has %lld values for %d clips", path, (long long)th->numel, s->n);
            goto done;
        }
        s->heldout = (float*)malloc(sizeof(float) * (size_t)s->n);
        if (!s->heldout || st_read_float(&f, th, s->heldout, err)) goto done;
    }
    s->captions = (char**)calloc((size_t)s->n, sizeof(char*));
    if (caps) {
        int k = 0;
        const char* p = caps;
        for (;;) {
            const char* e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (k < s->n) {
                s->captions[k] = (char*)malloc(len + 1);
                memcpy(s->captions[k], p, len);
                s->captions[k][len] = 0;
            }
            k++;
            if (!e || (e[1] == 0 && k == s->n)) break; // a trailing '\n' after the last caption is fine
            p = e + 1;
        }
        if (k != s->n) {
            snprintf(err, ST_ERRLEN, "%s: %d captions in the metadata for %d clips; they must match one to one", path,
                     k, s->n);
            goto done;
        }
    } else {
        fprintf(stderr, "%s: warning: no \"captions\" metadata; clips get empty captions (scoring needs them)\n", path);
        for (int i = 0; i < s->n; i++) {
            s->captions[i] = (char*)malloc(1);
            s->captions[i][0] = 0;
        }
    }
    {
        const char* w = st_meta(&f, "world");
        const char* sp = st_meta(&f, "split");
        snprintf(s->world, sizeof(s->world), "%s", w ? w : "");
        snprintf(s->split, sizeof(s->split), "%s", sp ? sp : "");
    }
    rc = 0;
done:
    st_close(&f);
    if (rc) world_set_free(s);
    return rc;
}

// the preset whose clip shape matches (T, H, W): 0 and *c set, or 1 if none does
static inline int world_config_for_shape(WorldConfig* c, int T, int H, int W) {
    WorldConfig g = world_config_gpu(), t = world_config_tiny();
    if (g.T == T && g.H == H && g.W == W) {
        *c = g;
        return 0;
    }
    if (t.T == T && t.H == H && t.W == W) {
        *c = t;
        return 0;
    }
    return 1;
}

// Samples n clips of the infinite stream (which = WORLD_TRAIN for training): the trainer can use it instead of, or
// beside, the files. clips [n, 3, T, H, W]; context [n, text_len, text_dim] or NULL; captions n * WORLD_CAPLEN chars
// or NULL; scenes [n] or NULL. The stream's whole state is r->s, one integer to checkpoint.
static inline void world_sample_batch(const WorldConfig* c, WRng* r, int which, int n, float* clips, float* context,
                                      char* captions, WorldScene* scenes) {
    size_t numel = world_clip_numel(c), ctx = (size_t)c->text_len * c->text_dim;
    TextEncoder te = world_text_encoder(c);
    for (int i = 0; i < n; i++) {
        WorldScene s;
        char cap[WORLD_CAPLEN];
        world_sample_scene(c, r, which, &s);
        world_render_clip(clips + (size_t)i * numel, &s, c->T, c->H, c->W);
        world_caption(&s, cap, WORLD_CAPLEN);
        if (context) text_encode(&te, cap, context + (size_t)i * ctx, NULL);
        if (captions) memcpy(captions + (size_t)i * WORLD_CAPLEN, cap, WORLD_CAPLEN);
        if (scenes) scenes[i] = s;
    }
}
