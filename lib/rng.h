// lib/rng.h: a small deterministic generator for the CPU programs (splitmix64: counter-based, so a stream is
// a seed plus a counter and can be saved in a checkpoint as two integers).
#pragma once
#include <stdint.h>
#include <math.h>

typedef struct { uint64_t seed, counter; } Rng;

static Rng rng_make(uint64_t seed) { Rng r; r.seed = seed; r.counter = 0; return r; }

static uint64_t rng_u64(Rng* r) {
    uint64_t z = r->seed + 0x9E3779B97F4A7C15ull * (++r->counter);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// uniform in (0, 1): 53 random bits, never exactly 0
static double rng_uniform(Rng* r) { return ((double)(rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
// standard normal by Box-Muller (one value per call; simple beats fast here)
static double rng_normal(Rng* r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
