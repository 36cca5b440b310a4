// lib/npy.h: read and write NumPy .npy files of float32 ('<f4', C order): test vectors and debugging dumps.
// Format (numpy.lib.format): "\x93NUMPY", major, minor, header length (u16 for v1.0, u32 for v2.0/v3.0), then a
// Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (16, 2), } padded with spaces and '\n' so
// the data starts at a multiple of 64 bytes, then the raw little-endian data. Same error convention as safetensors.h.
#pragma once
#include "safetensors.h" // ST_ERRLEN, ST_MAXDIM, file helpers, atomic write

#define NPY_MAX_HEADER (1u << 20) // numpy writes < 1 KB; numpy itself refuses more than 10000 bytes by default

// one value of the header dict: the span [*i, end) up to the next ',' or '}' at nesting depth 0; skips strings
static inline int npy_skip_value(const char* h, size_t n, size_t* i) {
    int depth = 0;
    while (*i < n) {
        char c = h[*i];
        if (c == '\'' || c == '"') {
            for ((*i)++; *i < n && h[*i] != c; (*i)++)
                if (h[*i] == '\\') (*i)++;
            if (*i >= n) return 1;
        } else if (c == '(' || c == '[' || c == '{')
            depth++;
        else if (c == ')' || c == ']' || c == '}') {
            if (depth == 0) return 0;
            depth--;
        } else if (c == ',' && depth == 0)
            return 0;
        (*i)++;
    }
    return 1;
}

// "(16, 2, 6)", "(5,)", "()"; Python 2 files may write 16L
static inline int npy_parse_shape(const char* s, size_t n, int* ndim, int64_t* shape) {
    size_t i = 0;
    *ndim = 0;
    while (i < n && s[i] == ' ') i++;
    if (i >= n || s[i++] != '(') return 1;
    for (;;) {
        while (i < n && s[i] == ' ') i++;
        if (i < n && s[i] == ')') break;
        if (i >= n || s[i] < '0' || s[i] > '9' || *ndim >= ST_MAXDIM) return 1;
        int64_t v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (v > (INT64_MAX - 9) / 10) return 1;
            v = v * 10 + (s[i++] - '0');
        }
        if (i < n && s[i] == 'L') i++;
        shape[(*ndim)++] = v;
        while (i < n && s[i] == ' ') i++;
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i < n && s[i] == ')') break;
        return 1;
    }
    for (i++; i < n && s[i] == ' '; i++) {
    }
    return i != n || st_numel(*ndim, shape) < 0;
}

// reads a float32 array; *data is malloc'd (free it), shape gets *ndim dims
static inline int npy_read(const char* path, float** data, int* ndim, int64_t shape[ST_MAXDIM], char* err) {
    *data = NULL;
    *ndim = 0;
    uint64_t size = 0;
    FILE* fp = st_fopen_sized(path, &size, err);
    if (!fp) return 1;
    unsigned char pre[12];
    size_t got = fread(pre, 1, size < 12 ? (size_t)size : 12, fp);
    if (got < 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        char seen[16];
        size_t k = 0;
        for (size_t j = 0; j < got && j < 6; j++) seen[k++] = (pre[j] >= 32 && pre[j] < 127) ? (char)pre[j] : '?';
        seen[k] = 0;
        st_errf(err,
                "%s: not a .npy file: bad magic (expected \\x93NUMPY, found '%s', file is %llu bytes); was it written "
                "with np.save?",
                path, seen, (unsigned long long)size);
        fclose(fp);
        return 1;
    }
    int major = pre[6], minor = pre[7];
    if (!(major >= 1 && major <= 3 && minor == 0) || (major > 1 && got < 12)) {
        st_errf(err, "%s: unsupported .npy version %d.%d (this reader handles 1.0, 2.0, 3.0)%s", path, major, minor,
                major > 1 && major <= 3 && minor == 0 ? "; the file is truncated"
                                                      : "; re-save it with a current numpy");
        fclose(fp);
        return 1;
    }
    uint64_t hstart = major == 1 ? 10 : 12, hlen = major == 1 ? (uint64_t)(pre[8] | pre[9] << 8)
                                                              : (uint64_t)pre[8] | (uint64_t)pre[9] << 8 |
                                                                    (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    if (hlen > NPY_MAX_HEADER || hstart + hlen > size) {
        st_errf(err, "%s: header length %llu %s (file is %llu bytes); the file is truncated or corrupt; re-create it",
                path, (unsigned long long)hlen, hlen > NPY_MAX_HEADER ? "is absurd" : "runs past the end of the file",
                (unsigned long long)size);
        fclose(fp);
        return 1;
    }
    char* h = (char*)malloc((size_t)hlen + 1);
    if (!h) {
        st_errf(err, "%s: out of memory", path);
        fclose(fp);
        return 1;
    }
    if (st_fseek(fp, hstart) != 0 || fread(h, 1, (size_t)hlen, fp) != (size_t)hlen) {
        st_errf(err, "%s: could not read the %llu-byte header: %s", path, (unsigned long long)hlen, strerror(errno));
        free(h);
        fclose(fp);
        return 1;
    }
    h[hlen] = 0;
    for (size_t e = (size_t)hlen; e > 0 && (h[e - 1] == ' ' || h[e - 1] == '\n'); e--)
        h[e - 1] = 0; // padding, for messages
    // the dict: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
    const char *descr = NULL, *fortran = NULL, *shp = NULL;
    size_t descr_n = 0, fortran_n = 0, shp_n = 0;
    size_t i = 0, n = strlen(h);
    int bad = 0;
#define NPY_WS()                                                                                                       \
    while (i < n && (h[i] == ' ' || h[i] == '\n' || h[i] == '\t' || h[i] == '\r')) i++
    NPY_WS();
    if (i >= n || h[i++] != '{') bad = 1;
    while (!bad) {
        NPY_WS();
        if (i < n && h[i] == '}') break;
        if (i >= n || (h[i] != '\'' && h[i] != '"')) {
            bad = 1;
            break;
        }
        char q = h[i++];
        size_t k0 = i;
        while (i < n && h[i] != q) i++;
        if (i >= n) {
            bad = 1;
            break;
        }
        size_t klen = i - k0;
        const char* key = h + k0;
        i++;
        NPY_WS();
        if (i >= n || h[i++] != ':') {
            bad = 1;
            break;
        }
        NPY_WS();
        size_t v0 = i;
        if (npy_skip_value(h, n, &i)) {
            bad = 1;
            break;
        }
        size_t v1 = i;
        while (v1 > v0 && h[v1 - 1] == ' ') v1--;
        if (klen == 5 && memcmp(key, "descr", 5) == 0) {
            descr = h + v0;
            descr_n = v1 - v0;
        } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0) {
            fortran = h + v0;
            fortran_n = v1 - v0;
        } else if (klen == 5 && memcmp(key, "shape", 5) == 0) {
            shp = h + v0;
            shp_n = v1 - v0;
        }
        if (i < n && h[i] == ',') i++;
    }
#undef NPY_WS
    int rc = 1;
    int64_t numel = 0;
    char sbuf[256];
    if (bad || !descr || !fortran || !shp) {
        st_errf(err,
                "%s: cannot parse the .npy header%s%s (header: %.200s); the file is corrupt; re-create it with np.save",
                path, bad ? "" : ": it lacks ",
                bad        ? ""
                : !descr   ? "'descr'"
                : !fortran ? "'fortran_order'"
                           : "'shape'",
                h);
    } else if (!((descr_n == 5 && (memcmp(descr, "'<f4'", 5) == 0 || memcmp(descr, "\"<f4\"", 5) == 0)))) {
        st_errf(err,
                "%s: array dtype is %.*s, expected '<f4' (little-endian float32); convert it in Python: np.save(path, "
                "arr.astype(np.float32))",
                path, (int)(descr_n < 60 ? descr_n : 60), descr);
    } else if (fortran_n == 4 && memcmp(fortran, "True", 4) == 0) {
        st_errf(err,
                "%s: array is stored in Fortran order (fortran_order: True); save a C-ordered copy: np.save(path, "
                "np.ascontiguousarray(arr))",
                path);
    } else if (!(fortran_n == 5 && memcmp(fortran, "False", 5) == 0)) {
        st_errf(
            err,
            "%s: cannot parse fortran_order value '%.*s' (expected True or False); the file is corrupt; re-create it",
            path, (int)(fortran_n < 40 ? fortran_n : 40), fortran);
    } else if (npy_parse_shape(shp, shp_n, ndim, shape)) {
        st_errf(err,
                "%s: cannot parse shape '%.*s' (expected a tuple of at most %d non-negative ints like (16, 2)); "
                "re-create the file",
                path, (int)(shp_n < 80 ? shp_n : 80), shp, ST_MAXDIM);
    } else {
        numel = st_numel(*ndim, shape);
        uint64_t need = (uint64_t)numel * 4, have = size - hstart - hlen;
        if (have != need) {
            st_errf(err, "%s: shape %s needs %llu data bytes, but %llu follow the header; %s", path,
                    st_shape_str(sbuf, *ndim, shape), (unsigned long long)need, (unsigned long long)have,
                    have < need
                        ? "the file is truncated; re-create it"
                        : "extra bytes at the end (several arrays in one file?); re-create it with one np.save");
        } else
            rc = 0;
    }
    free(h);
    if (!rc) {
        *data = (float*)malloc(numel > 0 ? (size_t)numel * 4 : 1);
        if (!*data) {
            st_errf(err, "%s: out of memory for %lld floats", path, (long long)numel);
            rc = 1;
        } else if (fread(*data, 4, (size_t)numel, fp) != (size_t)numel) {
            st_errf(err, "%s: could not read %lld floats: %s; the file changed while reading?", path, (long long)numel,
                    ferror(fp) ? strerror(errno) : "unexpected end of file");
            rc = 1;
        }
    }
    fclose(fp);
    if (rc) {
        free(*data);
        *data = NULL;
        *ndim = 0;
    }
    return rc;
}

// npy_read plus a shape check; shape[d] == -1 accepts any size in dim d
static inline int npy_read_shape(const char* path, float** data, int ndim, const int64_t* shape, char* err) {
    int nd = 0;
    int64_t sh[ST_MAXDIM];
    char want[256], found[256];
    if (npy_read(path, data, &nd, sh, err)) return 1;
    int ok = nd == ndim;
    for (int d = 0; ok && d < nd; d++)
        if (shape[d] >= 0 && shape[d] != sh[d]) ok = 0;
    if (!ok) {
        st_errf(err, "%s: array has shape %s, expected %s (* = any size); regenerate the file for this configuration",
                path, st_shape_str(found, nd, sh), st_shape_str(want, ndim > ST_MAXDIM ? ST_MAXDIM : ndim, shape));
        free(*data);
        *data = NULL;
        return 1;
    }
    return 0;
}

// writes a v1.0 '<f4' C-order file atomically (path.tmp + rename)
static inline int npy_write(const char* path, const float* data, int ndim, const int64_t* shape, char* err) {
    char h[512], tmp[1100];
    int64_t numel = ndim >= 0 && ndim <= ST_MAXDIM ? st_numel(ndim, shape) : -1;
    if (numel < 0 || (numel > 0 && !data)) {
        st_errf(err, "%s: npy_write needs 0 <= ndim <= %d, dims >= 0 and data (ndim %d)", path, ST_MAXDIM, ndim);
        return 1;
    }
    int k = snprintf(h, sizeof(h), "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < ndim; d++)
        k += snprintf(h + k, sizeof(h) - (size_t)k, "%lld,%s", (long long)shape[d], d + 1 < ndim ? " " : "");
    if (ndim > 1) k--; // numpy writes (5,) for 1-D but (2, 3) otherwise
    k += snprintf(h + k, sizeof(h) - (size_t)k, "), }");
    while ((10 + k + 1) % 64) h[k++] = ' '; // 10-byte preamble + header + '\n' is a multiple of 64
    h[k++] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(k & 0xff), (unsigned char)(k >> 8)};
    FILE* fp = st_atomic_begin(path, tmp, err);
    if (!fp) return 1;
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(h, 1, (size_t)k, fp) == (size_t)k &&
             (numel == 0 || fwrite(data, 4, (size_t)numel, fp) == (size_t)numel);
    if (!ok)
        st_errf(err,
                "%s: writing %s failed: %s (disk full?); the previous %s, if any, is untouched; free space and retry",
                path, tmp, strerror(errno), path);
    return st_atomic_end(fp, tmp, path, ok, err);
}
