// lib/safetensors.h: read and write .safetensors files, and sharded checkpoints (*.safetensors.index.json).
// Header-only, plain C (also compiles as C++ inside .cu files). Every call that can fail returns 0 on success and
// nonzero on failure, leaving one message in err[ST_ERRLEN] that names the file, the tensor, what was expected, what
// was found and what to do. Nothing read from a file is trusted before it is checked against the file size.
//
// File layout (https://github.com/huggingface/safetensors):
//   [u64 N, little-endian] [N bytes of JSON header, space padded] [data section]
//   header = {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...}
//   data_offsets are relative to the data section; StTensor.begin/end are absolute (8 + N + offset).
// Like the format, this assumes a little-endian host (x86-64, aarch64).
#pragma once

// fseeko/ftello with a 64-bit off_t (checkpoint shards are ~10 GB) and fileno for fsync. These macros only take
// effect when this header comes before every system header; the fallbacks below cover the other order.
#if !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdarg.h>
#include <errno.h>
#include <unistd.h>   // fsync
#include <dirent.h>   // opendir: st_set_open on a checkpoint directory
#include <sys/stat.h> // stat: only regular files are opened (a FIFO would block forever)

#if defined(__GLIBC__) && !defined(__USE_LARGEFILE) && !defined(__USE_XOPEN2K)
// a strict -std=c11 feature set was fixed by an earlier #include and hides fseeko; long is 64-bit on LP64 Linux
#define st_fseek(fp, off) fseek(fp, (long)(off), SEEK_SET)
#define st_ftell(fp)      ((int64_t)ftell(fp))
#define st_fseek_end(fp)  fseek(fp, 0L, SEEK_END)
#else
#define st_fseek(fp, off) fseeko(fp, (off_t)(off), SEEK_SET)
#define st_ftell(fp)      ((int64_t)ftello(fp))
#define st_fseek_end(fp)  fseeko(fp, (off_t)0, SEEK_END)
#endif
#if defined(__GLIBC__) && !defined(__USE_POSIX) && !defined(__cplusplus)
extern int fileno(FILE* stream); // POSIX, hidden by the same strict feature set
#endif

#if defined(__GNUC__)
#define ST_PRINTF_LIKE(i, j) __attribute__((format(printf, i, j)))
#else
#define ST_PRINTF_LIKE(i, j)
#endif

#define ST_ERRLEN         1024
#define ST_MAXDIM         8
#define ST_MAX_HEADER     (100ull << 20) // real headers are < 1 MB; anything past 100 MB is corruption
#define ST_JSON_MAXDEPTH  64
#define ST_JSON_MAXVALUES (1 << 18) // a 14B checkpoint's header holds ~15,000 JSON values; each costs ~64 bytes

// ----------------------------------------------------------------------------------------------------------------
// dtypes

enum {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I64,
    ST_I32,
    ST_U8,
    ST_I8,
    ST_I16,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_BOOL,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_NDTYPE
};
static const char* const st_dtype_names[ST_NDTYPE] = {"F32", "F16", "BF16", "F64", "I64",  "I32",     "U8",     "I8",
                                                      "I16", "U16", "U32",  "U64", "BOOL", "F8_E4M3", "F8_E5M2"};
static const int st_dtype_sizes[ST_NDTYPE] = {4, 2, 2, 8, 8, 4, 1, 1, 2, 2, 4, 8, 1, 1, 1};

static inline const char* st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < ST_NDTYPE ? st_dtype_names[dtype] : "?";
}
static inline int st_dtype_from_name(const char* s) {
    for (int i = 0; i < ST_NDTYPE; i++)
        if (strcmp(s, st_dtype_names[i]) == 0) return i;
    return -1;
}

typedef struct {
    char name[256];
    int dtype; // ST_F32, ...
    int ndim;  // 0 (scalar) .. ST_MAXDIM
    int64_t shape[ST_MAXDIM];
    int64_t numel;       // product of shape (1 for a scalar)
    uint64_t begin, end; // absolute byte offsets in the file; end - begin == numel * dtype size
} StTensor;

typedef struct {
    char path[1024];
    uint64_t file_size;
    int n;
    StTensor* tensors; // in header order
    int n_meta;
    char** meta_keys;
    char** meta_vals; // __metadata__
} StFile;

typedef struct {
    int n_files;
    StFile* files;
} StSet; // one file, or the shards of an index.json

// a tensor to write: exactly one of f32 / f64 is non-NULL (f64 is converted); always stored as F32
typedef struct {
    const char* name;
    int ndim;
    int64_t shape[ST_MAXDIM];
    const float* f32;
    const double* f64;
} StOut;

// ----------------------------------------------------------------------------------------------------------------
// small helpers

ST_PRINTF_LIKE(2, 3) static inline void st_errf(char* err, const char* fmt, ...) {
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ST_ERRLEN, fmt, ap);
    va_end(ap);
}

static inline char* st_strdup(const char* s) {
    size_t n = strlen(s) + 1;
    char* d = (char*)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static inline int st_ends_with(const char* s, const char* suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// "[16, 2, 6, 10]" into buf (>= 256 bytes); a negative dim prints as "*" (npy_read_shape's "any")
static inline const char* st_shape_str(char* buf, int ndim, const int64_t* shape) {
    size_t k = 0;
    buf[k++] = '[';
    for (int d = 0; d < ndim && d < ST_MAXDIM; d++) {
        if (shape[d] < 0)
            k += (size_t)snprintf(buf + k, 256 - k, "%s*", d ? ", " : "");
        else
            k += (size_t)snprintf(buf + k, 256 - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    }
    buf[k++] = ']';
    buf[k] = 0;
    return buf;
}

// numel of a shape, or -1 if a dim is negative or the product overflows
static inline int64_t st_numel(int ndim, const int64_t* shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return -1;
        if (shape[d] > 0 && n > INT64_MAX / 8 / shape[d]) return -1; // keep numel * 8 bytes representable
        n *= shape[d];
    }
    return n;
}

// opens path for reading and returns its size; on failure fills err and returns NULL
static inline FILE* st_fopen_sized(const char* path, uint64_t* size, char* err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st_errf(err, "%s: cannot open for reading: %s; check the path", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        st_errf(err, "%s: is not a regular file (it is a %s); pass the path of a file", path,
                S_ISDIR(sb.st_mode)                          ? "directory"
                : S_ISFIFO(sb.st_mode)                       ? "FIFO"
                : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "device"
                                                             : "special file");
        return NULL;
    }
    FILE* fp = fopen(path, "rb");
    if (!fp) {
        st_errf(err, "%s: cannot open for reading: %s; check the path", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) { // replaced between stat and fopen
        st_errf(err, "%s: is not a regular file; pass the path of a file", path);
        fclose(fp);
        return NULL;
    }
    int64_t sz = -1;
    if (st_fseek_end(fp) == 0) sz = st_ftell(fp);
    if (sz < 0 || st_fseek(fp, 0) != 0) {
        st_errf(err, "%s: cannot determine the file size: %s; is it a regular file?", path, strerror(errno));
        fclose(fp);
        return NULL;
    }
    *size = (uint64_t)sz;
    return fp;
}

// reads a whole (small) file into a NUL-terminated malloc'd buffer
static inline int st_read_small_file(const char* path, char** buf, size_t* len, char* err) {
    uint64_t sz = 0;
    FILE* fp = st_fopen_sized(path, &sz, err);
    *buf = NULL;
    *len = 0;
    if (!fp) return 1;
    if (sz > ST_MAX_HEADER) {
        st_errf(err, "%s: file is %llu bytes, more than the %llu a JSON index may have; is this the right file?", path,
                (unsigned long long)sz, ST_MAX_HEADER);
        fclose(fp);
        return 1;
    }
    char* b = (char*)malloc((size_t)sz + 1);
    if (!b) {
        st_errf(err, "%s: out of memory reading %llu bytes", path, (unsigned long long)sz);
        fclose(fp);
        return 1;
    }
    if (fread(b, 1, (size_t)sz, fp) != (size_t)sz) {
        st_errf(err, "%s: could not read %llu bytes: %s", path, (unsigned long long)sz,
                ferror(fp) ? strerror(errno) : "file shrank");
        free(b);
        fclose(fp);
        return 1;
    }
    fclose(fp);
    b[sz] = 0;
    *buf = b;
    *len = (size_t)sz;
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// JSON: a small strict parser into a tree. Strings are decoded to UTF-8 (\uXXXX and surrogate pairs included);
// integer literals that fit int64 are kept exactly (data_offsets of a 10 GB shard exceed 2^31, and doubles would be
// exact only up to 2^53). Every access is bounds checked against the buffer length, nesting is capped.

enum { SJ_NULL, SJ_FALSE, SJ_TRUE, SJ_NUM, SJ_STR, SJ_ARR, SJ_OBJ };
typedef struct StJson {
    int type;
    int is_int;
    int64_t i;
    double d;            // SJ_NUM: is_int when the literal is an integer that fits int64 (then i is exact)
    char* s;             // SJ_STR: decoded, NUL-terminated
    int n;               // SJ_ARR, SJ_OBJ: number of items
    char** keys;         // SJ_OBJ: keys[n]
    struct StJson* kids; // SJ_ARR, SJ_OBJ: items[n]
} StJson;
typedef struct {
    const char* s;
    size_t n, i;
    int depth;
    long values;
    char msg[320];
} StJsonParser;

static inline const char* sj_type_name(int type) {
    static const char* const names[] = {"null", "false", "true", "number", "string", "array", "object"};
    return type >= 0 && type <= SJ_OBJ ? names[type] : "?";
}

static inline void sj_free(StJson* v) {
    if (!v) return;
    free(v->s);
    for (int k = 0; k < v->n; k++) {
        if (v->keys) free(v->keys[k]);
        if (v->kids) sj_free(&v->kids[k]);
    }
    free(v->keys);
    free(v->kids);
    memset(v, 0, sizeof(*v));
}

static inline int sj_fail(StJsonParser* p, const char* what) {
    char near_[24];
    size_t k = 0;
    for (size_t j = p->i; j < p->n && k < 16; j++) near_[k++] = (p->s[j] >= 32 && p->s[j] < 127) ? p->s[j] : '?';
    near_[k] = 0;
    if (p->i >= p->n)
        snprintf(p->msg, sizeof(p->msg), "%s at byte %zu (end of input)", what, p->i);
    else
        snprintf(p->msg, sizeof(p->msg), "%s at byte %zu, near '%s'", what, p->i, near_);
    return 1;
}

static inline void sj_ws(StJsonParser* p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static inline int sj_hex4(StJsonParser* p, size_t end, uint32_t* cp) {
    if (p->i + 4 > end) return sj_fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + k];
        int h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if (c >= 'a' && c <= 'f')
            h = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            h = c - 'A' + 10;
        else
            return sj_fail(p, "bad hex digit in \\u escape");
        v = v * 16 + (uint32_t)h;
    }
    p->i += 4;
    *cp = v;
    return 0;
}

// at the opening quote; *out is owned by the caller from the first allocation on, even on failure
static inline int sj_string(StJsonParser* p, char** out) {
    size_t j = ++p->i;
    while (j < p->n && p->s[j] != '"') j += (p->s[j] == '\\') ? 2 : 1; // find the closing quote to size the buffer
    if (j >= p->n) return sj_fail(p, "unterminated string");
    char* o = (char*)malloc(j - p->i + 1); // escapes never expand: \uXXXX -> <= 3 bytes, a pair -> 4
    if (!o) return sj_fail(p, "out of memory");
    *out = o;
    size_t k = 0;
    while (p->i < j) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) return sj_fail(p, "unescaped control character in string");
        if (c != '\\') {
            o[k++] = (char)c;
            p->i++;
            continue;
        }
        c = (unsigned char)p->s[++p->i];
        p->i++; // the escaped char is before j by construction of j
        switch (c) {
        case '"':
        case '\\':
        case '/': o[k++] = (char)c; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            uint32_t cp = 0, lo = 0;
            if (sj_hex4(p, j, &cp)) return 1;
            if (cp >= 0xDC00 && cp < 0xE000) return sj_fail(p, "lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp < 0xDC00) { // high surrogate: a \uDC00..\uDFFF must follow
                if (p->i + 2 > j || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                    return sj_fail(p, "lone high surrogate in \\u escape");
                p->i += 2;
                if (sj_hex4(p, j, &lo)) return 1;
                if (lo < 0xDC00 || lo >= 0xE000) return sj_fail(p, "bad low surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return sj_fail(p, "\\u0000 in a string is not supported");
            if (cp < 0x80)
                o[k++] = (char)cp;
            else if (cp < 0x800) {
                o[k++] = (char)(0xC0 | (cp >> 6));
                o[k++] = (char)(0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                o[k++] = (char)(0xE0 | (cp >> 12));
                o[k++] = (char)(0x80 | ((cp >> 6) & 63));
                o[k++] = (char)(0x80 | (cp & 63));
            } else {
                o[k++] = (char)(0xF0 | (cp >> 18));
                o[k++] = (char)(0x80 | ((cp >> 12) & 63));
                o[k++] = (char)(0x80 | ((cp >> 6) & 63));
                o[k++] = (char)(0x80 | (cp & 63));
            }
            break;
        }
        default: p->i -= 2; return sj_fail(p, "invalid escape in string");
        }
    }
    o[k] = 0;
    p->i = j + 1;
    return 0;
}

static inline int sj_number(StJsonParser* p, StJson* v) {
    const char* s = p->s;
    size_t start = p->i, i = p->i;
    int is_int = 1;
#define SJ_DIGIT(j) ((j) < p->n && s[j] >= '0' && s[j] <= '9')
    if (i < p->n && s[i] == '-') i++;
    if (i < p->n && s[i] == '0')
        i++;
    else if (SJ_DIGIT(i)) {
        while (SJ_DIGIT(i)) i++;
    } else
        return sj_fail(p, "invalid number");
    if (i < p->n && s[i] == '.') {
        is_int = 0;
        i++;
        if (!SJ_DIGIT(i)) {
            p->i = i;
            return sj_fail(p, "digit expected after '.' in number");
        }
        while (SJ_DIGIT(i)) i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = 0;
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (!SJ_DIGIT(i)) {
            p->i = i;
            return sj_fail(p, "digit expected in exponent");
        }
        while (SJ_DIGIT(i)) i++;
    }
#undef SJ_DIGIT
    v->type = SJ_NUM;
    if (is_int) { // exact int64, or fall through to double on overflow
        int neg = s[start] == '-';
        uint64_t u = 0;
        int ovf = 0;
        for (size_t j = start + (size_t)neg; j < i; j++) {
            uint64_t dgt = (uint64_t)(s[j] - '0');
            if (u > (UINT64_MAX - dgt) / 10) {
                ovf = 1;
                break;
            }
            u = u * 10 + dgt;
        }
        if (!ovf && u <= (uint64_t)INT64_MAX + (uint64_t)neg) {
            v->is_int = 1;
            v->i = neg ? (int64_t)(0 - u) : (int64_t)u;
            v->d = (double)v->i;
            p->i = i;
            return 0;
        }
    }
    char buf[128];
    if (i - start >= sizeof(buf)) return sj_fail(p, "number literal too long");
    memcpy(buf, s + start, i - start);
    buf[i - start] = 0;
    v->d = strtod(buf, NULL);
    p->i = i;
    return 0;
}

static inline int sj_value(StJsonParser* p, StJson* v);

static inline int sj_cmp_key(const void* a, const void* b) {
    return strcmp(*(const char* const*)a, *(const char* const*)b);
}

// a key repeated in one object is refused: readers would disagree about which one counts
static inline int sj_unique_keys(StJsonParser* p, const StJson* v) {
    if (v->n < 2) return 0;
    char** ks = (char**)malloc((size_t)v->n * sizeof(char*));
    if (!ks) return sj_fail(p, "out of memory");
    memcpy(ks, v->keys, (size_t)v->n * sizeof(char*));
    qsort(ks, (size_t)v->n, sizeof(char*), sj_cmp_key);
    int rc = 0;
    for (int k = 1; k < v->n && !rc; k++)
        if (strcmp(ks[k - 1], ks[k]) == 0) {
            char what[160];
            snprintf(what, sizeof(what), "key \"%.100s\" appears twice in one object", ks[k]);
            rc = sj_fail(p, what);
        }
    free(ks);
    return rc;
}

// object or array at '{' / '['; items are appended one at a time so v is always freeable
static inline int sj_container(StJsonParser* p, StJson* v) {
    int is_obj = p->s[p->i] == '{';
    char close = is_obj ? '}' : ']';
    int cap = 0;
    if (++p->depth > ST_JSON_MAXDEPTH) return sj_fail(p, "JSON nested too deeply");
    v->type = is_obj ? SJ_OBJ : SJ_ARR;
    p->i++;
    sj_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        p->depth--;
        return 0;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? 2 * cap : 8;
            StJson* kids = (StJson*)realloc(v->kids, (size_t)cap * sizeof(StJson));
            if (!kids) return sj_fail(p, "out of memory");
            v->kids = kids;
            if (is_obj) {
                char** keys = (char**)realloc(v->keys, (size_t)cap * sizeof(char*));
                if (!keys) return sj_fail(p, "out of memory");
                v->keys = keys;
            }
        }
        memset(&v->kids[v->n], 0, sizeof(StJson));
        if (is_obj) v->keys[v->n] = NULL;
        v->n++;
        if (is_obj) {
            sj_ws(p);
            if (p->i >= p->n || p->s[p->i] != '"') return sj_fail(p, "expected a \"key\" in object");
            if (sj_string(p, &v->keys[v->n - 1])) return 1;
            sj_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') return sj_fail(p, "expected ':' after object key");
            p->i++;
        }
        if (sj_value(p, &v->kids[v->n - 1])) return 1;
        sj_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            break;
        }
        return sj_fail(p, is_obj ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
    }
    p->depth--;
    return is_obj ? sj_unique_keys(p, v) : 0;
}

static inline int sj_value(StJsonParser* p, StJson* v) {
    if (++p->values > ST_JSON_MAXVALUES) {
        char what[96];
        snprintf(what, sizeof(what), "more than %d JSON values (the most a header may hold)", ST_JSON_MAXVALUES);
        return sj_fail(p, what);
    }
    sj_ws(p);
    if (p->i >= p->n) return sj_fail(p, "unexpected end of input");
    char c = p->s[p->i];
    if (c == '{' || c == '[') return sj_container(p, v);
    if (c == '"') {
        v->type = SJ_STR;
        return sj_string(p, &v->s);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return sj_number(p, v);
    static const char* const lits[3] = {"null", "false", "true"};
    for (int k = 0; k < 3; k++) {
        size_t m = strlen(lits[k]);
        if (p->n - p->i >= m && memcmp(p->s + p->i, lits[k], m) == 0) {
            v->type = SJ_NULL + k;
            p->i += m;
            return 0;
        }
    }
    return sj_fail(p, "unexpected character");
}

// parses the whole buffer (trailing whitespace allowed); on failure root is freed and msg says where and why
static inline int sj_parse(const char* s, size_t n, StJson* root, char* msg, size_t msg_len) {
    StJsonParser p;
    memset(&p, 0, sizeof(p));
    p.s = s;
    p.n = n;
    memset(root, 0, sizeof(*root));
    int rc = sj_value(&p, root);
    if (!rc) {
        sj_ws(&p);
        if (p.i != p.n) rc = sj_fail(&p, "trailing characters after the JSON value");
    }
    if (rc) {
        sj_free(root);
        snprintf(msg, msg_len, "%s", p.msg);
    }
    return rc;
}

// 0 if the first non-space byte of s[0, n) opens an object; else 1 with what it found in msg (checked before parsing,
// so a file that is no JSON object costs nothing)
static inline int sj_expect_object(const char* s, size_t n, char* msg, size_t msg_len) {
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    if (i < n && s[i] == '{') return 0;
    if (i >= n)
        snprintf(msg, msg_len, "it is empty, expected a JSON object {...}");
    else if (s[i] >= 32 && s[i] < 127)
        snprintf(msg, msg_len, "it starts with '%c', expected '{' (a JSON object)", s[i]);
    else
        snprintf(msg, msg_len, "it starts with byte 0x%02x, expected '{' (a JSON object)", (unsigned char)s[i]);
    return 1;
}

static inline const StJson* sj_get(const StJson* obj, const char* key) {
    if (!obj || obj->type != SJ_OBJ) return NULL;
    for (int k = 0; k < obj->n; k++)
        if (strcmp(obj->keys[k], key) == 0) return &obj->kids[k];
    return NULL;
}

// ----------------------------------------------------------------------------------------------------------------
// reading a .safetensors file

static inline void st_close(StFile* f) {
    if (!f) return;
    for (int k = 0; k < f->n_meta; k++) {
        if (f->meta_keys) free(f->meta_keys[k]);
        if (f->meta_vals) free(f->meta_vals[k]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->tensors);
    memset(f, 0, sizeof(*f));
}

static inline int st_cmp_tensor_begin(const void* a, const void* b) {
    const StTensor* x = *(const StTensor* const*)a;
    const StTensor* y = *(const StTensor* const*)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}
static inline int st_cmp_str_ptr(const void* a, const void* b) {
    return strcmp(*(const char* const*)a, *(const char* const*)b);
}

// fills f->tensors / metadata from the parsed header; data section = [data_start, file_size)
static inline int st_from_header(StFile* f, const StJson* root, uint64_t data_start, char* err) {
    const char* path = f->path;
    const char* redo = "re-download or re-export it";
    uint64_t data_size = f->file_size - data_start;
    char sbuf[256];
    if (root->type != SJ_OBJ) {
        st_errf(err,
                "%s: header is a JSON %s, expected an object {name: {dtype, shape, data_offsets}}; the file is not a "
                "safetensors file; %s",
                path, sj_type_name(root->type), redo);
        return 1;
    }
    f->tensors = (StTensor*)calloc((size_t)root->n + 1, sizeof(StTensor));
    if (!f->tensors) {
        st_errf(err, "%s: out of memory for %d tensor entries", path, root->n);
        return 1;
    }
    for (int k = 0; k < root->n; k++) {
        const char* name = root->keys[k];
        const StJson* e = &root->kids[k];
        if (strcmp(name, "__metadata__") == 0) {
            if (e->type != SJ_OBJ) {
                st_errf(err, "%s: __metadata__ is a JSON %s, expected an object of string -> string; %s", path,
                        sj_type_name(e->type), redo);
                return 1;
            }
            f->meta_keys = (char**)calloc((size_t)e->n + 1, sizeof(char*));
            f->meta_vals = (char**)calloc((size_t)e->n + 1, sizeof(char*));
            if (!f->meta_keys || !f->meta_vals) {
                st_errf(err, "%s: out of memory for __metadata__", path);
                return 1;
            }
            for (int m = 0; m < e->n; m++) {
                if (e->kids[m].type != SJ_STR) {
                    st_errf(err, "%s: __metadata__ key '%s' holds a JSON %s, but metadata values must be strings; %s",
                            path, e->keys[m], sj_type_name(e->kids[m].type), redo);
                    return 1;
                }
                for (int q = 0; q < m; q++)
                    if (strcmp(e->keys[q], e->keys[m]) == 0) {
                        st_errf(err, "%s: __metadata__ key '%s' appears twice (duplicate key); %s", path, e->keys[m],
                                redo);
                        return 1;
                    }
                f->meta_keys[m] = st_strdup(e->keys[m]);
                f->meta_vals[m] = st_strdup(e->kids[m].s);
                f->n_meta = m + 1;
                if (!f->meta_keys[m] || !f->meta_vals[m]) {
                    st_errf(err, "%s: out of memory for __metadata__", path);
                    return 1;
                }
            }
            continue;
        }
        StTensor* t = &f->tensors[f->n];
        if (strlen(name) >= sizeof(t->name)) {
            st_errf(err, "%s: tensor name '%.80s...' is %zu bytes, longer than the %zu this reader supports", path,
                    name, strlen(name), sizeof(t->name) - 1);
            return 1;
        }
        strcpy(t->name, name);
        if (e->type != SJ_OBJ) {
            st_errf(err,
                    "%s: tensor '%s': header entry is a JSON %s, expected an object {dtype, shape, data_offsets}; %s",
                    path, name, sj_type_name(e->type), redo);
            return 1;
        }
        const StJson* dt = sj_get(e, "dtype");
        const StJson* sh = sj_get(e, "shape");
        const StJson* off = sj_get(e, "data_offsets");
        const char* missing = !dt ? "dtype" : !sh ? "shape" : !off ? "data_offsets" : NULL;
        if (missing) {
            st_errf(err, "%s: tensor '%s': header entry has no \"%s\" field; the header is corrupt; %s", path, name,
                    missing, redo);
            return 1;
        }
        if (dt->type != SJ_STR) {
            st_errf(err, "%s: tensor '%s': dtype is a JSON %s, expected a string like \"F32\"; %s", path, name,
                    sj_type_name(dt->type), redo);
            return 1;
        }
        t->dtype = st_dtype_from_name(dt->s);
        if (t->dtype < 0) {
            st_errf(err,
                    "%s: tensor '%s': unknown dtype \"%.40s\" (known: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 "
                    "BOOL F8_E4M3 F8_E5M2); "
                    "the file is corrupt or from a newer safetensors; convert the tensor to a known dtype",
                    path, name, dt->s);
            return 1;
        }
        if (sh->type != SJ_ARR) {
            st_errf(err, "%s: tensor '%s': shape is a JSON %s, expected an array of dims; %s", path, name,
                    sj_type_name(sh->type), redo);
            return 1;
        }
        if (sh->n > ST_MAXDIM) {
            st_errf(err, "%s: tensor '%s': shape has %d dims, this reader supports at most %d (ST_MAXDIM)", path, name,
                    sh->n, ST_MAXDIM);
            return 1;
        }
        t->ndim = sh->n;
        for (int d = 0; d < sh->n; d++) {
            if (sh->kids[d].type != SJ_NUM || !sh->kids[d].is_int || sh->kids[d].i < 0) {
                st_errf(err, "%s: tensor '%s': shape[%d] is not a non-negative integer (dims must be >= 0); %s", path,
                        name, d, redo);
                return 1;
            }
            t->shape[d] = sh->kids[d].i;
        }
        t->numel = st_numel(t->ndim, t->shape);
        if (t->numel < 0) {
            st_errf(err, "%s: tensor '%s': shape %s has more elements than fit in 64 bits; %s", path, name,
                    st_shape_str(sbuf, t->ndim, t->shape), redo);
            return 1;
        }
        if (off->type != SJ_ARR || off->n != 2 || off->kids[0].type != SJ_NUM || !off->kids[0].is_int ||
            off->kids[0].i < 0 || off->kids[1].type != SJ_NUM || !off->kids[1].is_int ||
            off->kids[1].i < off->kids[0].i) {
            st_errf(err,
                    "%s: tensor '%s': data_offsets must be [begin, end] with integers 0 <= begin <= end; the header is "
                    "corrupt; %s",
                    path, name, redo);
            return 1;
        }
        uint64_t b = (uint64_t)off->kids[0].i, e_ = (uint64_t)off->kids[1].i;
        if (e_ > data_size) {
            st_errf(err,
                    "%s: tensor '%s': data_offsets [%llu, %llu] end past the end of the data section (%llu bytes); the "
                    "file is truncated; %s",
                    path, name, (unsigned long long)b, (unsigned long long)e_, (unsigned long long)data_size, redo);
            return 1;
        }
        uint64_t need = (uint64_t)t->numel * (uint64_t)st_dtype_sizes[t->dtype];
        if (e_ - b != need) {
            st_errf(err,
                    "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but dtype %s with shape %s needs %llu "
                    "bytes; the header is inconsistent; %s",
                    path, name, (unsigned long long)b, (unsigned long long)e_, (unsigned long long)(e_ - b),
                    st_dtype_names[t->dtype], st_shape_str(sbuf, t->ndim, t->shape), (unsigned long long)need, redo);
            return 1;
        }
        t->begin = data_start + b;
        t->end = data_start + e_;
        f->n++;
    }
    // duplicate names and overlapping byte ranges: sort pointers, compare neighbours
    const StTensor** ps = (const StTensor**)malloc(((size_t)f->n + 1) * sizeof(StTensor*));
    const char** names = (const char**)malloc(((size_t)f->n + 1) * sizeof(char*));
    int rc = 0;
    if (!ps || !names) {
        st_errf(err, "%s: out of memory", path);
        rc = 1;
    }
    for (int k = 0; !rc && k < f->n; k++) {
        ps[k] = &f->tensors[k];
        names[k] = f->tensors[k].name;
    }
    if (!rc) {
        qsort(names, (size_t)f->n, sizeof(char*), st_cmp_str_ptr);
        for (int k = 1; k < f->n && !rc; k++)
            if (strcmp(names[k - 1], names[k]) == 0) {
                st_errf(err, "%s: tensor '%s' appears twice in the header (duplicate name); the file is corrupt; %s",
                        path, names[k], redo);
                rc = 1;
            }
    }
    if (!rc) {
        qsort(ps, (size_t)f->n, sizeof(StTensor*), st_cmp_tensor_begin);
        const StTensor* last = NULL; // the non-empty tensor reaching furthest so far
        for (int k = 0; k < f->n && !rc; k++) {
            if (ps[k]->end == ps[k]->begin) continue; // empty tensors occupy no bytes
            if (last && ps[k]->begin < last->end) {
                st_errf(err,
                        "%s: tensors '%s' (data_offsets [%llu, %llu]) and '%s' ([%llu, %llu]) overlap; the header is "
                        "corrupt; %s",
                        path, last->name, (unsigned long long)(last->begin - data_start),
                        (unsigned long long)(last->end - data_start), ps[k]->name,
                        (unsigned long long)(ps[k]->begin - data_start), (unsigned long long)(ps[k]->end - data_start),
                        redo);
                rc = 1;
            }
            if (!last || ps[k]->end > last->end) last = ps[k];
        }
    }
    free(ps);
    free(names);
    return rc;
}

// opens path and parses + validates the whole header; the tensor data is read later with st_read_float/double
static inline int st_open(StFile* f, const char* path, char* err) {
    memset(f, 0, sizeof(*f));
    const char* redo = "re-download or re-export it";
    if (strlen(path) >= sizeof(f->path)) {
        st_errf(err, "path too long (%zu bytes, limit %zu): %.200s...", strlen(path), sizeof(f->path) - 1, path);
        return 1;
    }
    strcpy(f->path, path);
    FILE* fp = st_fopen_sized(path, &f->file_size, err);
    if (!fp) return 1;
    unsigned char len8[8];
    uint64_t n_hdr = 0;
    if (f->file_size < 8 || fread(len8, 1, 8, fp) != 8) {
        st_errf(err,
                "%s: file is only %llu bytes, but a safetensors file starts with an 8-byte header length; the file is "
                "truncated or not a safetensors file; %s",
                path, (unsigned long long)f->file_size, redo);
        fclose(fp);
        return 1;
    }
    for (int k = 7; k >= 0; k--) n_hdr = (n_hdr << 8) | len8[k];
    if (n_hdr > ST_MAX_HEADER) {
        st_errf(err,
                "%s: header length %llu bytes is absurd (limit %llu); the file is not a safetensors file or its first "
                "8 bytes are corrupt; %s",
                path, (unsigned long long)n_hdr, ST_MAX_HEADER, redo);
        fclose(fp);
        return 1;
    }
    if (n_hdr > f->file_size - 8) {
        st_errf(err,
                "%s: header length %llu bytes runs past the end of the file (%llu bytes after the length field); the "
                "file is truncated; %s",
                path, (unsigned long long)n_hdr, (unsigned long long)(f->file_size - 8), redo);
        fclose(fp);
        return 1;
    }
    char* hdr = (char*)malloc((size_t)n_hdr + 1);
    if (!hdr) {
        st_errf(err, "%s: out of memory for a %llu-byte header", path, (unsigned long long)n_hdr);
        fclose(fp);
        return 1;
    }
    if (fread(hdr, 1, (size_t)n_hdr, fp) != (size_t)n_hdr) {
        st_errf(err, "%s: could not read the %llu-byte header: %s; %s", path, (unsigned long long)n_hdr,
                ferror(fp) ? strerror(errno) : "file shrank", redo);
        free(hdr);
        fclose(fp);
        return 1;
    }
    fclose(fp);
    hdr[n_hdr] = 0;
    StJson root;
    char msg[400];
    if (sj_expect_object(hdr, (size_t)n_hdr, msg, sizeof(msg))) {
        st_errf(err, "%s: header is not a safetensors header: %s; the file is corrupt or not a safetensors file; %s",
                path, msg, redo);
        free(hdr);
        return 1;
    }
    if (sj_parse(hdr, (size_t)n_hdr, &root, msg, sizeof(msg))) {
        st_errf(err, "%s: header is not valid JSON (%s); the file is corrupt or not a safetensors file; %s", path, msg,
                redo);
        free(hdr);
        return 1;
    }
    free(hdr);
    int rc = st_from_header(f, &root, 8 + n_hdr, err);
    sj_free(&root);
    if (rc) st_close(f);
    return rc;
}

static inline const StTensor* st_find(const StFile* f, const char* name) {
    for (int k = 0; k < f->n; k++)
        if (strcmp(f->tensors[k].name, name) == 0) return &f->tensors[k];
    return NULL;
}

static inline const char* st_meta(const StFile* f, const char* key) {
    for (int k = 0; k < f->n_meta; k++)
        if (strcmp(f->meta_keys[k], key) == 0) return f->meta_vals[k];
    return NULL;
}

// IEEE half -> float, exact for every input: subnormals, signed zeros, inf, nan (payload kept)
static inline float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, ex = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (ex == 0x1f)
        bits = sign | 0x7f800000u | (man << 13);
    else if (ex != 0)
        bits = sign | ((ex + 112) << 23) | (man << 13); // rebias 15 -> 127
    else {
        float v = (float)man * 5.9604644775390625e-08f; // zero or subnormal: man * 2^-24, exact
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline float st_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// reads tensor t of file f into exactly one of df (float) / dd (double), converting from F32, F16, BF16, F64
static inline int st_read_any(const StFile* f, const StTensor* t, float* df, double* dd, char* err) {
    if (!f || !t || (uintptr_t)t < (uintptr_t)f->tensors || (uintptr_t)t >= (uintptr_t)(f->tensors + f->n)) {
        st_errf(err,
                "%s: tensor '%s' does not belong to this file (a tensor found in another shard?); use the StFile that "
                "st_set_find returned",
                f ? f->path : "(null)", t ? t->name : "(null)");
        return 1;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64) {
        st_errf(err,
                "%s: tensor '%s' has dtype %s, which cannot be read as floating point (supported: F32, F16, BF16, "
                "F64); convert it when exporting",
                f->path, t->name, st_dtype_name(t->dtype));
        return 1;
    }
    uint64_t sz = 0;
    FILE* fp = st_fopen_sized(f->path, &sz, err);
    if (!fp) return 1;
    if (sz != f->file_size || st_fseek(fp, t->begin) != 0) {
        st_errf(err,
                "%s: tensor '%s': the file is now %llu bytes, it was %llu when opened; it changed on disk; reopen it",
                f->path, t->name, (unsigned long long)sz, (unsigned long long)f->file_size);
        fclose(fp);
        return 1;
    }
    int es = st_dtype_sizes[t->dtype], direct = (t->dtype == ST_F32 && df) || (t->dtype == ST_F64 && dd);
    size_t chunk = t->numel < (1 << 22) ? (size_t)t->numel + 1 : (size_t)1 << 22; // elements per read when converting
    unsigned char* stage = direct ? NULL : (unsigned char*)malloc(chunk * (size_t)es);
    if (!direct && !stage) {
        st_errf(err, "%s: out of memory", f->path);
        fclose(fp);
        return 1;
    }
    int rc = 0;
    for (int64_t i0 = 0; i0 < t->numel && !rc; i0 += (int64_t)chunk) {
        size_t m = (size_t)(t->numel - i0 < (int64_t)chunk ? t->numel - i0 : (int64_t)chunk);
        void* dst = direct ? (df ? (void*)(df + i0) : (void*)(dd + i0)) : (void*)stage;
        if (fread(dst, (size_t)es, m, fp) != m) {
            st_errf(err,
                    "%s: tensor '%s': could not read its %llu bytes at offset %llu: %s; the file may be truncated or "
                    "changed since it was opened; re-download it",
                    f->path, t->name, (unsigned long long)(t->end - t->begin), (unsigned long long)t->begin,
                    ferror(fp) ? strerror(errno) : "unexpected end of file");
            rc = 1;
            break;
        }
        if (direct) continue;
        for (size_t j = 0; j < m; j++) {
            const unsigned char* q = stage + j * (size_t)es;
            double v;
            float fv;
            uint16_t h;
            switch (t->dtype) {
            case ST_F32:
                memcpy(&fv, q, 4);
                v = fv;
                break;
            case ST_F16:
                memcpy(&h, q, 2);
                v = st_f16_to_f32(h);
                break;
            case ST_BF16:
                memcpy(&h, q, 2);
                v = st_bf16_to_f32(h);
                break;
            default: memcpy(&v, q, 8); break; // F64
            }
            if (df)
                df[i0 + (int64_t)j] = (float)v;
            else
                dd[i0 + (int64_t)j] = v;
        }
    }
    free(stage);
    fclose(fp);
    return rc;
}
static inline int st_read_float(const StFile* f, const StTensor* t, float* dst, char* err) {
    return st_read_any(f, t, dst, NULL, err);
}
static inline int st_read_double(const StFile* f, const StTensor* t, double* dst, char* err) {
    return st_read_any(f, t, NULL, dst, err);
}

// ----------------------------------------------------------------------------------------------------------------
// sharded checkpoints: {"metadata": {...}, "weight_map": {"tensor": "shard.safetensors", ...}}, shards relative to
// the index's directory. Tensors a shard holds beyond weight_map are allowed; every name must be unique across shards.

static inline void st_set_close(StSet* s) {
    if (!s) return;
    for (int k = 0; k < s->n_files; k++) st_close(&s->files[k]);
    free(s->files);
    memset(s, 0, sizeof(*s));
}

static inline const StTensor* st_set_find(const StSet* s, const char* name, const StFile** file) {
    for (int k = 0; k < s->n_files; k++) {
        const StTensor* t = st_find(&s->files[k], name);
        if (t) {
            if (file) *file = &s->files[k];
            return t;
        }
    }
    if (file) *file = NULL;
    return NULL;
}

typedef struct {
    const char* name;
    int file;
} StNameFile;

// a shard name in an index must stay inside the index's directory: relative, and no ".." path component
static inline int st_shard_name_ok(const char* sn) {
    if (sn[0] == '/' || sn[0] == 0) return 0;
    for (const char* c = sn; *c;) {
        const char* e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 2 && c[0] == '.' && c[1] == '.') return 0;
        c += n + (e ? 1 : 0);
    }
    return 1;
}
static inline int st_cmp_name_file(const void* a, const void* b) {
    return strcmp(((const StNameFile*)a)->name, ((const StNameFile*)b)->name);
}

static inline int st_set_open_index(StSet* s, const char* ipath, char* err) {
    const char* fix = "re-download the checkpoint (index and shards together) or fix the index";
    char* text = NULL;
    size_t len = 0;
    StJson root;
    char msg[400];
    if (st_read_small_file(ipath, &text, &len, err)) return 1;
    if (sj_expect_object(text, len, msg, sizeof(msg))) {
        st_errf(err, "%s: index is not a safetensors index: %s; %s", ipath, msg, fix);
        free(text);
        return 1;
    }
    if (sj_parse(text, len, &root, msg, sizeof(msg))) {
        st_errf(err, "%s: index is not valid JSON (%s); %s", ipath, msg, fix);
        free(text);
        return 1;
    }
    free(text);
    const StJson* wm = sj_get(&root, "weight_map");
    int rc = 0, n_shards = 0, n_all = 0;
    char dir[1024], spath[1100];
    const char** shard_names = NULL;
    StNameFile* all = NULL;
    if (!wm || wm->type != SJ_OBJ || wm->n == 0) {
        st_errf(err,
                "%s: index has no \"weight_map\" object of tensor -> shard file (found %s); is this a safetensors "
                "index.json? %s",
                ipath,
                root.type != SJ_OBJ  ? "no JSON object"
                : !wm                ? "no weight_map"
                : wm->type != SJ_OBJ ? sj_type_name(wm->type)
                                     : "an empty one",
                fix);
        sj_free(&root);
        return 1;
    }
    const char* slash = strrchr(ipath, '/');
    if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - ipath), ipath);
    else
        snprintf(dir, sizeof(dir), ".");
    if (slash == ipath) snprintf(dir, sizeof(dir), "/");
    // unique shard names in order of first appearance; shard index of entry k is found again below by name
    shard_names = (const char**)calloc((size_t)wm->n, sizeof(char*));
    if (!shard_names) {
        st_errf(err, "%s: out of memory", ipath);
        rc = 1;
    }
    for (int k = 0; k < wm->n && !rc; k++) {
        if (wm->kids[k].type != SJ_STR || wm->kids[k].s[0] == 0) {
            st_errf(err, "%s: weight_map entry for tensor '%s' is a JSON %s, expected a shard file name; %s", ipath,
                    wm->keys[k], sj_type_name(wm->kids[k].type), fix);
            rc = 1;
            break;
        }
        int j = 0;
        while (j < n_shards && strcmp(shard_names[j], wm->kids[k].s) != 0) j++;
        if (j == n_shards) shard_names[n_shards++] = wm->kids[k].s;
    }
    // the same name twice in weight_map (a JSON object with a repeated key) is the index-side form of 'in two shards'
    if (!rc && (all = (StNameFile*)malloc((size_t)wm->n * sizeof(StNameFile))) == NULL) {
        st_errf(err, "%s: out of memory", ipath);
        rc = 1;
    }
    if (!rc) {
        for (int k = 0; k < wm->n; k++) {
            all[k].name = wm->keys[k];
            all[k].file = k;
        }
        qsort(all, (size_t)wm->n, sizeof(StNameFile), st_cmp_name_file);
        for (int k = 1; k < wm->n && !rc; k++)
            if (strcmp(all[k - 1].name, all[k].name) == 0) {
                st_errf(err, "%s: tensor '%s' is listed twice in weight_map (shards '%s' and '%s'); %s", ipath,
                        all[k].name, wm->kids[all[k - 1].file].s, wm->kids[all[k].file].s, fix);
                rc = 1;
            }
        free(all);
        all = NULL;
    }
    if (!rc) {
        s->files = (StFile*)calloc((size_t)n_shards, sizeof(StFile));
        if (!s->files) {
            st_errf(err, "%s: out of memory", ipath);
            rc = 1;
        }
    }
    for (int j = 0; j < n_shards && !rc; j++) {
        const char* sn = shard_names[j];
        struct stat sb;
        if (!st_shard_name_ok(sn)) {
            st_errf(err,
                    "%s: weight_map names shard '%.200s', but a shard must be a file inside the index's directory "
                    "(a relative path without '..' components); %s",
                    ipath, sn, fix);
            rc = 1;
            break;
        }
        snprintf(spath, sizeof(spath), "%s/%s", dir, sn);
        if (strlen(spath) >= sizeof(s->files[j].path)) {
            st_errf(err, "%s: shard path too long: %.200s...", ipath, spath);
            rc = 1;
            break;
        }
        int missing = stat(spath, &sb) != 0;
        if (missing || !S_ISREG(sb.st_mode)) {
            char why[128];
            if (missing)
                snprintf(why, sizeof(why), "cannot be opened: %s", strerror(errno));
            else
                snprintf(why, sizeof(why), "is not a regular file");
            int k = 0;
            while (strcmp(wm->kids[k].s, sn) != 0) k++;
            st_errf(err,
                    "%s: weight_map names shard '%s' (for tensor '%s' and others), but %s %s; "
                    "download the missing shard or fix the index",
                    ipath, sn, wm->keys[k], spath, why);
            rc = 1;
            break;
        }
        if (st_open(&s->files[j], spath, err)) {
            rc = 1;
            break;
        }
        s->n_files = j + 1;
    }
    // every weight_map entry must be in the shard it names, and no tensor name may appear twice
    for (int k = 0; k < wm->n && !rc; k++) {
        const StFile* sf = NULL;
        for (int j = 0; j < s->n_files; j++)
            if (strcmp(shard_names[j], wm->kids[k].s) == 0) sf = &s->files[j];
        if (!st_find(sf, wm->keys[k])) {
            st_errf(err,
                    "%s: weight_map puts tensor '%s' in shard '%s', but %s holds no such tensor (it holds %d); the "
                    "index and shards do not match; %s",
                    ipath, wm->keys[k], wm->kids[k].s, sf->path, sf->n, fix);
            rc = 1;
        }
    }
    for (int j = 0; j < s->n_files && !rc; j++) n_all += s->files[j].n;
    if (!rc && (all = (StNameFile*)malloc(((size_t)n_all + 1) * sizeof(StNameFile))) == NULL) {
        st_errf(err, "%s: out of memory", ipath);
        rc = 1;
    }
    if (!rc) {
        int m = 0;
        for (int j = 0; j < s->n_files; j++)
            for (int k = 0; k < s->files[j].n; k++) {
                all[m].name = s->files[j].tensors[k].name;
                all[m].file = j;
                m++;
            }
        qsort(all, (size_t)m, sizeof(StNameFile), st_cmp_name_file);
        for (int k = 1; k < m && !rc; k++)
            if (strcmp(all[k - 1].name, all[k].name) == 0) {
                st_errf(err, "%s: tensor '%s' is stored in two shards, %s and %s; the checkpoint is inconsistent; %s",
                        ipath, all[k].name, s->files[all[k - 1].file].path, s->files[all[k].file].path, fix);
                rc = 1;
            }
    }
    free(all);
    free(shard_names);
    sj_free(&root);
    if (rc) st_set_close(s);
    return rc;
}

// path: a .safetensors file, a *.safetensors.index.json, or a directory holding exactly one index (then its shards
// may sit beside it) or, with no index, exactly one .safetensors file
static inline int st_set_open(StSet* s, const char* path, char* err) {
    memset(s, 0, sizeof(*s));
    if (st_ends_with(path, ".json")) return st_set_open_index(s, path, err);
    DIR* d = opendir(path);
    if (d) {
        char idx[2][256], sft[2][256], full[1300];
        int n_idx = 0, n_sft = 0;
        struct dirent* de;
        while ((de = readdir(d)) != NULL) {
            if (st_ends_with(de->d_name, ".safetensors.index.json")) {
                if (n_idx < 2) snprintf(idx[n_idx], 256, "%s", de->d_name);
                n_idx++;
            } else if (st_ends_with(de->d_name, ".safetensors")) {
                if (n_sft < 2) snprintf(sft[n_sft], 256, "%s", de->d_name);
                n_sft++;
            }
        }
        closedir(d);
        if (n_idx > 1) {
            st_errf(err, "%s: directory holds %d *.safetensors.index.json files (%s, %s, ...); pass the one you mean",
                    path, n_idx, idx[0], idx[1]);
            return 1;
        }
        if (n_idx == 0 && n_sft != 1) {
            if (n_sft == 0)
                st_errf(err, "%s: directory holds no .safetensors file and no *.safetensors.index.json; check the path",
                        path);
            else
                st_errf(err,
                        "%s: directory holds %d .safetensors files (%s, %s, ...) and no *.safetensors.index.json; pass "
                        "one file, or the index of a sharded checkpoint",
                        path, n_sft, sft[0], sft[1]);
            return 1;
        }
        snprintf(full, sizeof(full), "%s%s%s", path, st_ends_with(path, "/") ? "" : "/", n_idx ? idx[0] : sft[0]);
        if (n_idx) return st_set_open_index(s, full, err);
        path = full;
        s->files = (StFile*)calloc(1, sizeof(StFile));
        if (!s->files) {
            st_errf(err, "%s: out of memory", path);
            return 1;
        }
        if (st_open(&s->files[0], path, err)) {
            st_set_close(s);
            return 1;
        }
        s->n_files = 1;
        return 0;
    }
    s->files = (StFile*)calloc(1, sizeof(StFile));
    if (!s->files) {
        st_errf(err, "%s: out of memory", path);
        return 1;
    }
    if (st_open(&s->files[0], path, err)) {
        st_set_close(s);
        return 1;
    }
    s->n_files = 1;
    return 0;
}

// ----------------------------------------------------------------------------------------------------------------
// writing: atomically (path.tmp, fflush + fsync, rename), so a crash or a full disk never leaves a half-written
// file under the real name. Shared with npy.h.

// opens path + ".tmp" for writing; tmp receives that name (>= 1100 bytes)
static inline FILE* st_atomic_begin(const char* path, char* tmp, char* err) {
    if (strlen(path) >= 1090) {
        st_errf(err, "path too long (%zu bytes): %.200s...", strlen(path), path);
        return NULL;
    }
    snprintf(tmp, 1100, "%.1089s.tmp", path);   // the length was checked above; the precision tells the compiler
    FILE* fp = fopen(tmp, "wb");
    if (!fp)
        st_errf(err, "%s: cannot create %s for writing: %s; does the directory exist and is it writable?", path, tmp,
                strerror(errno));
    return fp;
}

// ok: everything was written. Flushes, syncs, closes and renames tmp over path, or removes tmp on any failure.
static inline int st_atomic_end(FILE* fp, const char* tmp, const char* path, int ok, char* err) {
    if (!ok) {
        fclose(fp);
        remove(tmp);
        return 1;
    } // err was filled by the caller
    const char* step = NULL;
    if (fflush(fp) != 0)
        step = "flush";
    else if (fsync(fileno(fp)) != 0)
        step = "fsync";
    if (fclose(fp) != 0 && !step) step = "close";
    if (!step && rename(tmp, path) != 0) step = "rename";
    if (step) {
        st_errf(err,
                "%s: writing failed at %s of %s: %s (disk full?); the previous %s, if any, is untouched; free space "
                "and retry",
                path, step, tmp, strerror(errno), path);
        remove(tmp);
        return 1;
    }
    return 0;
}

typedef struct {
    char* p;
    size_t n, cap;
    int oom;
} StBuf; // growing string for the header
static inline void sb_put(StBuf* b, const char* s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap ? 2 * b->cap : 4096) + n;
        char* p = (char*)realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static inline void sb_str(StBuf* b, const char* s) { sb_put(b, s, strlen(s)); }
static inline void sb_json_str(StBuf* b, const char* s) { // a JSON string literal with escapes
    sb_put(b, "\"", 1);
    for (const unsigned char* q = (const unsigned char*)s; *q; q++) {
        char e[8];
        if (*q == '"' || *q == '\\') {
            e[0] = '\\';
            e[1] = (char)*q;
            sb_put(b, e, 2);
        } else if (*q < 0x20) {
            snprintf(e, sizeof(e), "\\u%04x", *q);
            sb_put(b, e, 6);
        } else
            sb_put(b, (const char*)q, 1);
    }
    sb_put(b, "\"", 1);
}

// writes n tensors, all as F32, in the given order, plus n_meta string pairs meta_kv = {key0, val0, key1, val1, ...}
static inline int st_write(const char* path, const StOut* ts, int n, const char* const* meta_kv, int n_meta,
                           char* err) {
    char sbuf[256], num[64], tmp[1100];
    if (n < 0 || n_meta < 0 || (n > 0 && !ts) || (n_meta > 0 && !meta_kv)) {
        st_errf(err, "%s: st_write called with n=%d, n_meta=%d and NULL arrays", path, n, n_meta);
        return 1;
    }
    for (int k = 0; k < 2 * n_meta; k++)
        if (!meta_kv[k]) {
            st_errf(err, "%s: metadata %s %d is NULL", path, k % 2 ? "value" : "key", k / 2);
            return 1;
        }
    for (int k = 0; k < n; k++) {
        const StOut* o = &ts[k];
        if (!o->name || !o->name[0] || strlen(o->name) > 255 || strcmp(o->name, "__metadata__") == 0) {
            st_errf(err, "%s: tensor %d has name '%.60s', which is empty, NULL, reserved or longer than 255 bytes",
                    path, k, o->name ? o->name : "(null)");
            return 1;
        }
        if (o->ndim < 0 || o->ndim > ST_MAXDIM || st_numel(o->ndim, o->shape) < 0) {
            st_errf(err, "%s: tensor '%s' has ndim %d / shape %s; need 0 <= ndim <= %d and dims >= 0", path, o->name,
                    o->ndim, st_shape_str(sbuf, o->ndim < 0 ? 0 : o->ndim, o->shape), ST_MAXDIM);
            return 1;
        }
        if ((o->f32 == NULL) == (o->f64 == NULL)) {
            st_errf(err, "%s: tensor '%s': exactly one of f32 / f64 must be non-NULL", path, o->name);
            return 1;
        }
        for (int q = 0; q < k; q++)
            if (strcmp(ts[q].name, o->name) == 0) {
                st_errf(err, "%s: tensor '%s' is given twice (duplicate name)", path, o->name);
                return 1;
            }
    }
    // header: {"__metadata__":{...},"name":{"dtype":"F32","shape":[...],"data_offsets":[b,e]},...} + spaces to 8 bytes
    StBuf h;
    memset(&h, 0, sizeof(h));
    sb_str(&h, "{");
    if (n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            if (k) sb_str(&h, ",");
            sb_json_str(&h, meta_kv[2 * k]);
            sb_str(&h, ":");
            sb_json_str(&h, meta_kv[2 * k + 1]);
        }
        sb_str(&h, "}");
    }
    uint64_t off = 0;
    for (int k = 0; k < n; k++) {
        const StOut* o = &ts[k];
        uint64_t bytes = (uint64_t)st_numel(o->ndim, o->shape) * 4;
        if (n_meta > 0 || k > 0) sb_str(&h, ",");
        sb_json_str(&h, o->name);
        sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < o->ndim; d++) {
            snprintf(num, sizeof(num), "%s%lld", d ? "," : "", (long long)o->shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof(num), "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + bytes));
        sb_str(&h, num);
        off += bytes;
    }
    sb_str(&h, "}");
    while (!h.oom && h.n % 8) sb_str(&h, " ");
    if (h.oom) {
        free(h.p);
        st_errf(err, "%s: out of memory building the header", path);
        return 1;
    }
    FILE* fp = st_atomic_begin(path, tmp, err);
    if (!fp) {
        free(h.p);
        return 1;
    }
    unsigned char len8[8];
    int ok = 1;
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)h.n >> (8 * k));
    ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(h.p, 1, h.n, fp) == h.n;
    free(h.p);
    size_t chunk = 1 << 16;
    float* conv = (float*)malloc(chunk * sizeof(float));
    if (!conv) ok = 0;
    for (int k = 0; k < n && ok; k++) {
        const StOut* o = &ts[k];
        int64_t numel = st_numel(o->ndim, o->shape);
        if (o->f32) {
            ok = fwrite(o->f32, 4, (size_t)numel, fp) == (size_t)numel;
            continue;
        }
        for (int64_t i0 = 0; i0 < numel && ok; i0 += (int64_t)chunk) {
            size_t m = (size_t)(numel - i0 < (int64_t)chunk ? numel - i0 : (int64_t)chunk);
            for (size_t j = 0; j < m; j++) conv[j] = (float)o->f64[i0 + (int64_t)j];
            ok = fwrite(conv, 4, m, fp) == m;
        }
    }
    if (!ok)
        st_errf(err,
                "%s: writing %s failed: %s (disk full?); the previous %s, if any, is untouched; free space and retry",
                path, tmp, conv ? strerror(errno) : "out of memory", path);
    free(conv);
    return st_atomic_end(fp, tmp, path, ok, err);
}
