// lib/testing.h: the tiny test harness every test in test_tmd.c uses.
// A check counts as passed or failed; failures print file:line and a message.
// test_tmd.c ends with the line "N passed, N failed" and exits non-zero on any failure.
#pragma once
#include <stdio.h>
#include <math.h>
#include <stdlib.h>

static int tests_passed = 0, tests_failed = 0;

#define EXPECT(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            tests_passed++;                                                                                            \
        } else {                                                                                                       \
            tests_failed++;                                                                                            \
            printf("  FAIL %s:%d: ", __FILE__, __LINE__);                                                              \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

// compares two arrays; prints one line "name: max abs err, max rel err (tol)" and counts one check.
// rel err is |a-b| / max(|b|, floor) with floor = 1e-3 * max|b| so that near-zero entries do not dominate.
static int expect_close_d(const char* name, const double* a, const double* b, long n, double tol_rel) {
    double maxabs = 0, maxb = 0, maxrel = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > maxabs) maxabs = d;
        if (fabs(b[i]) > maxb) maxb = fabs(b[i]);
    }
    double floor_ = 1e-3 * maxb + 1e-300;
    int finite = 1;
    for (long i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) finite = 0;
        double r = fabs(a[i] - b[i]) / fmax(fabs(b[i]), floor_);
        if (r > maxrel) maxrel = r;
    }
    int ok = finite && maxrel <= tol_rel;
    printf("  %-44s max abs %.3e  max rel %.3e  (tol %.0e)  %s\n", name, maxabs, maxrel, tol_rel, ok ? "ok" : "FAIL");
    EXPECT(ok, "%s: max rel %.3e > tol %.0e", name, maxrel, tol_rel);
    return ok;
}

// compares against a reference at the reference's own scale: err = max|a − b| / max|b|. This is the
// "relative error" of an output as a whole (used for peer checks of model outputs, whose entries near zero
// carry only the absolute rounding of the reference).
static int expect_close_scaled(const char* name, const double* a, const double* b, long n, double tol) {
    double maxabs = 0, maxb = 0;
    int finite = 1;
    for (long i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) finite = 0;
        maxabs = fmax(maxabs, fabs(a[i] - b[i]));
        maxb = fmax(maxb, fabs(b[i]));
    }
    double rel = maxabs / (maxb > 0 ? maxb : 1);
    int ok = finite && rel <= tol;
    printf("  %-44s max abs %.3e  max|ref| %.3e  rel %.3e  (tol %.0e)  %s\n", name, maxabs, maxb, rel, tol,
           ok ? "ok" : "FAIL");
    EXPECT(ok, "%s: relative error %.3e > tol %.0e", name, rel, tol);
    return ok;
}

// ---------------------------------------------------------------------------------------------------------
// finite-difference gradient checks (double precision)

// Error budget of a central difference in double: truncation h^2 f'''/6 ~ 1e-10 and roundoff ~1e-16 |loss|/h ~ 1e-10
// (|loss| ~ 10), so absolute errors near 1e-9 are expected; on gradient entries of size 1e-4..1 that is up to
// ~1e-5 relative. A wrong sign or a missing term gives O(1) (test_gradcheck_catches_bugs shows ~1e2).
#define GC_H   1e-5
#define GC_TOL 1e-5

typedef double (*LossFn)(void* ctx);
static double gc_h = GC_H; // a test whose loss is large next to its gradients may raise the step (and say why)

// checks analytic[i] = ∂loss/∂x[i] at up to max_n evenly spread entries of x (all when n <= max_n)
static void gradcheck(const char* name, double* x, long n, const double* analytic, LossFn f, void* ctx, int max_n) {
    if (n <= 0) return;
    long m = n < max_n ? n : max_n;
    double* num = (double*)malloc(sizeof(double) * m);
    double* ana = (double*)malloc(sizeof(double) * m);
    for (long k = 0; k < m; k++) {
        long i = (n <= max_n) ? k : (long)((double)k * (n - 1) / (m - 1));
        double x0 = x[i];
        x[i] = x0 + gc_h;
        double fp = f(ctx);
        x[i] = x0 - gc_h;
        double fm = f(ctx);
        x[i] = x0;
        num[k] = (fp - fm) / (2 * gc_h);
        ana[k] = analytic[i];
    }
    expect_close_d(name, ana, num, m, GC_TOL);
    free(num);
    free(ana);
}
