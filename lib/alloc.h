// lib/alloc.h: the one checked allocation every program uses. A failed allocation prints what it was for and how
// many bytes were asked, then exits: a clear message instead of a NULL pointer that segfaults later.
//   float* x = (float*)xmalloc(n, sizeof(float), "latent");      double* g = (double*)xcalloc(n, 8, "gradients");
// Sizes computed from input (files, flags) should be bounded by the caller first, with a message that says which
// input was too big; this helper is the last line of defence.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

static inline void xalloc_fail_(size_t n, size_t size, const char* what) {
    if (size && n > SIZE_MAX / size)
        fprintf(stderr, "error: out of memory: %zu x %zu bytes for %s overflow a size_t\n", n, size, what);
    else
        fprintf(stderr,
                "error: out of memory: cannot allocate %zu bytes (%.2f GB) for %s; reduce the size or free memory\n",
                n * size, (double)(n * size) / 1e9, what);
    exit(1);
}

// n elements of size bytes, uninitialised; never returns NULL (0 elements allocate 1 byte)
static inline void* xmalloc(size_t n, size_t size, const char* what) {
    if (size && n > SIZE_MAX / size) xalloc_fail_(n, size, what);
    size_t bytes = n * size;
    void* p = malloc(bytes > 0 ? bytes : 1);
    if (!p) xalloc_fail_(n, size, what);
    return p;
}

// n elements of size bytes, zeroed; never returns NULL
static inline void* xcalloc(size_t n, size_t size, const char* what) {
    if (size && n > SIZE_MAX / size) xalloc_fail_(n, size, what);
    void* p = calloc(n ? n : 1, size ? size : 1);
    if (!p) xalloc_fail_(n, size, what);
    return p;
}
