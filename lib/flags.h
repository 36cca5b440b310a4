// lib/flags.h: command-line flags from one table, so the parser and the usage message cannot disagree.
//   Flag flags[] = { FLAG_INT_R("--steps", &steps, 0, 1000000, "optimizer steps"), FLAG_STR(...), FLAG_END };
//   int rc = flags_parse(flags, argc, argv, 1, "usage: ./prog [flags]");   // 0 ok, 1 --help shown, 2 bad flag
// Numbers are parsed strictly (lib/parse.h): the whole value must be the number, reals must be finite, and each
// flag may carry a range [lo, hi] that the usage message shows and the parser enforces. A switch takes no value.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <float.h>
#include "parse.h"

typedef enum { FLAG_T_INT, FLAG_T_I64, FLAG_T_DOUBLE, FLAG_T_STR, FLAG_T_BOOL, FLAG_T_SWITCH, FLAG_T_NONE } FlagType;
typedef struct {
    const char* name;
    FlagType type;
    void* ptr; // int* (INT, BOOL, SWITCH), long long* (I64), double*, const char** (STR)
    const char* help;
    double lo, hi; // accepted range of a number
} Flag;

// clang-format off
#define FLAG_INT_R(n, p, lo, hi, h)    {n, FLAG_T_INT, (void*)(p), h, (double)(lo), (double)(hi)}
#define FLAG_I64_R(n, p, lo, hi, h)    {n, FLAG_T_I64, (void*)(p), h, (double)(lo), (double)(hi)}
#define FLAG_DOUBLE_R(n, p, lo, hi, h) {n, FLAG_T_DOUBLE, (void*)(p), h, (double)(lo), (double)(hi)}
#define FLAG_INT(n, p, h)              FLAG_INT_R(n, p, INT_MIN, INT_MAX, h)
#define FLAG_DOUBLE(n, p, h)           FLAG_DOUBLE_R(n, p, -DBL_MAX, DBL_MAX, h)
#define FLAG_STR(n, p, h)              {n, FLAG_T_STR, (void*)(p), h, 0, 0}
#define FLAG_BOOL(n, p, h)             {n, FLAG_T_BOOL, (void*)(p), h, 0, 1}     // takes 0 or 1
#define FLAG_SWITCH(n, p, h)           {n, FLAG_T_SWITCH, (void*)(p), h, 0, 1}   // takes no value; sets *p = 1
#define FLAG_END                       {NULL, FLAG_T_NONE, NULL, NULL, 0, 0}
// clang-format on

// "lo..hi" or ">= lo" of a number flag, or "" when it takes any value of its type
static inline const char* flags_range_str_(const Flag* f, char* buf, size_t n) {
    double any_lo = f->type == FLAG_T_DOUBLE ? -DBL_MAX : f->type == FLAG_T_I64 ? (double)LLONG_MIN : INT_MIN;
    double any_hi = f->type == FLAG_T_DOUBLE ? DBL_MAX : f->type == FLAG_T_I64 ? (double)LLONG_MAX : INT_MAX;
    buf[0] = 0;
    if (f->type != FLAG_T_INT && f->type != FLAG_T_I64 && f->type != FLAG_T_DOUBLE) return buf;
    if (f->lo <= any_lo && f->hi >= any_hi) return buf;
    if (f->hi >= any_hi)
        snprintf(buf, n, ">= %.15g", f->lo);
    else
        snprintf(buf, n, "%.15g..%.15g", f->lo, f->hi);
    return buf;
}

static inline void flags_usage(const Flag* f, const char* synopsis, FILE* out) {
    fprintf(out, "%s\n", synopsis);
    for (; f->name; f++) {
        char def[96] = "", range[80];
        const char* kind = "";
        switch (f->type) {
        case FLAG_T_INT:
            kind = "N";
            snprintf(def, sizeof(def), "%d", *(int*)f->ptr);
            break;
        case FLAG_T_I64:
            kind = "N";
            snprintf(def, sizeof(def), "%lld", *(long long*)f->ptr);
            break;
        case FLAG_T_BOOL:
            kind = "0|1";
            snprintf(def, sizeof(def), "%d", *(int*)f->ptr);
            break;
        case FLAG_T_SWITCH: snprintf(def, sizeof(def), "%s", *(int*)f->ptr ? "on" : "off"); break;
        case FLAG_T_DOUBLE:
            kind = "X";
            snprintf(def, sizeof(def), "%g", *(double*)f->ptr);
            break;
        case FLAG_T_STR:
            kind = "S";
            snprintf(def, sizeof(def), "%s", *(const char**)f->ptr ? *(const char**)f->ptr : "none");
            break;
        default: break;
        }
        flags_range_str_(f, range, sizeof(range));
        fprintf(out, "  %-22s %-3s %s (default %s%s%s)\n", f->name, kind, f->help, def, range[0] ? "; " : "", range);
    }
    fprintf(out, "  %-22s     print this message\n", "--help");
}

// returns 0 on success, 1 if --help was printed, 2 on a bad flag (after printing what was wrong)
static inline int flags_parse(const Flag* flags, int argc, char** argv, int first, const char* synopsis) {
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            flags_usage(flags, synopsis, stdout);
            return 1;
        }
        const Flag* f = flags;
        while (f->name && strcmp(f->name, argv[i])) f++;
        if (!f->name) {
            fprintf(stderr, "error: unknown flag '%s'\n\n", argv[i]);
            flags_usage(flags, synopsis, stderr);
            return 2;
        }
        if (f->type == FLAG_T_SWITCH) {
            *(int*)f->ptr = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: flag %s needs a value (see --help)\n", f->name);
            return 2;
        }
        const char* v = argv[++i];
        const char* why = NULL;
        char range[80];
        flags_range_str_(f, range, sizeof(range));
        long long x = 0;
        double d = 0;
        switch (f->type) {
        case FLAG_T_INT:
        case FLAG_T_BOOL:
        case FLAG_T_I64:
            why = parse_int(v, (long long)f->lo, f->hi >= (double)LLONG_MAX ? LLONG_MAX : (long long)f->hi, &x);
            if (!why && f->type == FLAG_T_I64)
                *(long long*)f->ptr = x;
            else if (!why)
                *(int*)f->ptr = (int)x;
            break;
        case FLAG_T_DOUBLE:
            why = parse_double(v, f->lo, f->hi, &d);
            if (!why) *(double*)f->ptr = d;
            break;
        case FLAG_T_STR: *(const char**)f->ptr = v; break;
        default: break;
        }
        if (why) {
            const char* kind = f->type == FLAG_T_BOOL     ? "0 or 1"
                               : f->type == FLAG_T_DOUBLE ? "a finite number"
                                                          : "an integer";
            fprintf(stderr, "error: flag %s expects %s%s%s, found '%s' (%s)\n", f->name, kind, range[0] ? " " : "",
                    range, v, why);
            return 2;
        }
    }
    return 0;
}
