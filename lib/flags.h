// lib/flags.h: command-line flags from one table, so the parser and the usage message cannot disagree.
//   Flag flags[] = { FLAG_INT("--steps", &steps, "optimizer steps"), FLAG_STR(...), FLAG_END };
//   if (flags_parse(flags, argc, argv, 1, "usage: ./prog [flags]")) return 2;
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

typedef enum { FLAG_T_INT, FLAG_T_DOUBLE, FLAG_T_STR, FLAG_T_BOOL, FLAG_T_NONE } FlagType;
typedef struct { const char* name; FlagType type; void* ptr; const char* help; } Flag;

#define FLAG_INT(n, p, h)    {n, FLAG_T_INT, (void*)(p), h}
#define FLAG_DOUBLE(n, p, h) {n, FLAG_T_DOUBLE, (void*)(p), h}
#define FLAG_STR(n, p, h)    {n, FLAG_T_STR, (void*)(p), h}
#define FLAG_BOOL(n, p, h)   {n, FLAG_T_BOOL, (void*)(p), h}   // takes 0 or 1
#define FLAG_END             {NULL, FLAG_T_NONE, NULL, NULL}

static void flags_usage(const Flag* f, const char* synopsis, FILE* out) {
    fprintf(out, "%s\n", synopsis);
    for (; f->name; f++) {
        char def[96] = "";
        switch (f->type) {
        case FLAG_T_INT: snprintf(def, sizeof(def), "%d", *(int*)f->ptr); break;
        case FLAG_T_BOOL: snprintf(def, sizeof(def), "%d", *(int*)f->ptr); break;
        case FLAG_T_DOUBLE: snprintf(def, sizeof(def), "%g", *(double*)f->ptr); break;
        case FLAG_T_STR: snprintf(def, sizeof(def), "%s", *(const char**)f->ptr ? *(const char**)f->ptr : "(none)"); break;
        default: break;
        }
        const char* kind = f->type == FLAG_T_INT ? "N" : f->type == FLAG_T_DOUBLE ? "X" : f->type == FLAG_T_BOOL ? "0|1" : "S";
        fprintf(out, "  %-22s %-3s %s (default %s)\n", f->name, kind, f->help, def);
    }
    fprintf(out, "  %-22s     print this message\n", "--help");
}

// returns 0 on success, 1 if --help was printed, 2 on a bad flag (after printing what was wrong)
static int flags_parse(const Flag* flags, int argc, char** argv, int first, const char* synopsis) {
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { flags_usage(flags, synopsis, stdout); return 1; }
        const Flag* f = flags;
        while (f->name && strcmp(f->name, argv[i])) f++;
        if (!f->name) { fprintf(stderr, "error: unknown flag '%s'\n\n", argv[i]); flags_usage(flags, synopsis, stderr); return 2; }
        if (i + 1 >= argc) { fprintf(stderr, "error: flag %s needs a value\n", f->name); return 2; }
        const char* v = argv[++i];
        char* end = NULL; errno = 0;
        switch (f->type) {
        case FLAG_T_INT: case FLAG_T_BOOL: {
            long x = strtol(v, &end, 10);
            if (errno || !end || *end || end == v || (f->type == FLAG_T_BOOL && x != 0 && x != 1)) {
                fprintf(stderr, "error: flag %s expects %s, found '%s'\n", f->name, f->type == FLAG_T_BOOL ? "0 or 1" : "an integer", v); return 2;
            }
            *(int*)f->ptr = (int)x; break;
        }
        case FLAG_T_DOUBLE: {
            double x = strtod(v, &end);
            if (errno || !end || *end || end == v) { fprintf(stderr, "error: flag %s expects a number, found '%s'\n", f->name, v); return 2; }
            *(double*)f->ptr = x; break;
        }
        case FLAG_T_STR: *(const char**)f->ptr = v; break;
        default: break;
        }
    }
    return 0;
}
