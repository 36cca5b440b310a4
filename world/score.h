// world/score.h: "toy VBench", the built-in world's scorer. Given clips [N, 3, T, H, W] in [-1, 1] and their
// captions, it reports per-dimension scores the way VBench does for real models:
//   semantic (does the clip show what the caption says; the caption is parsed back into attributes)
//     colour     fraction of captioned objects whose colour is present (>= min_area pixels of it, frame mean;
//                min_area = 30% of a small circle)
//     shape      fraction of captioned objects whose shape is right, read from fill = soft area / (extent_x *
//                extent_y) of the object's colour: triangle 1/2, circle pi/4, square 1 (cuts at 0.70 and 0.90)
//     count      1 if the number of object-coloured blobs (majority over frames) equals the captioned count
//     motion     fraction of captioned objects whose centroid (least-squares over frames) travels in the
//                captioned direction; under 0.08 S of travel counts as "standing still"
//   quality (is it a clean video, whatever it shows)
//     sharpness  steepest step near an edge / contrast near it (real anti-aliased clips ~0.63, 1 px blur ~0.37)
//     temporal   1 - frame-to-frame change of the colour-class histogram and of the frame's mean colour
//                (motion changes neither; flicker, popping and morphing do)
//     background mean exp(-(|p - bg| / 0.25)^2) over pixels more than 2 px from any object pixel,
//                bg = the clip's per-channel median (cleanliness: noise and smears lower it)
//     frechet    Frechet distance between Gaussians fitted to 16 hand-built features of the scored clips and
//                of real clips (see SC_FEAT_SCALE for the list)
// Each raw value is normalised to [0, 1] with fixed min/max constants (like VBench's scripts/constant.py):
// norm = clamp((raw - min) / (max - min), 0, 1), and for the Frechet distance norm = clamp(1 - fd / SC_FD_MAX).
// quality = mean of the normalised quality dims, semantic = mean of the normalised semantic dims,
// total = (4 quality + semantic) / 5.
//
// Pixel classes: every pixel is classified to the nearest of the 6 object colours and 3 background colours when it
// is within 0.7 (RGB distance in [-1, 1] units), else "other" (anti-aliased rims, blur, noise, wrong hues).
// Everything is deterministic and costs about 1 ms per 3x9x32x32 clip on one CPU core.
#pragma once
#include "world.h"

enum { SC_COLOUR, SC_SHAPE, SC_COUNT, SC_MOTION, SC_SHARPNESS, SC_TEMPORAL, SC_BACKGROUND, SC_FRECHET, SC_NDIM };
static const char* const SC_NAMES[SC_NDIM] = {"colour",    "shape",    "count",      "motion",
                                              "sharpness", "temporal", "background", "frechet"};
static const int SC_IS_QUALITY[SC_NDIM] = {0, 0, 0, 0, 1, 1, 1, 1};
// normalisation constants: raw values at which a dim scores 0 and 1. The quality ones were set from the real
// tiny and GPU sets (which score ~0.99) and clearly degraded versions of them (see world_tests.h).
static const double SC_MIN[SC_NDIM] = {0, 0, 0, 0, 0.25, 0.70, 0.30, 0};
static const double SC_MAX[SC_NDIM] = {1, 1, 1, 1, 0.60, 1.00, 1.00, 0};
#define SC_FD_MAX 60.0 // a Frechet distance of 60 (in scaled feature units) or more scores 0

#define SC_NCLASS     10 // 6 object colours, 3 backgrounds, other
#define SC_OTHER      9
#define SC_NFEAT      16
#define SC_CLASS_DIST 0.7f
// shape from fill = area / (extent_x * extent_y): triangle 1/2, circle pi/4, square 1. Rendered real objects measure
// triangle 0.52-0.65, circle 0.785-0.80, square 1.00-1.02 (at 16 and 32 px), hence the cuts:
#define SC_FILL_TRIANGLE_MAX 0.70
#define SC_FILL_SQUARE_MIN   0.90
// Frechet features of a clip and their scales (each feature is divided by its scale before the Gaussians are fitted;
// a scale is the size of a change that matters, ~ the real sets' spread where they have one; real clips have no
// noise at all, so the spread would make any noise infinitely far):
//   0-5  fraction of pixels of each object colour     6-8  of each background colour     9  "other" pixels
//   10   edge energy (mean steepest step)             11   sharpness                     12 motion energy (fraction
//   of pixels that change class per frame)            13   background cleanliness        14 temporal consistency
//   15   travel of the object-coloured mass over the clip / S
static const double SC_FEAT_SCALE[SC_NFEAT] = {0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.4,  0.4,
                                               0.4,  0.05, 0.04, 0.05, 0.02, 0.1,  0.05, 0.08};

// what the scorer found in one clip
typedef struct {
    double feat[SC_NFEAT];                  // Frechet features (unscaled)
    double travel_x, travel_y;              // signed travel of the object-coloured mass over the clip / S
    double mass_fill;                       // that mass's pixels / its bounding box (mean over frames; 0: none)
    double sharpness, temporal, background; // raw quality values
    int parsed;                             // 1 if the caption parsed (then the semantic values are set)
    double colour, shape, count, motion;    // semantic accuracies of this clip, each in [0, 1]
    int n_found;                            // blobs counted
    int found_shape[WORLD_MAX_OBJ], found_dir[WORLD_MAX_OBJ]; // -1: object not found
    double found_fill[WORLD_MAX_OBJ];                         // mean area / (extent_x * extent_y)
} ScoreClip;

// Frechet reference: Gaussian statistics of the scaled features of real clips
typedef struct {
    int n, T, H, W;
    double mu[SC_NFEAT], cov[SC_NFEAT * SC_NFEAT];
} ScoreRef;

typedef struct {
    int n;                // clips scored
    int n_semantic;       // clips whose caption parsed; the semantic dims average over these
    int n_heldout;        // of those, captions with a held-out (colour, shape) pair (0 without a config)
    double raw[SC_NDIM];  // accuracies, raw quality values, and the Frechet distance itself
    double norm[SC_NDIM]; // normalised to [0, 1]
    int has[SC_NDIM];     // 0: not computed (frechet without a reference)
    double quality, semantic, total;
    double semantic_seen, semantic_heldout; // mean semantic accuracy over seen / held-out captions (-1 if none)
} WorldScore;

// ----------------------------------------------------------------------------------------------------------------
// per-clip analysis

static const float* sc_ref_rgb(int k) { return k < N_COLOURS ? WORLD_COLOUR_RGB[k] : WORLD_BG_RGB[k - N_COLOURS]; }

// median of n values in [-1, 1] via a 2048-bin histogram (exact to 1e-3, O(n))
static inline float sc_median(const float* x, size_t n) {
    static const int NB = 2048;
    int hist[2048];
    memset(hist, 0, sizeof(hist));
    for (size_t i = 0; i < n; i++) {
        int b = (int)((x[i] + 1) * 0.5f * NB);
        hist[b < 0 ? 0 : b >= NB ? NB - 1 : b]++;
    }
    size_t half = n / 2, acc = 0;
    for (int b = 0; b < NB; b++) {
        acc += (size_t)hist[b];
        if (acc > half) return (b + 0.5f) / NB * 2 - 1;
    }
    return 0;
}

static inline int sc_min_area(int H, int W) { // 30% of a small circle's area: smaller blobs are specks, not objects
    double S = H < W ? H : W, r = WORLD_SIZE_FRAC[SIZE_SMALL] * S;
    int a = (int)(0.3 * 3.14159265 * r * r);
    return a < 3 ? 3 : a;
}

// number of 4-connected components of (cls == k) in one frame with at least min_area pixels; stack: H*W ints
static inline int sc_count_blobs(const unsigned char* cls, int H, int W, int k, int min_area, unsigned char* seen,
                                 int* stack) {
    int n = 0;
    memset(seen, 0, (size_t)H * W);
    for (int i = 0; i < H * W; i++) {
        if (cls[i] != k || seen[i]) continue;
        int sp = 0, area = 0;
        stack[sp++] = i;
        seen[i] = 1;
        while (sp) {
            int j = stack[--sp], y = j / W, x = j % W;
            area++;
            int nb[4] = {x > 0 ? j - 1 : -1, x < W - 1 ? j + 1 : -1, y > 0 ? j - W : -1, y < H - 1 ? j + W : -1};
            for (int q = 0; q < 4; q++)
                if (nb[q] >= 0 && cls[nb[q]] == k && !seen[nb[q]]) {
                    seen[nb[q]] = 1;
                    stack[sp++] = nb[q];
                }
        }
        if (area >= min_area) n++;
    }
    return n;
}

// fmaxf/fminf are library calls (NaN rules); values here are finite, so plain compares do
static inline float sc_max(float a, float b) { return a > b ? a : b; }

// dst = max (sign 1) or min (sign -1) of src [H, W] over the (2 rad + 1)^2 window, clipped at the edges;
// separable: rows into tmp, then columns
static inline void sc_window(float* dst, const float* src, int H, int W, int rad, int sign, float* tmp) {
    float sg = (float)sign;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float m = -3.4e38f;
            for (int k = (x - rad < 0 ? 0 : x - rad); k <= (x + rad < W ? x + rad : W - 1); k++)
                m = sc_max(m, sg * src[y * W + k]);
            tmp[y * W + x] = m;
        }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float m = -3.4e38f;
            for (int k = (y - rad < 0 ? 0 : y - rad); k <= (y + rad < H ? y + rad : H - 1); k++)
                m = sc_max(m, tmp[k * W + x]);
            dst[y * W + x] = sg * m;
        }
}

// Analyses clip [3, T, H, W] (already within [-1, 1]); scene is the parsed caption or NULL.
static inline void score_clip(ScoreClip* out, const float* clip, int T, int H, int W, const WorldScene* scene) {
    size_t plane = (size_t)H * W, npix = (size_t)T * plane;
    memset(out, 0, sizeof(*out));
    unsigned char* cls = (unsigned char*)malloc(npix);
    unsigned char* seen = (unsigned char*)malloc(plane);
    int* stack = (int*)malloc(sizeof(int) * plane);
    float* D = (float*)malloc(sizeof(float) * plane * 7); // D, M, R, O, hi, lo, tmp: one frame each
    float *M = D + plane, *R = M + plane, *O = R + plane, *hi = O + plane, *lo = hi + plane, *tmp = lo + plane;
    float* colmax = (float*)malloc(sizeof(float) * (size_t)W); // per object and frame: max coverage per column
    float* rowmax = (float*)malloc(sizeof(float) * (size_t)H); // and per row
    const float* ch[3] = {clip, clip + npix, clip + 2 * npix}; // channel planes [T, H, W]
    double S = H < W ? H : W;
    int min_area = sc_min_area(H, W);

    // background colour = per-channel median (objects cover well under half of every frame)
    float bg[3];
    for (int c = 0; c < 3; c++) bg[c] = sc_median(ch[c], npix);

    // pixel classes, and the class histogram per frame
    double hist_prev[SC_NCLASS], mean_prev[3], flicker = 0;
    for (int t = 0; t < T; t++) {
        double hist[SC_NCLASS], mean[3] = {0, 0, 0};
        memset(hist, 0, sizeof(hist));
        for (size_t i = t * plane; i < (t + 1) * plane; i++) {
            float p[3] = {ch[0][i], ch[1][i], ch[2][i]};
            int best = SC_OTHER;
            float bd = SC_CLASS_DIST * SC_CLASS_DIST;
            for (int k = 0; k < SC_NCLASS - 1; k++) {
                const float* q = sc_ref_rgb(k);
                float d = (p[0] - q[0]) * (p[0] - q[0]) + (p[1] - q[1]) * (p[1] - q[1]) + (p[2] - q[2]) * (p[2] - q[2]);
                if (d < bd) {
                    bd = d;
                    best = k;
                }
            }
            cls[i] = (unsigned char)best;
            hist[best] += 1.0 / plane;
            for (int c = 0; c < 3; c++) mean[c] += p[c] / plane;
        }
        for (int k = 0; k < SC_NCLASS; k++) out->feat[k] += hist[k] / T;
        if (t > 0) { // temporal: half the L1 change of the histogram + mean abs change of the mean colour / 2
            double dh = 0, dm = 0;
            for (int k = 0; k < SC_NCLASS; k++) dh += fabs(hist[k] - hist_prev[k]);
            for (int c = 0; c < 3; c++) dm += fabs(mean[c] - mean_prev[c]) / 3;
            flicker += (0.5 * dh + 0.5 * dm) / (T - 1);
        }
        memcpy(hist_prev, hist, sizeof(hist));
        memcpy(mean_prev, mean, sizeof(mean));
    }
    out->temporal = 1 - flicker;

    // sharpness, edge energy, background cleanliness, motion energy (fraction of pixels changing class per frame)
    double sum_m = 0, sum_r = 0, edge = 0, clean = 0, motion = 0;
    long n_clean = 0;
    for (int t = 0; t < T; t++) {
        size_t f0 = (size_t)t * plane;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) { // D = steepest forward difference, over channels
                size_t i = f0 + (size_t)y * W + x;
                float d = 0;
                for (int c = 0; c < 3; c++) {
                    if (x + 1 < W) d = sc_max(d, fabsf(ch[c][i + 1] - ch[c][i]));
                    if (y + 1 < H) d = sc_max(d, fabsf(ch[c][i + W] - ch[c][i]));
                }
                D[y * W + x] = d;
                edge += d / (double)npix;
            }
        // M = 3x3 max of D (steepest step nearby), R = 5x5 range (contrast nearby, max over channels),
        // O = object pixels dilated by 2 px (5x5), all by separable running windows
        sc_window(M, D, H, W, 1, 1, tmp);
        for (int i = 0; i < H * W; i++) {
            R[i] = 0;
            O[i] = cls[f0 + (size_t)i] < N_COLOURS ? 1.0f : 0.0f;
        }
        for (int c = 0; c < 3; c++) {
            sc_window(hi, ch[c] + f0, H, W, 2, 1, tmp);
            sc_window(lo, ch[c] + f0, H, W, 2, -1, tmp);
            for (int i = 0; i < H * W; i++) R[i] = sc_max(R[i], hi[i] - lo[i]);
        }
        sc_window(hi, O, H, W, 2, 1, tmp);
        for (int i = 0; i < H * W; i++) {
            if (R[i] >= 0.5f) {
                sum_m += M[i];
                sum_r += R[i];
            }
            if (hi[i] == 0) {
                size_t j = f0 + (size_t)i;
                double d2 = 0;
                for (int c = 0; c < 3; c++) d2 += (ch[c][j] - bg[c]) * (ch[c][j] - bg[c]);
                clean += exp(-d2 / (0.25 * 0.25));
                n_clean++;
            }
        }
        if (t > 0) // motion energy on pixel classes (not raw differences, which noise would dominate)
            for (size_t i = 0; i < plane; i++)
                motion += (cls[f0 + i] != cls[f0 - plane + i]) / ((double)plane * (T - 1));
    }
    out->sharpness = sum_r > 0 ? sum_m / sum_r : 0;
    out->background = n_clean ? clean / n_clean : 0;

    // objects: present colours, blob count (majority over frames), and per object its fill and trajectory
    double area[N_COLOURS] = {0};
    for (size_t i = 0; i < npix; i++)
        if (cls[i] < N_COLOURS) area[cls[i]] += 1.0 / T;
    int votes[16] = {0};
    for (int t = 0; t < T; t++) {
        int n = 0;
        for (int k = 0; k < N_COLOURS; k++)
            if (area[k] > 0) n += sc_count_blobs(cls + (size_t)t * plane, H, W, k, min_area, seen, stack);
        votes[n < 15 ? n : 15]++;
    }
    for (int n = 0; n < 16; n++)
        if (votes[n] > votes[out->n_found]) out->n_found = n;

    // travel of all object-coloured mass (a feature that sees motion without a caption)
    {
        double c0x = 0, c0y = 0, c1x = 0, c1y = 0, m0 = 0, m1 = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                if (cls[(size_t)y * W + x] < N_COLOURS) {
                    c0x += x;
                    c0y += y;
                    m0++;
                }
                if (cls[(size_t)(T - 1) * plane + (size_t)y * W + x] < N_COLOURS) {
                    c1x += x;
                    c1y += y;
                    m1++;
                }
            }
        if (m0 > 0 && m1 > 0) {
            out->feat[15] = hypot(c1x / m1 - c0x / m0, c1y / m1 - c0y / m0) / S;
            out->travel_x = (c1x / m1 - c0x / m0) / S;
            out->travel_y = (c1y / m1 - c0y / m0) / S;
        }
        // fill of the object-coloured mass: pixels / its bounding box, mean over frames with any (shape, uncaptioned)
        int nf = 0;
        for (int t = 0; t < T; t++) {
            int x0 = W, x1 = -1, y0 = H, y1 = -1, cnt = 0;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    if (cls[(size_t)t * plane + (size_t)y * W + x] < N_COLOURS) {
                        cnt++;
                        x0 = x < x0 ? x : x0;
                        x1 = x > x1 ? x : x1;
                        y0 = y < y0 ? y : y0;
                        y1 = y > y1 ? y : y1;
                    }
            if (cnt == 0) continue;
            out->mass_fill += (double)cnt / ((x1 - x0 + 1) * (y1 - y0 + 1));
            nf++;
        }
        if (nf) out->mass_fill /= nf;
    }
    out->feat[10] = edge;
    out->feat[11] = out->sharpness;
    out->feat[12] = motion;
    out->feat[13] = out->background;
    out->feat[14] = out->temporal;

    if (scene) {
        out->parsed = 1;
        int used[N_COLOURS] = {0}, n_colour_ok = 0, n_shape_ok = 0, n_dir_ok = 0;
        for (int j = 0; j < scene->n_obj; j++) used[scene->obj[j].colour] = 1;
        for (int j = 0; j < scene->n_obj; j++) {
            const WorldObject* o = &scene->obj[j];
            int k = -1;
            if (area[o->colour] >= min_area) {
                k = o->colour;
                n_colour_ok++;
            } else { // wrong colour: judge shape and motion on the largest unclaimed coloured blob
                for (int q = 0; q < N_COLOURS; q++)
                    if (!used[q] && area[q] >= min_area && (k < 0 || area[q] > area[k])) k = q;
                if (k >= 0) used[k] = 1;
            }
            out->found_shape[j] = out->found_dir[j] = -1;
            if (k < 0) continue;
            // per frame: soft coverage a = projection of (p - bg) on (colour - bg), inside the blob's box + 1 px
            const float* rgb = WORLD_COLOUR_RGB[k];
            float dir[3] = {rgb[0] - bg[0], rgb[1] - bg[1], rgb[2] - bg[2]};
            float dd = dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2];
            double fill = 0, st = 0, stt = 0, sx = 0, sy = 0, stx = 0, sty = 0;
            int nf = 0;
            for (int t = 0; t < T; t++) {
                const unsigned char* c = cls + (size_t)t * plane;
                int x0 = W, x1 = -1, y0 = H, y1 = -1, cnt = 0;
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        if (c[y * W + x] == k) {
                            cnt++;
                            x0 = x < x0 ? x : x0;
                            x1 = x > x1 ? x : x1;
                            y0 = y < y0 ? y : y0;
                            y1 = y > y1 ? y : y1;
                        }
                if (cnt < (min_area + 1) / 2) continue;
                x0 = x0 > 0 ? x0 - 1 : 0;
                y0 = y0 > 0 ? y0 - 1 : 0;
                x1 = x1 < W - 1 ? x1 + 1 : W - 1;
                y1 = y1 < H - 1 ? y1 + 1 : H - 1;
                double a_sum = 0, ax = 0, ay = 0, ext_x = 0, ext_y = 0;
                memset(colmax, 0, sizeof(float) * (size_t)W);
                memset(rowmax, 0, sizeof(float) * (size_t)H);
                for (int y = y0; y <= y1; y++)
                    for (int x = x0; x <= x1; x++) {
                        size_t i = (size_t)t * plane + (size_t)y * W + x;
                        if (c[y * W + x] < N_COLOURS && c[y * W + x] != k) continue; // another object
                        float a;
                        if (dd < 0.25f)
                            a = c[y * W + x] == k ? 1.0f : 0.0f; // colour ~ background: hard mask
                        else {
                            a = ((ch[0][i] - bg[0]) * dir[0] + (ch[1][i] - bg[1]) * dir[1] +
                                 (ch[2][i] - bg[2]) * dir[2]) /
                                dd;
                            a = a < 0 ? 0 : a > 1 ? 1 : a;
                        }
                        a_sum += a;
                        ax += a * (x + 0.5);
                        ay += a * (y + 0.5);
                        colmax[x] = sc_max(colmax[x], a);
                        rowmax[y] = sc_max(rowmax[y], a);
                    }
                for (int x = x0; x <= x1; x++) ext_x += colmax[x];
                for (int y = y0; y <= y1; y++) ext_y += rowmax[y];
                if (a_sum <= 0 || ext_x <= 0 || ext_y <= 0) continue;
                fill += a_sum / (ext_x * ext_y);
                double cx = ax / a_sum, cy = ay / a_sum;
                st += t;
                stt += (double)t * t;
                sx += cx;
                sy += cy;
                stx += t * cx;
                sty += t * cy;
                nf++;
            }
            if (nf == 0) continue;
            fill /= nf;
            out->found_fill[j] = fill;
            int best = fill < SC_FILL_TRIANGLE_MAX ? SHAPE_TRIANGLE
                       : fill > SC_FILL_SQUARE_MIN ? SHAPE_SQUARE
                                                   : SHAPE_CIRCLE;
            out->found_shape[j] = best;
            n_shape_ok += best == o->shape;
            // displacement over the clip = least-squares slope of the centroid * (T - 1)
            int fdir = DIR_STILL;
            if (nf >= 2) {
                double var = stt - st * st / nf;
                double dx = var > 0 ? (stx - st * sx / nf) / var * (T - 1) : 0;
                double dy = var > 0 ? (sty - st * sy / nf) / var * (T - 1) : 0;
                if (hypot(dx, dy) >= 0.08 * S)
                    fdir = fabs(dx) >= fabs(dy) ? (dx < 0 ? DIR_LEFT : DIR_RIGHT) : (dy < 0 ? DIR_UP : DIR_DOWN);
            }
            out->found_dir[j] = fdir;
            n_dir_ok += fdir == o->dir;
        }
        out->colour = (double)n_colour_ok / scene->n_obj;
        out->shape = (double)n_shape_ok / scene->n_obj;
        out->motion = (double)n_dir_ok / scene->n_obj;
        out->count = out->n_found == scene->n_obj ? 1.0 : 0.0;
    }
    free(cls);
    free(seen);
    free(stack);
    free(D);
    free(colmax);
    free(rowmax);
}

// ----------------------------------------------------------------------------------------------------------------
// Frechet distance between Gaussians: |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1^1/2 S2 S1^1/2)

// eigen-decomposition of a symmetric n x n matrix by cyclic Jacobi: a is destroyed, w = eigenvalues,
// v = eigenvectors in columns (row-major n x n)
static inline void sc_jacobi(double* a, int n, double* w, double* v) {
    for (int i = 0; i < n * n; i++) v[i] = 0;
    for (int i = 0; i < n; i++) v[i * n + i] = 1;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        if (off < 1e-22) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { // a <- a J (columns p, q)
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { // a <- J^T a (rows p, q)
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++) w[i] = a[i * n + i];
}

static inline double sc_frechet(const double* mu1, const double* c1, const double* mu2, const double* c2, int n) {
    double* a = (double*)malloc(sizeof(double) * n * n * 4);
    double *v = a + n * n, *r = v + n * n, *m = r + n * n, w[SC_NFEAT];
    double d = 0;
    for (int i = 0; i < n; i++) d += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]) + c1[i * n + i] + c2[i * n + i];
    memcpy(a, c1, sizeof(double) * n * n);
    sc_jacobi(a, n, w, v);
    for (int i = 0; i < n; i++) // r = S1^1/2 = V diag(sqrt w) V^T
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += v[i * n + k] * sqrt(w[k] > 0 ? w[k] : 0) * v[j * n + k];
            r[i * n + j] = s;
        }
    for (int i = 0; i < n; i++) // m = r S2 r
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++)
                for (int l = 0; l < n; l++) s += r[i * n + k] * c2[k * n + l] * r[l * n + j];
            m[i * n + j] = s;
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) m[i * n + j] = m[j * n + i] = 0.5 * (m[i * n + j] + m[j * n + i]);
    sc_jacobi(m, n, w, v);
    for (int i = 0; i < n; i++) d -= 2 * sqrt(w[i] > 0 ? w[i] : 0);
    free(a);
    return d > 0 ? d : 0;
}

// mean and covariance of the scaled features of n analysed clips
static inline void sc_feature_stats(const ScoreClip* cs, int n, double* mu, double* cov) {
    for (int i = 0; i < SC_NFEAT; i++) mu[i] = 0;
    for (int i = 0; i < SC_NFEAT * SC_NFEAT; i++) cov[i] = 0;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < SC_NFEAT; i++) mu[i] += cs[k].feat[i] / SC_FEAT_SCALE[i] / n;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < SC_NFEAT; i++)
            for (int j = 0; j < SC_NFEAT; j++)
                cov[i * SC_NFEAT + j] += (cs[k].feat[i] / SC_FEAT_SCALE[i] - mu[i]) *
                                         (cs[k].feat[j] / SC_FEAT_SCALE[j] - mu[j]) / (n > 1 ? n - 1 : 1);
}

// validates clips: finite, within [-1.5, 1.5] (values just outside [-1, 1] are clamped in a copy when scored)
// the Frechet distance of already-scored clips (score_clip results) to a reference's Gaussian
static inline double score_frechet_to(const ScoreClip* cs, int n, const ScoreRef* ref) {
    double mu[SC_NFEAT], cov[SC_NFEAT * SC_NFEAT];
    sc_feature_stats(cs, n, mu, cov);
    return sc_frechet(mu, cov, ref->mu, ref->cov, SC_NFEAT);
}

static inline int sc_check(const float* clips, int n, int T, int H, int W, char* err) {
    if (!clips || n <= 0) {
        snprintf(err, ST_ERRLEN, "score: no clips to score (n = %d)", n);
        return 1;
    }
    if (T < 2 || H < 8 || W < 8) {
        snprintf(err, ST_ERRLEN, "score: clips are [%d, 3, %d, %d, %d]; need T >= 2, H >= 8, W >= 8", n, T, H, W);
        return 1;
    }
    size_t numel = (size_t)n * 3 * T * H * W, out = 0;
    for (size_t i = 0; i < numel; i++) {
        float v = clips[i];
        if (!(v == v) || v > 1.5f || v < -1.5f) {
            snprintf(err, ST_ERRLEN, "score: value %g at index %zu (clip %zu) is %s; clips must be in [-1, 1]", v, i,
                     i / ((size_t)3 * T * H * W), v == v ? "far outside [-1, 1]" : "not a number");
            return 1;
        }
        out += v > 1 || v < -1;
    }
    if (out) fprintf(stderr, "score: warning: %zu values slightly outside [-1, 1] are clamped for scoring\n", out);
    return 0;
}

static inline void sc_copy_clamped(float* dst, const float* src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i] > 1 ? 1 : src[i] < -1 ? -1 : src[i];
}

// Fits the Frechet reference to real clips [n, 3, T, H, W]. Returns 0, or 1 with err.
static inline int score_ref_init(ScoreRef* ref, const float* clips, int n, int T, int H, int W, char* err) {
    if (sc_check(clips, n, T, H, W, err)) return 1;
    if (n < 2) {
        snprintf(err, ST_ERRLEN, "score: the Frechet reference needs >= 2 real clips, got %d", n);
        return 1;
    }
    size_t numel = (size_t)3 * T * H * W;
    ScoreClip* cs = (ScoreClip*)malloc(sizeof(ScoreClip) * (size_t)n);
    float* buf = (float*)malloc(sizeof(float) * numel);
    for (int i = 0; i < n; i++) {
        sc_copy_clamped(buf, clips + (size_t)i * numel, numel);
        score_clip(&cs[i], buf, T, H, W, NULL);
    }
    ref->n = n;
    ref->T = T;
    ref->H = H;
    ref->W = W;
    sc_feature_stats(cs, n, ref->mu, ref->cov);
    free(cs);
    free(buf);
    return 0;
}

static inline void sc_combine(WorldScore* s);

// Scores clips [n, 3, T, H, W] against their n captions. ref: Frechet reference from real clips of the same shape
// (NULL: the frechet dim is skipped and quality averages the other three). cfg: the world whose held-out pairs
// split the semantic score into seen / held-out (NULL: no split). per_clip: n results, or NULL.
// Captions that do not parse (not from the world's grammar) are left out of the semantic dims with a warning;
// if none parses, it is an error. Returns 0, or 1 with err.
static inline int score_clips(WorldScore* s, const float* clips, int n, int T, int H, int W,
                              const char* const* captions, const ScoreRef* ref, const WorldConfig* cfg,
                              ScoreClip* per_clip, char* err) {
    memset(s, 0, sizeof(*s));
    if (ref && (ref->T != T || ref->H != H || ref->W != W)) {
        snprintf(err, ST_ERRLEN, "score: clips are %dx%dx%d but the Frechet reference was fitted to %dx%dx%d clips", T,
                 H, W, ref->T, ref->H, ref->W);
        return 1;
    }
    if (sc_check(clips, n, T, H, W, err)) return 1;
    if (!captions) {
        snprintf(err, ST_ERRLEN, "score: no captions given for %d clips", n);
        return 1;
    }
    size_t numel = (size_t)3 * T * H * W;
    ScoreClip* cs = per_clip ? per_clip : (ScoreClip*)malloc(sizeof(ScoreClip) * (size_t)n);
    float* buf = (float*)malloc(sizeof(float) * numel);
    int n_bad = 0, n_seen = 0;
    char first_bad[ST_ERRLEN];
    first_bad[0] = 0;
    double acc_seen = 0, acc_held = 0;
    for (int i = 0; i < n; i++) {
        WorldScene sc;
        char perr[256];
        int ok = world_parse_caption(captions[i] ? captions[i] : "", &sc, perr) == 0;
        if (!ok && n_bad++ == 0)
            snprintf(first_bad, sizeof(first_bad), "\"%.200s\": %s", captions[i] ? captions[i] : "", perr);
        sc_copy_clamped(buf, clips + (size_t)i * numel, numel);
        score_clip(&cs[i], buf, T, H, W, ok ? &sc : NULL);
        s->raw[SC_SHARPNESS] += cs[i].sharpness / n;
        s->raw[SC_TEMPORAL] += cs[i].temporal / n;
        s->raw[SC_BACKGROUND] += cs[i].background / n;
        if (!ok) continue;
        s->n_semantic++;
        s->raw[SC_COLOUR] += cs[i].colour;
        s->raw[SC_SHAPE] += cs[i].shape;
        s->raw[SC_COUNT] += cs[i].count;
        s->raw[SC_MOTION] += cs[i].motion;
        double acc = (cs[i].colour + cs[i].shape + cs[i].count + cs[i].motion) / 4;
        if (cfg && world_is_heldout(cfg, &sc)) {
            s->n_heldout++;
            acc_held += acc;
        } else {
            n_seen++;
            acc_seen += acc;
        }
    }
    free(buf);
    if (s->n_semantic == 0) {
        snprintf(err, ST_ERRLEN,
                 "score: none of the %d captions is from the world's grammar (first: %.600s); the semantic "
                 "dims need captions like \"big red circle moving left fast on black\"",
                 n, first_bad);
        if (!per_clip) free(cs);
        return 1;
    }
    if (n_bad)
        fprintf(stderr,
                "score: warning: %d of %d captions are not from the world's grammar and are left out of the "
                "semantic dims (first: %.600s)\n",
                n_bad, n, first_bad);
    for (int d = SC_COLOUR; d <= SC_MOTION; d++) s->raw[d] /= s->n_semantic;
    s->semantic_seen = n_seen ? acc_seen / n_seen : -1;
    s->semantic_heldout = s->n_heldout ? acc_held / s->n_heldout : -1;
    s->n = n;
    for (int d = 0; d < SC_NDIM; d++) s->has[d] = 1;
    if (ref)
        s->raw[SC_FRECHET] = score_frechet_to(cs, n, ref);
    else
        s->has[SC_FRECHET] = 0;
    if (!per_clip) free(cs);
    sc_combine(s);
    return 0;
}

// normalises s->raw (where s->has) and combines (VBench: total = (4 quality + semantic) / 5)
static inline void sc_combine(WorldScore* s) {
    double q = 0, sem = 0;
    int nq = 0, ns = 0;
    for (int d = 0; d < SC_NDIM; d++) {
        if (!s->has[d]) continue;
        double v = d == SC_FRECHET ? 1 - s->raw[d] / SC_FD_MAX : (s->raw[d] - SC_MIN[d]) / (SC_MAX[d] - SC_MIN[d]);
        s->norm[d] = v < 0 ? 0 : v > 1 ? 1 : v;
        if (SC_IS_QUALITY[d]) {
            q += s->norm[d];
            nq++;
        } else {
            sem += s->norm[d];
            ns++;
        }
    }
    s->quality = nq ? q / nq : 0;
    s->semantic = ns ? sem / ns : 0;
    s->total = (4 * s->quality + s->semantic) / 5;
}

// ----------------------------------------------------------------------------------------------------------------
// Sampling error of the toy VBench: a bootstrap over the scored clips (one per caption), fixed seed

#define SC_BOOT 1000 // bootstrap resamples

// the standard error of the toy VBench total (in [0, 1]) of n analysed clips (score_clips' per_clip), by resampling
// the clips with replacement and scoring each resample as score_clips would (the Frechet term refitted; ref NULL:
// without it)
static inline double score_total_se(const ScoreClip* cs, int n, const ScoreRef* ref) {
    if (n < 2) return 0;
    ScoreClip* rs = (ScoreClip*)malloc(sizeof(ScoreClip) * (size_t)n);
    WRng r = wrng_seed(0x5c0e, 1, (uint64_t)n);
    double m = 0, m2 = 0;
    for (int b = 0; b < SC_BOOT; b++) {
        WorldScore s;
        memset(&s, 0, sizeof(s));
        for (int i = 0; i < n; i++) {
            const ScoreClip* c = &cs[wrng_int(&r, n)];
            rs[i] = *c;
            s.raw[SC_SHARPNESS] += c->sharpness / n;
            s.raw[SC_TEMPORAL] += c->temporal / n;
            s.raw[SC_BACKGROUND] += c->background / n;
            if (!c->parsed) continue;
            s.n_semantic++;
            s.raw[SC_COLOUR] += c->colour;
            s.raw[SC_SHAPE] += c->shape;
            s.raw[SC_COUNT] += c->count;
            s.raw[SC_MOTION] += c->motion;
        }
        for (int d = 0; d < SC_NDIM; d++) s.has[d] = !SC_IS_QUALITY[d] ? s.n_semantic > 0 : d != SC_FRECHET || ref;
        for (int d = SC_COLOUR; d <= SC_MOTION; d++) s.raw[d] /= s.n_semantic ? s.n_semantic : 1;
        if (ref) s.raw[SC_FRECHET] = score_frechet_to(rs, n, ref);
        sc_combine(&s);
        m += s.total;
        m2 += s.total * s.total;
    }
    free(rs);
    m /= SC_BOOT;
    double v = m2 / SC_BOOT - m * m;
    return v > 0 ? sqrt(v) : 0;
}

// the bootstrap standard error over captions of mean(a) (b NULL) or of the paired mean(a - b), a and b [n]
static inline double score_boot_se(const double* a, const double* b, int n) {
    if (n < 2) return 0;
    WRng r = wrng_seed(0x5c0e, 2, (uint64_t)n);
    double m = 0, m2 = 0;
    for (int k = 0; k < SC_BOOT; k++) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            int j = wrng_int(&r, n);
            s += (a[j] - (b ? b[j] : 0)) / n;
        }
        m += s;
        m2 += s * s;
    }
    m /= SC_BOOT;
    double v = m2 / SC_BOOT - m * m;
    return v > 0 ? sqrt(v) : 0;
}

// ----------------------------------------------------------------------------------------------------------------
// The per-caption distance to a target distribution, and diversity
//
// The Frechet distance above compares the pooled features of all scored clips with a reference, one clip per
// caption: a generator that ignores its caption but reproduces the mix of clips over all captions scores as well as
// a faithful one, one collapsed to the reference's mean features scores better than most, and it cannot see a
// generator that ignores its noise. Here every caption c has K generated clips (K noises) and K' target clips, and
// the two sets are compared caption by caption with the energy distance (Szekely & Rizzo)
//     ED_c = 2 E|x - y| - E|x - x'| - E|y - y'|        x, x' generated for c; y, y' target for c; |.| Euclidean
// on the scaled Frechet features plus three that the caption fixes and the pooled features miss (the signed travel
// of the object-coloured mass in x and in y, and that mass's fill, i.e. its shape): SC_NCFEAT in all. The
// within-set means run over distinct pairs, so ED_c is 0 in expectation when the generated clips of caption c are
// distributed like its target clips, and positive in expectation otherwise (twice the energy distance is a squared
// metric between distributions). dist = mean of ED_c over captions.
//   collapse (x = x' for every noise) drops the E|x - x'| term and leaves the cross term, so it pays;
//   answering another caption pays the cross term even when the pooled mix of clips is right.
// diversity = mean_c E|x - x'| / mean_c E|y - y'|: 1 when the generator varies with its noise as much as the target
// does for the same caption, 0 when it ignores its noise.

#define SC_NCFEAT (SC_NFEAT + 3)

static inline void score_cond_features(const ScoreClip* c, double* f) {
    for (int i = 0; i < SC_NFEAT; i++) f[i] = c->feat[i] / SC_FEAT_SCALE[i];
    f[SC_NFEAT + 0] = c->travel_x / 0.08; // the scale of feature 15 (travel)
    f[SC_NFEAT + 1] = c->travel_y / 0.08;
    f[SC_NFEAT + 2] = c->mass_fill / 0.1; // triangle 0.5, circle 0.79, square 1
}

static inline double sc_fdist(const double* a, const double* b) {
    double d = 0;
    for (int i = 0; i < SC_NCFEAT; i++) d += (a[i] - b[i]) * (a[i] - b[i]);
    return sqrt(d);
}

// ED of one caption between X [nx, SC_NCFEAT] and Y [ny, SC_NCFEAT] (nx, ny >= 2); sx, sy: E|x - x'|, E|y - y'|
static inline double sc_energy(const double* X, int nx, const double* Y, int ny, double* sx, double* sy) {
    double xy = 0, xx = 0, yy = 0;
    for (int i = 0; i < nx; i++)
        for (int j = 0; j < ny; j++) xy += sc_fdist(X + i * SC_NCFEAT, Y + j * SC_NCFEAT) / ((double)nx * ny);
    for (int i = 0; i < nx; i++)
        for (int j = i + 1; j < nx; j++) xx += sc_fdist(X + i * SC_NCFEAT, X + j * SC_NCFEAT) / (nx * (nx - 1) / 2.0);
    for (int i = 0; i < ny; i++)
        for (int j = i + 1; j < ny; j++) yy += sc_fdist(Y + i * SC_NCFEAT, Y + j * SC_NCFEAT) / (ny * (ny - 1) / 2.0);
    *sx = xx;
    *sy = yy;
    return 2 * xy - xx - yy;
}

typedef struct {
    int n_cap, k_gen, k_tgt;
    double dist, dist_se;        // mean over captions of ED_c, and its bootstrap standard error over captions
    double spread, spread_tgt;   // mean over captions of E|x - x'| and of E|y - y'|
    double diversity, diversity_se; // spread / spread_tgt, and its bootstrap standard error over captions
} CondScore;

// gen: n_cap * k_gen analysed clips (score_clip), caption-major (clip k of caption c at c * k_gen + k); tgt: the
// target's n_cap * k_tgt, the same captions in the same order. per_cap: the n_cap values ED_c, or NULL.
// Returns 0, or 1 with err.
static inline int score_cond(CondScore* s, double* per_cap, const ScoreClip* gen, int k_gen, const ScoreClip* tgt,
                             int k_tgt, int n_cap, char* err) {
    memset(s, 0, sizeof(*s));
    if (n_cap < 1 || k_gen < 2 || k_tgt < 2) {
        snprintf(err, ST_ERRLEN,
                 "score: the per-caption distance needs >= 1 caption and >= 2 clips per caption on each side; found "
                 "%d captions, %d generated and %d target clips each",
                 n_cap, k_gen, k_tgt);
        return 1;
    }
    double* X = (double*)malloc(sizeof(double) * SC_NCFEAT * (size_t)(k_gen + k_tgt));
    double* Y = X + (size_t)SC_NCFEAT * k_gen;
    double* ed = (double*)malloc(sizeof(double) * 3 * (size_t)n_cap);
    double *sx = ed + n_cap, *sy = sx + n_cap;
    for (int c = 0; c < n_cap; c++) {
        for (int k = 0; k < k_gen; k++) score_cond_features(&gen[(size_t)c * k_gen + k], X + (size_t)k * SC_NCFEAT);
        for (int k = 0; k < k_tgt; k++) score_cond_features(&tgt[(size_t)c * k_tgt + k], Y + (size_t)k * SC_NCFEAT);
        ed[c] = sc_energy(X, k_gen, Y, k_tgt, &sx[c], &sy[c]);
        s->dist += ed[c] / n_cap;
        s->spread += sx[c] / n_cap;
        s->spread_tgt += sy[c] / n_cap;
        if (per_cap) per_cap[c] = ed[c];
    }
    s->n_cap = n_cap;
    s->k_gen = k_gen;
    s->k_tgt = k_tgt;
    s->dist_se = score_boot_se(ed, NULL, n_cap);
    s->diversity = s->spread_tgt > 0 ? s->spread / s->spread_tgt : 0;
    if (n_cap >= 2 && s->spread_tgt > 0) { // the ratio's standard error, resampling captions
        WRng r = wrng_seed(0x5c0e, 3, (uint64_t)n_cap);
        double m = 0, m2 = 0;
        for (int b = 0; b < SC_BOOT; b++) {
            double a = 0, t = 0;
            for (int i = 0; i < n_cap; i++) {
                int j = wrng_int(&r, n_cap);
                a += sx[j];
                t += sy[j];
            }
            double q = t > 0 ? a / t : 0;
            m += q;
            m2 += q * q;
        }
        m /= SC_BOOT;
        s->diversity_se = m2 / SC_BOOT - m * m > 0 ? sqrt(m2 / SC_BOOT - m * m) : 0;
    }
    free(X);
    free(ed);
    return 0;
}

// one line per dimension plus the three aggregates, in percent like VBench
static inline void score_print(FILE* f, const WorldScore* s, const char* label) {
    fprintf(f, "%s: %d clips (%d with world captions, %d of them held-out)\n", label, s->n, s->n_semantic,
            s->n_heldout);
    for (int d = 0; d < SC_NDIM; d++) {
        if (!s->has[d]) {
            fprintf(f, "  %-10s %-8s     n/a (no real reference given)\n", SC_NAMES[d],
                    SC_IS_QUALITY[d] ? "quality" : "semantic");
            continue;
        }
        fprintf(f, "  %-10s %-8s raw %8.4f  norm %6.2f%%\n", SC_NAMES[d], SC_IS_QUALITY[d] ? "quality" : "semantic",
                s->raw[d], 100 * s->norm[d]);
    }
    fprintf(f, "  quality %.2f%%  semantic %.2f%%  total %.2f%%", 100 * s->quality, 100 * s->semantic, 100 * s->total);
    if (s->semantic_heldout >= 0)
        fprintf(f, "  (semantic accuracy: seen %.2f%%, held-out %.2f%%)", 100 * s->semantic_seen,
                100 * s->semantic_heldout);
    fprintf(f, "\n");
}
