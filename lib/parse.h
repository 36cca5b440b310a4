// lib/parse.h: strict number parsing for flags, metadata and config files. The whole string must be the number
// (no spaces, no trailing junk, no empty string), integers must fit, reals must be finite, and both must lie in
// [lo, hi]. Each returns NULL on success, or a reason ("not an integer", "out of range") for the caller's message,
// which should also name the flag or key, the value found and the range.
#pragma once
#include <stdlib.h>
#include <errno.h>
#include <math.h>

// a decimal integer in [lo, hi]
static inline const char* parse_int(const char* s, long long lo, long long hi, long long* out) {
    if (!s || !*s) return "empty, expected an integer";
    char* end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || s[0] == ' ' || s[0] == '\t' || s[0] == '\n') return "not an integer";
    if (errno == ERANGE || x < lo || x > hi) return "out of range";
    *out = x;
    return NULL;
}

// a finite real number in [lo, hi] (nan and inf are refused)
static inline const char* parse_double(const char* s, double lo, double hi, double* out) {
    if (!s || !*s) return "empty, expected a number";
    char* end = NULL;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || s[0] == ' ' || s[0] == '\t' || s[0] == '\n') return "not a number";
    if (!isfinite(x)) return "not finite";
    if (errno == ERANGE && fabs(x) > 1) return "out of range";
    if (x < lo || x > hi) return "out of range";
    *out = x;
    return NULL;
}
