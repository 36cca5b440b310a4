// lib/philox.h: Box–Muller normals from two 32-bit random words, the same bits on the CPU and on the GPU.
//
//   philox_log(u)                 ln u for a positive normal double
//   philox_sincos_turn(w, s, c)   sin and cos of 2π·(w + ½)/2³², w a 32-bit word
//   philox_box_muller(wr, wa, z)  z[0], z[1] = √(−2 ln u₁)·cos(2π u₂), √(−2 ln u₁)·sin(2π u₂), u = (w + ½)/2³²
//
// kernels/random.cuh turns Philox4x32-10 words into normals with these, in device code and in its host twin. libm's
// log/sin/cos and CUDA's differ in the last bit (under GPGPU-Sim: 36,457 of 262,144 normals in double; none after
// rounding to fp32 there, but a rare fp32 difference is only a matter of draws), and CUDA's double log and sin/cos
// use rcp.approx.f64, which a simulator computes differently from the hardware. Here every operation is IEEE-exact on both sides: +, ×, fma, sqrt, division
// (all correctly rounded in IEEE 754 and in PTX's .rn forms) and exact bit manipulation; no table, no call. So host
// and device produce the same doubles, provided no product is fused into an addition behind our back: every
// product that meets a sum is written as an explicit fma, and a plain product goes through philox_mul_, which is
// __dmul_rn on the device (nvcc never contracts it) and a plain multiply on the host (the host compilers run in ISO
// mode, -std=c11 / -std=c++17, where GCC does not contract).
// Accuracy against long-double libm over 2M word pairs: `./test_tmd test philox` prints the max error in ulps.
#pragma once
#include <stdint.h>
#include <string.h>
#include <math.h>   // fma, sqrt: correctly rounded on the host (glibc) and the device (fma.rn.f64, sqrt.rn.f64)

#ifdef __CUDACC__
#define PHILOX_HD __host__ __device__
#else
#define PHILOX_HD
#endif

static PHILOX_HD inline double philox_mul_(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
static PHILOX_HD inline uint64_t philox_bits_(double x) {
#ifdef __CUDA_ARCH__
    return (uint64_t)__double_as_longlong(x);
#else
    uint64_t b; memcpy(&b, &x, sizeof(b)); return b;
#endif
}
static PHILOX_HD inline double philox_double_(uint64_t b) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)b);
#else
    double x; memcpy(&x, &b, sizeof(x)); return x;
#endif
}

// ln u, u > 0 normal (the words give u in [2^-33, 1)). u = 2^e·m with m in [√½, √2) by exact bit manipulation, f = m − 1
// (exact), s = f/(2 + f), so ln m = 2 atanh s = 2s + s·R(s²) with R(z) = 2z/3 + 2z²/5 + … + 2z¹¹/23 (|s| ≤ 0.172, the
// next term is < 2^-56 of the sum). Since 2s = f − s·f and s·f = ½f²(1 − s): ln m = f − ½f² + s·(½f² + R), where the
// rounding of s only touches the small last term. ln u = e·ln 2 + ln m with ln 2 in two parts, each fused.
static PHILOX_HD inline double philox_log(double u) {
    uint64_t b = philox_bits_(u);
    int e = (int)(b >> 52) - 1023;
    uint64_t mant = b & 0x000FFFFFFFFFFFFFull;
    if (mant >= 0x6A09E667F3BCDull) { e++; mant |= 0x3FE0000000000000ull; }   // m ≥ √2 (0x3FF6A09E667F3BCD): halve it
    else mant |= 0x3FF0000000000000ull;
    double f = philox_double_(mant) - 1.0;                       // exact: m in [0.5, 2]
    double s = f / (2.0 + f), z = philox_mul_(s, s), hfsq = philox_mul_(0.5 * f, f);
    double p = 0.08695652173913043;                              // 2/23, then Horner down to 2/3
    p = fma(z, p, 0.09523809523809523); p = fma(z, p, 0.10526315789473684); p = fma(z, p, 0.11764705882352941);
    p = fma(z, p, 0.13333333333333333); p = fma(z, p, 0.15384615384615385); p = fma(z, p, 0.18181818181818182);
    p = fma(z, p, 0.2222222222222222);  p = fma(z, p, 0.2857142857142857);  p = fma(z, p, 0.4);
    p = fma(z, p, 0.6666666666666666);
    double ln_m = f + fma(s, fma(z, p, hfsq), -hfsq);            // f − ½f² + s·(½f² + z·p)
    const double ln2_hi = 0.6931471805599453, ln2_lo = 2.3190468138462996e-17;
    return fma((double)e, ln2_hi, fma((double)e, ln2_lo, ln_m));
}

// sin and cos of the angle 2π·u, u = (w + ½)/2³² in (0, 1). The reduction is exact in integers: q = round(4u) in
// 0..4 and u − q/4 = (w − q·2³⁰ + ½)/2³² =: g with |g| ≤ 1/8, so the angle is 2π·g + q·π/2 with no rounding at all.
// sin(2πg) = Σ (−1)^k (2π)^(2k+1)/(2k+1)!·g^(2k+1) to g¹⁷ and cos(2πg) = Σ (−1)^k (2π)^(2k)/(2k)!·g^(2k) to g¹⁸
// (|2πg| ≤ π/4: the first omitted terms are < 2^-62 of the value); the coefficients are those Taylor coefficients of
// 2π rounded to double (from a 60-digit π). The quadrant q then swaps and negates, exactly.
static PHILOX_HD inline void philox_sincos_turn(uint32_t w, double* sin_out, double* cos_out) {
    int64_t q = ((int64_t)w + (1ll << 29)) >> 30;
    double g = philox_mul_((double)((int64_t)w - (q << 30)) + 0.5, 1.0 / 4294967296.0);   // exact: |w − q·2³⁰| < 2³¹
    double z = philox_mul_(g, g);
    double ps = 0.10422916220813984;                             // sin: g·(2π + z·ps)
    ps = fma(z, ps, -0.7181223017785006); ps = fma(z, ps, 3.819952584848282);  ps = fma(z, ps, -15.09464257682299);
    ps = fma(z, ps, 42.058693944897655);  ps = fma(z, ps, -76.70585975306139); ps = fma(z, ps, 81.60524927607506);
    ps = fma(z, ps, -41.34170224039976);
    double sn = fma(g, 6.283185307179586, philox_mul_(philox_mul_(g, z), ps));
    double pc = -0.03638284114254567;                            // cos: 1 + z·pc
    pc = fma(z, pc, 0.28200596845579123); pc = fma(z, pc, -1.714390711088672); pc = fma(z, pc, 7.903536371318469);
    pc = fma(z, pc, -26.4262567833744);   pc = fma(z, pc, 60.24464137187666);  pc = fma(z, pc, -85.45681720669373);
    pc = fma(z, pc, 64.9393940226683);    pc = fma(z, pc, -19.739208802178716);
    double cs = fma(z, pc, 1.0);
    switch (q & 3) {   // + q·π/2
        case 0: *sin_out = sn;  *cos_out = cs;  break;
        case 1: *sin_out = cs;  *cos_out = -sn; break;
        case 2: *sin_out = -sn; *cos_out = -cs; break;
        default: *sin_out = -cs; *cos_out = sn; break;
    }
}

// two standard normals from two words (Box–Muller): radius from w_radius, angle from w_angle
static PHILOX_HD inline void philox_box_muller(uint32_t w_radius, uint32_t w_angle, double z[2]) {
    double u = philox_mul_((double)w_radius + 0.5, 1.0 / 4294967296.0);   // (0, 1), never 0: the log is finite
    double r = sqrt(-2.0 * philox_log(u)), sn, cs;
    philox_sincos_turn(w_angle, &sn, &cs);
    z[0] = philox_mul_(r, cs);
    z[1] = philox_mul_(r, sn);
}

// Philox4x32-10's four 32-bit words for the 128-bit counter ctr[4] and the 64-bit key (low half = key word 0): kernels/random.cuh philox4x32_10's rounds in plain C, so that the CPU reference and device code
// (the discriminator's dropout mask, cpu/disc_cpu.h) draw the same bits. Checked against Random123's known answer
// (two of its vectors) in lib/philox_tests.h.
static PHILOX_HD inline void philox_words(uint32_t w[4], const uint32_t ctr[4], uint64_t key) {
    uint32_t x = ctr[0], y = ctr[1], z = ctr[2], v = ctr[3], k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * x, p1 = (uint64_t)0xCD9E8D57u * z;
        uint32_t nx = (uint32_t)(p1 >> 32) ^ y ^ k0, ny = (uint32_t)p1, nz = (uint32_t)(p0 >> 32) ^ v ^ k1, nv = (uint32_t)p0;
        x = nx; y = ny; z = nz; v = nv;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    w[0] = x; w[1] = y; w[2] = z; w[3] = v;
}
