// world/png.h: something to look at. PNG contact sheets of clips (each clip's frames in a row, its caption written
// under it in a built-in 5x7 bitmap font) and .mp4 through ffmpeg when it is on the PATH.
// The PNG writer needs no library: its deflate is LZ77 (hash chains, 32 KB window) with the fixed Huffman code,
// which shrinks our flat-coloured sheets ~20-50x.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "../lib/mp4.h" // mp4_pipe_open, mp4_pixel: the one writer of video files

#define PNG_ERRLEN 1024

// ----------------------------------------------------------------------------------------------------------------
// checksums and the deflate stream

static inline uint32_t png_crc(uint32_t crc, const unsigned char* p, size_t n) {
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static inline uint32_t png_adler(const unsigned char* p, size_t n) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return (b << 16) | a;
}

typedef struct {
    unsigned char* p;
    size_t n, cap;
    uint64_t bits;
    int nbits;
} PngBits; // LSB-first bit writer

static inline void png_put_bits(PngBits* b, uint32_t v, int n) {
    b->bits |= (uint64_t)v << b->nbits;
    b->nbits += n;
    while (b->nbits >= 8) {
        if (b->n == b->cap) {
            b->cap = b->cap * 2 + 1024;
            b->p = (unsigned char*)realloc(b->p, b->cap);
        }
        b->p[b->n++] = (unsigned char)b->bits;
        b->bits >>= 8;
        b->nbits -= 8;
    }
}
static inline void png_put_huff(PngBits* b, uint32_t code, int len) { // Huffman codes go most significant bit first
    uint32_t r = 0;
    for (int i = 0; i < len; i++) r |= ((code >> i) & 1) << (len - 1 - i);
    png_put_bits(b, r, len);
}
static inline void png_put_lit(PngBits* b, int v) { // fixed literal/length code (RFC 1951 3.2.6)
    if (v < 144)
        png_put_huff(b, 0x30 + v, 8);
    else if (v < 256)
        png_put_huff(b, 0x190 + v - 144, 9);
    else if (v < 280)
        png_put_huff(b, v - 256, 7);
    else
        png_put_huff(b, 0xC0 + v - 280, 8);
}

static const int PNG_LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                     31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const int PNG_LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const int PNG_DIST_BASE[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                      33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                      1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const int PNG_DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

// zlib stream of data[n]: one final fixed-Huffman block, greedy LZ77 matching. Returns malloc'd bytes.
static inline unsigned char* png_zlib(const unsigned char* data, size_t n, size_t* out_n) {
    enum { WBITS = 15, WSIZE = 1 << WBITS, HBITS = 15, MAXCHAIN = 48 };
    PngBits b;
    memset(&b, 0, sizeof(b));
    int* head = (int*)malloc(sizeof(int) << HBITS);
    int* prev = (int*)malloc(sizeof(int) * WSIZE);
    for (int i = 0; i < (1 << HBITS); i++) head[i] = -1;
    png_put_bits(&b, 0x78, 8);
    png_put_bits(&b, 0x01, 8); // zlib header: deflate, 32 KB window, no dictionary
    png_put_bits(&b, 1, 1);
    png_put_bits(&b, 1, 2); // BFINAL = 1, BTYPE = 01 (fixed Huffman)
    size_t i = 0;
    while (i < n) {
        int best_len = 0, best_dist = 0;
        if (i + 2 < n) {
            uint32_t h =
                (((uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2]) * 2654435761u) >> (32 - HBITS);
            size_t maxlen = n - i < 258 ? n - i : 258;
            int cand = head[h], chain = 0;
            while (cand >= 0 && i - (size_t)cand <= WSIZE - 1 && chain++ < MAXCHAIN) {
                size_t l = 0;
                while (l < maxlen && data[(size_t)cand + l] == data[i + l]) l++;
                if ((int)l > best_len) {
                    best_len = (int)l;
                    best_dist = (int)(i - (size_t)cand);
                    if (l == maxlen) break;
                }
                cand = prev[cand & (WSIZE - 1)];
            }
            prev[i & (WSIZE - 1)] = head[h];
            head[h] = (int)i;
        }
        if (best_len >= 3) {
            int lc = 28;
            while (PNG_LEN_BASE[lc] > best_len) lc--;
            png_put_lit(&b, 257 + lc);
            png_put_bits(&b, (uint32_t)(best_len - PNG_LEN_BASE[lc]), PNG_LEN_EXTRA[lc]);
            int dc = 29;
            while (PNG_DIST_BASE[dc] > best_dist) dc--;
            png_put_huff(&b, (uint32_t)dc, 5);
            png_put_bits(&b, (uint32_t)(best_dist - PNG_DIST_BASE[dc]), PNG_DIST_EXTRA[dc]);
            for (size_t k = i + 1; k < i + (size_t)best_len && k + 2 < n; k++) { // index the skipped positions
                uint32_t h = (((uint32_t)data[k] << 16 | (uint32_t)data[k + 1] << 8 | data[k + 2]) * 2654435761u) >>
                             (32 - HBITS);
                prev[k & (WSIZE - 1)] = head[h];
                head[h] = (int)k;
            }
            i += (size_t)best_len;
        } else {
            png_put_lit(&b, data[i]);
            i++;
        }
    }
    png_put_lit(&b, 256);                          // end of block
    if (b.nbits) png_put_bits(&b, 0, 8 - b.nbits); // pad to a byte
    uint32_t ad = png_adler(data, n);
    for (int k = 3; k >= 0; k--) png_put_bits(&b, (ad >> (8 * k)) & 0xff, 8);
    free(head);
    free(prev);
    *out_n = b.n;
    return b.p;
}

static inline void png_chunk(FILE* f, const char* type, const unsigned char* data, uint32_t n) {
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                            (unsigned char)n};
    fwrite(len, 1, 4, f);
    fwrite(type, 1, 4, f);
    if (n) fwrite(data, 1, n, f);
    uint32_t crc = png_crc(png_crc(0, (const unsigned char*)type, 4), data, n);
    unsigned char c[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16), (unsigned char)(crc >> 8),
                          (unsigned char)crc};
    fwrite(c, 1, 4, f);
}

// Writes rgb [h, w, 3] (8-bit) as a PNG. Each row gets the filter (none, sub or up) with the smallest sum of
// absolute residuals. Returns 0, or 1 with the reason in err.
static inline int png_write(const char* path, const unsigned char* rgb, int w, int h, char* err) {
    if (w <= 0 || h <= 0 || (size_t)w * h > (size_t)1 << 28) {
        snprintf(err, PNG_ERRLEN, "%.400s: cannot write a %d x %d image", path, w, h);
        return 1;
    }
    size_t stride = (size_t)w * 3, raw_n = (stride + 1) * (size_t)h;
    unsigned char* raw = (unsigned char*)malloc(raw_n);
    for (int y = 0; y < h; y++) {
        const unsigned char* row = rgb + (size_t)y * stride;
        const unsigned char* up = y ? row - stride : NULL;
        unsigned char* out = raw + (size_t)y * (stride + 1);
        long cost[3] = {0, 0, 0};
        for (size_t x = 0; x < stride; x++) {
            cost[0] += row[x] < 128 ? row[x] : 256 - row[x];
            unsigned char s = (unsigned char)(row[x] - (x >= 3 ? row[x - 3] : 0));
            cost[1] += s < 128 ? s : 256 - s;
            unsigned char u = (unsigned char)(row[x] - (up ? up[x] : 0));
            cost[2] += u < 128 ? u : 256 - u;
        }
        int f = cost[1] < cost[0] ? 1 : 0;
        if (cost[2] < cost[f]) f = 2;
        out[0] = (unsigned char)f;
        for (size_t x = 0; x < stride; x++)
            out[1 + x] = f == 0   ? row[x]
                         : f == 1 ? (unsigned char)(row[x] - (x >= 3 ? row[x - 3] : 0))
                                  : (unsigned char)(row[x] - (up ? up[x] : 0));
    }
    size_t zn;
    unsigned char* z = png_zlib(raw, raw_n, &zn);
    free(raw);
    FILE* f = fopen(path, "wb");
    if (!f) {
        snprintf(err, PNG_ERRLEN, "%.400s: cannot open for writing (does the directory exist?)", path);
        free(z);
        return 1;
    }
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    fwrite(sig, 1, 8, f);
    unsigned char ihdr[13] = {(unsigned char)(w >> 24),
                              (unsigned char)(w >> 16),
                              (unsigned char)(w >> 8),
                              (unsigned char)w,
                              (unsigned char)(h >> 24),
                              (unsigned char)(h >> 16),
                              (unsigned char)(h >> 8),
                              (unsigned char)h,
                              8,
                              2,
                              0,
                              0,
                              0}; // 8-bit RGB, deflate, adaptive filtering, no interlace
    png_chunk(f, "IHDR", ihdr, 13);
    png_chunk(f, "IDAT", z, (uint32_t)zn);
    png_chunk(f, "IEND", NULL, 0);
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    free(z);
    if (bad) {
        snprintf(err, PNG_ERRLEN, "%.400s: write failed (disk full?)", path);
        return 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// 5x7 bitmap font for ASCII 32..126 (the classic HD44780-style glyphs, descenders in an 8th row):
// 5 columns per glyph, bit r of a column = row r (top row = bit 0)

static const unsigned char PNG_FONT[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, {0x00, 0x07, 0x00, 0x07, 0x00},
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},
    {0x36, 0x49, 0x56, 0x20, 0x50}, {0x00, 0x05, 0x03, 0x00, 0x00}, {0x00, 0x1C, 0x22, 0x41, 0x00},
    {0x00, 0x41, 0x22, 0x1C, 0x00}, {0x2A, 0x1C, 0x7F, 0x1C, 0x2A}, {0x08, 0x08, 0x3E, 0x08, 0x08},
    {0x00, 0x50, 0x30, 0x00, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, {0x00, 0x60, 0x60, 0x00, 0x00},
    {0x20, 0x10, 0x08, 0x04, 0x02}, {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},
    {0x42, 0x61, 0x51, 0x49, 0x46}, {0x21, 0x41, 0x45, 0x4B, 0x31}, {0x18, 0x14, 0x12, 0x7F, 0x10},
    {0x27, 0x45, 0x45, 0x45, 0x39}, {0x3C, 0x4A, 0x49, 0x49, 0x30}, {0x01, 0x71, 0x09, 0x05, 0x03},
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x06, 0x49, 0x49, 0x29, 0x1E}, {0x00, 0x36, 0x36, 0x00, 0x00},
    {0x00, 0x56, 0x36, 0x00, 0x00}, {0x08, 0x14, 0x22, 0x41, 0x00}, {0x14, 0x14, 0x14, 0x14, 0x14},
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x51, 0x09, 0x06}, {0x32, 0x49, 0x79, 0x41, 0x3E},
    {0x7C, 0x12, 0x11, 0x12, 0x7C}, {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, {0x7F, 0x49, 0x49, 0x49, 0x41}, {0x7F, 0x09, 0x09, 0x09, 0x01},
    {0x3E, 0x41, 0x49, 0x49, 0x7A}, {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, {0x7F, 0x40, 0x40, 0x40, 0x40},
    {0x7F, 0x02, 0x0C, 0x02, 0x7F}, {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, {0x7F, 0x09, 0x19, 0x29, 0x46},
    {0x46, 0x49, 0x49, 0x49, 0x31}, {0x01, 0x01, 0x7F, 0x01, 0x01}, {0x3F, 0x40, 0x40, 0x40, 0x3F},
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F}, {0x63, 0x14, 0x08, 0x14, 0x63},
    {0x07, 0x08, 0x70, 0x08, 0x07}, {0x61, 0x51, 0x49, 0x45, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x00},
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x7F, 0x00}, {0x04, 0x02, 0x01, 0x02, 0x04},
    {0x40, 0x40, 0x40, 0x40, 0x40}, {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78},
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x20}, {0x38, 0x44, 0x44, 0x48, 0x7F},
    {0x38, 0x54, 0x54, 0x54, 0x18}, {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x18, 0xA4, 0xA4, 0xA4, 0x7C},
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, {0x40, 0x80, 0x84, 0x7D, 0x00},
    {0x7F, 0x10, 0x28, 0x44, 0x00}, {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78},
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, {0xFC, 0x24, 0x24, 0x24, 0x18},
    {0x18, 0x24, 0x24, 0x18, 0xFC}, {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x20},
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, {0x1C, 0x20, 0x40, 0x20, 0x1C},
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, {0x44, 0x28, 0x10, 0x28, 0x44}, {0x1C, 0xA0, 0xA0, 0xA0, 0x7C},
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, {0x00, 0x00, 0x7F, 0x00, 0x00},
    {0x00, 0x41, 0x36, 0x08, 0x00}, {0x08, 0x04, 0x08, 0x10, 0x08}};

#define PNG_CHAR_W 6  // glyph cell: 5 columns + 1 space
#define PNG_LINE_H 10 // 7 rows + descender room + spacing

// draws text at (x, y) in an RGB8 image [h, w]; characters outside 32..126 are drawn as '?'; clipped at the edges
static inline void png_draw_text(unsigned char* img, int w, int h, int x, int y, const char* text, int len,
                                 const unsigned char* rgb) {
    for (int i = 0; i < len && text[i]; i++) {
        int ch = (unsigned char)text[i];
        if (ch < 32 || ch > 126) ch = '?';
        const unsigned char* g = PNG_FONT[ch - 32];
        for (int cx = 0; cx < 5; cx++)
            for (int cy = 0; cy < 8; cy++) {
                if (!((g[cx] >> cy) & 1)) continue;
                int px = x + i * PNG_CHAR_W + cx, py = y + cy;
                if (px < 0 || py < 0 || px >= w || py >= h) continue;
                memcpy(img + ((size_t)py * w + px) * 3, rgb, 3);
            }
    }
}

// word-wraps text into lines of at most cols characters: fills starts/lens (max_lines), returns the line count
static inline int png_wrap(const char* text, int cols, int* starts, int* lens, int max_lines) {
    int n = 0, len = (int)strlen(text), pos = 0;
    if (cols < 1) cols = 1;
    while (pos < len && n < max_lines) {
        while (pos < len && text[pos] == ' ') pos++;
        if (pos >= len) break;
        int end = pos + cols;
        if (end >= len)
            end = len;
        else {
            int cut = end;
            while (cut > pos && text[cut] != ' ') cut--;
            if (cut > pos) end = cut;
        }
        starts[n] = pos;
        lens[n] = end - pos;
        n++;
        pos = end;
    }
    return n;
}

// one clip's pixel in 8-bit RGB: [-1, 1] -> [0, 255], clamped
static inline void png_pixel(const float* clip, int T, int H, int W, int t, int y, int x, unsigned char* rgb) {
    size_t plane = (size_t)H * W;
    for (int c = 0; c < 3; c++) rgb[c] = mp4_pixel(clip[(size_t)(c * T + t) * plane + (size_t)y * W + x]);
}

#define PNG_MAX_LINES 8
static const unsigned char PNG_SHEET_BG[3] = {32, 32, 36}, PNG_TEXT_RGB[3] = {235, 235, 235};

// Contact sheet of n clips [n, 3, T, H, W]: one row of frames per clip (each frame scaled to ~64 px by pixel
// replication, scale <= 0 picks it), the caption (may be NULL) word-wrapped under it. Returns an RGB8 image
// [*h, *w, 3] (malloc'd; the caller frees).
static inline unsigned char* png_contact_sheet(const float* clips, int n, int T, int H, int W,
                                               const char* const* captions, int scale, int* out_w, int* out_h) {
    if (scale <= 0) scale = (64 + H - 1) / H;
    const int gap = 2, margin = 4;
    int fw = W * scale, fh = H * scale;
    int w = 2 * margin + T * fw + (T - 1) * gap;
    if (w < 40 * PNG_CHAR_W + 2 * margin) w = 40 * PNG_CHAR_W + 2 * margin; // room for captions of short clips
    int cols = (w - 2 * margin) / PNG_CHAR_W;
    int starts[PNG_MAX_LINES], lens[PNG_MAX_LINES];
    int h = margin;
    for (int i = 0; i < n; i++)
        h += fh + 3 +
             PNG_LINE_H * png_wrap(captions && captions[i] ? captions[i] : "", cols, starts, lens, PNG_MAX_LINES) +
             margin + gap;
    unsigned char* img = (unsigned char*)malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++) memcpy(img + 3 * i, PNG_SHEET_BG, 3);
    int y0 = margin;
    size_t numel = (size_t)3 * T * H * W;
    for (int i = 0; i < n; i++) {
        const float* clip = clips + (size_t)i * numel;
        for (int t = 0; t < T; t++) {
            int x0 = margin + t * (fw + gap);
            for (int y = 0; y < fh; y++)
                for (int x = 0; x < fw; x++)
                    png_pixel(clip, T, H, W, t, y / scale, x / scale, img + ((size_t)(y0 + y) * w + x0 + x) * 3);
        }
        y0 += fh + 3;
        const char* cap = captions && captions[i] ? captions[i] : "";
        int nl = png_wrap(cap, cols, starts, lens, PNG_MAX_LINES);
        for (int l = 0; l < nl; l++)
            png_draw_text(img, w, h, margin, y0 + l * PNG_LINE_H, cap + starts[l], lens[l], PNG_TEXT_RGB);
        y0 += nl * PNG_LINE_H + margin + gap;
    }
    *out_w = w;
    *out_h = h;
    return img;
}

static inline int png_write_sheet(const char* path, const float* clips, int n, int T, int H, int W,
                                  const char* const* captions, int scale, char* err) {
    if (n <= 0) {
        snprintf(err, PNG_ERRLEN, "%.400s: no clips to draw", path);
        return 1;
    }
    int w, h;
    unsigned char* img = png_contact_sheet(clips, n, T, H, W, captions, scale, &w, &h);
    int rc = png_write(path, img, w, h, err);
    free(img);
    return rc;
}

// ----------------------------------------------------------------------------------------------------------------
// mp4 through ffmpeg (a pipe of raw RGB frames), when ffmpeg is on the PATH

static inline int png_have_ffmpeg(void) { return mp4_have_ffmpeg(); }

// Writes n clips as one .mp4 (fps frames per second): a grid of up to 4 clips per row, each scaled to ~128 px with
// its caption under it; video frame t shows frame t of every clip. Returns 0; 2 when ffmpeg is not on the PATH
// (err says so); 1 on any other failure.
static inline int png_write_mp4(const char* path, const float* clips, int n, int T, int H, int W,
                                const char* const* captions, int fps, char* err) {
    if (n <= 0) {
        snprintf(err, PNG_ERRLEN, "%.400s: no clips to write", path);
        return 1;
    }
    int scale = (128 + H - 1) / H, fw = W * scale, fh = H * scale, gap = 6, cols = n < 4 ? n : 4;
    int tcols = fw / PNG_CHAR_W, starts[PNG_MAX_LINES], lens[PNG_MAX_LINES], lines = 1;
    for (int i = 0; i < n; i++) {
        int l = png_wrap(captions && captions[i] ? captions[i] : "", tcols, starts, lens, PNG_MAX_LINES);
        lines = l > lines ? l : lines;
    }
    int cell_h = fh + 3 + lines * PNG_LINE_H, rows = (n + cols - 1) / cols;
    int w = cols * fw + (cols + 1) * gap, h = rows * cell_h + (rows + 1) * gap;
    w += w & 1;
    h += h & 1; // yuv420p needs even sizes
    int absent;
    FILE* p = mp4_pipe_open(path, w, h, fps, 0, &absent, err);
    if (!p) return absent ? 2 : 1;
    unsigned char* img = (unsigned char*)malloc((size_t)w * h * 3);
    size_t numel = (size_t)3 * T * H * W;
    int ok = 1;
    for (int t = 0; t < T && ok; t++) {
        for (size_t i = 0; i < (size_t)w * h; i++) memcpy(img + 3 * i, PNG_SHEET_BG, 3);
        for (int i = 0; i < n; i++) {
            int x0 = gap + (i % cols) * (fw + gap), y0 = gap + (i / cols) * (cell_h + gap);
            for (int y = 0; y < fh; y++)
                for (int x = 0; x < fw; x++)
                    png_pixel(clips + (size_t)i * numel, T, H, W, t, y / scale, x / scale,
                              img + ((size_t)(y0 + y) * w + x0 + x) * 3);
            const char* cap = captions && captions[i] ? captions[i] : "";
            int nl = png_wrap(cap, tcols, starts, lens, PNG_MAX_LINES);
            for (int l = 0; l < nl; l++)
                png_draw_text(img, w, h, x0, y0 + fh + 3 + l * PNG_LINE_H, cap + starts[l], lens[l], PNG_TEXT_RGB);
        }
        ok = fwrite(img, 1, (size_t)w * h * 3, p) == (size_t)w * h * 3;
    }
    free(img);
    return mp4_pipe_close(p, path, ok, err);
}
