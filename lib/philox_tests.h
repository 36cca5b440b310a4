// lib/philox_tests.h: lib/philox.h (the GPU noise's log, sin/cos and Box–Muller) against long-double libm on the CPU.
// The GPU side runs the same code (kernels/random.cuh); dev/cuda/random.cu checks the device's normals bit for bit
// against this host twin. Here: the accuracy of the twin itself, in units in the last place of the double result.
#pragma once
#include <float.h>
#include "philox.h"
#include "rng.h"
#include "testing.h"

// |a − ref| in ulps of ref rounded to double (the ulp of the binade that holds the exact value)
static double philox_ulps_(double a, long double ref) {
    int e; frexpl(ref, &e);
    return (double)(fabsl((long double)a - ref) / ldexpl(1.0L, e - 53));
}

// the reference angle: 2π·(w + ½)/2³² in long double, reduced exactly as the code does (integers) so that the long
// double's own argument error stays relative (2^-64) also where sin or cos crosses zero
static void philox_ref_sincos_(uint32_t w, long double* s, long double* c) {
    const long double two_pi = 6.283185307179586476925286766559005768L;
    int64_t q = ((int64_t)w + (1ll << 29)) >> 30;
    long double g = ((long double)((int64_t)w - (q << 30)) + 0.5L) / 4294967296.0L, sg = sinl(two_pi * g), cg = cosl(two_pi * g);
    switch (q & 3) {
        case 0: *s = sg;  *c = cg;  break;
        case 1: *s = cg;  *c = -sg; break;
        case 2: *s = -sg; *c = -cg; break;
        default: *s = -cg; *c = sg; break;
    }
}

static void test_philox(void) {
    printf("\n[philox] the GPU noise's Box-Muller (lib/philox.h) against long-double libm\n");
    {   // philox_words against Random123's known answers for Philox4x32-10 (kat_vectors: the zero and the pi vector)
        const uint32_t c0[4] = {0, 0, 0, 0}, c1[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
        const uint32_t want0[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
        const uint32_t want1[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
        uint32_t w0[4], w1[4];
        philox_words(w0, c0, 0); philox_words(w1, c1, 0x299f31d0a4093822ull);
        printf("  philox_words: %08x %08x %08x %08x and %08x %08x %08x %08x (Random123 KAT)\n", w0[0], w0[1], w0[2], w0[3],
               w1[0], w1[1], w1[2], w1[3]);
        EXPECT(!memcmp(w0, want0, sizeof(w0)) && !memcmp(w1, want1, sizeof(w1)), "philox_words differs from Random123's known answers");
    }
    if (LDBL_MANT_DIG < 64) {   // the ulp errors below need a reference with more bits than a double
        printf("  skipped: long double has %d bits here (needs >= 64 for a reference finer than double)\n", LDBL_MANT_DIG);
        return;
    }
    // 2M random words (4M normals) plus the edges: u = 2^-33 and the largest u < 1, and each side of the quadrant boundaries
    const long n_rand = 1L << 21;
    uint32_t edges[] = {0u, 1u, 2u, 0xFFFFFFFFu, 0xFFFFFFFEu, 0x7FFFFFFFu, 0x80000000u, 0x1FFFFFFFu, 0x20000000u,
                        0x5FFFFFFFu, 0x60000000u, 0x9FFFFFFFu, 0xA0000000u, 0xDFFFFFFFu, 0xE0000000u, 0x3FFFFFFFu, 0x40000000u,
                        0xBFFFFFFFu, 0xC0000000u, 0xB504F333u /* u ≈ 1/√2: the mantissa switch of the log */, 0x5A827999u};
    const long n_edge = (long)(sizeof(edges) / sizeof(edges[0]));
    Rng rng = rng_make(20261201);
    double worst_log = 0, worst_sin = 0, worst_cos = 0, worst_z = 0, worst_abs_libm = 0;
    uint32_t at_log = 0, at_sin = 0, at_cos = 0, at_z = 0;
    int finite = 1;
    for (long i = 0; i < n_rand + n_edge; i++) {
        uint64_t r = rng_u64(&rng);
        uint32_t w1 = i < n_edge ? edges[i] : (uint32_t)r, w2 = i < n_edge ? edges[n_edge - 1 - i] : (uint32_t)(r >> 32);
        double u = ((double)w1 + 0.5) * (1.0 / 4294967296.0);
        double lg = philox_log(u);
        long double ref_lg = logl((long double)u);
        double e = philox_ulps_(lg, ref_lg);
        if (e > worst_log) { worst_log = e; at_log = w1; }
        double sn, cs; long double rs, rc;
        philox_sincos_turn(w2, &sn, &cs);
        philox_ref_sincos_(w2, &rs, &rc);
        e = philox_ulps_(sn, rs); if (e > worst_sin) { worst_sin = e; at_sin = w2; }
        e = philox_ulps_(cs, rc); if (e > worst_cos) { worst_cos = e; at_cos = w2; }
        // independent of the reduction above: double libm at the rounded angle, in absolute terms (catches a wrong
        // quadrant or sign; the rounded angle itself is off by up to ~4e-16)
        double ang = 6.283185307179586 * (((double)w2 + 0.5) * (1.0 / 4294967296.0));
        worst_abs_libm = fmax(worst_abs_libm, fmax(fabs(sn - sin(ang)), fabs(cs - cos(ang))));
        double z[2];
        philox_box_muller(w1, w2, z);
        long double rad = sqrtl(-2.0L * ref_lg);
        for (int k = 0; k < 2; k++) {
            if (!isfinite(z[k])) finite = 0;
            e = philox_ulps_(z[k], rad * (k ? rs : rc));
            if (e > worst_z) { worst_z = e; at_z = w1; }
        }
    }
    // error budget: log ≲ 1 ulp (f exact, one rounding in the sum, the rest second order); sin/cos ≲ 1.5 ulp (rounded
    // Taylor coefficients, Horner, one final rounding); a normal adds sqrt (½) and the product (½) to those
    const double tol_fn = 2, tol_z = 4;
    printf("  %ld words (%ld random, %ld edges)\n", n_rand + n_edge, n_rand, n_edge);
    printf("  philox_log          max error %.3f ulp (at w = 0x%08x)  (tol %.0f)\n", worst_log, at_log, tol_fn);
    printf("  philox_sincos_turn  max error sin %.3f ulp (w = 0x%08x), cos %.3f ulp (w = 0x%08x)  (tol %.0f)\n", worst_sin, at_sin,
           worst_cos, at_cos, tol_fn);
    printf("  philox_box_muller   max error %.3f ulp (w_radius = 0x%08x)  (tol %.0f)\n", worst_z, at_z, tol_z);
    printf("  sin/cos vs double libm at the rounded angle: max abs %.3e  (tol 1e-15)\n", worst_abs_libm);
    EXPECT(worst_log <= tol_fn, "philox_log: %.3f ulp > %.0f", worst_log, tol_fn);
    EXPECT(worst_sin <= tol_fn && worst_cos <= tol_fn, "philox_sincos_turn: sin %.3f, cos %.3f ulp > %.0f", worst_sin, worst_cos, tol_fn);
    EXPECT(finite && worst_z <= tol_z, "philox_box_muller: %.3f ulp > %.0f (finite %d)", worst_z, tol_z, finite);
    EXPECT(worst_abs_libm <= 1e-15, "philox_sincos_turn vs libm: %.3e", worst_abs_libm);
}
