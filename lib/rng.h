// lib/rng.h: the project's one random number generator on the CPU, splitmix64 (Steele, Lea and Flood, "Fast
// splittable pseudorandom number generators", OOPSLA 2014; constants as in Vigna's public-domain splitmix64.c).
// Counter-based: a stream is a seed plus a counter, so it can be saved in a checkpoint as two integers.
#pragma once
#include <stdint.h>
#include <math.h>

#define SPLITMIX64_GAMMA 0x9E3779B97F4A7C15ull // the golden-ratio increment between states

// the output function: a bijective mix of one 64-bit state
static inline uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// the generator: advances *state by the increment and returns the mixed state
static inline uint64_t splitmix64(uint64_t* state) { return splitmix64_mix(*state += SPLITMIX64_GAMMA); }

typedef struct {
    uint64_t seed, counter;
} Rng;

static inline Rng rng_make(uint64_t seed) {
    Rng r;
    r.seed = seed;
    r.counter = 0;
    return r;
}

// value number `counter` of the stream `seed`: splitmix64 started at seed, by random access
static inline uint64_t rng_u64(Rng* r) { return splitmix64_mix(r->seed + SPLITMIX64_GAMMA * (++r->counter)); }
// uniform in (0, 1): 53 random bits, never exactly 0
static inline double rng_uniform(Rng* r) { return ((double)(rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
// standard normal by Box-Muller (one value per call; simple beats fast here)
static inline double rng_normal(Rng* r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
