// lib/random_params.h: random parameters of a Wan config for the tests: a sensible scale with no trivial 0 or 1, so
// a dropped or swapped term changes the output. Norm weights ~ 1 + N(0, 0.1²); modulation tables N(0, 0.3²); other
// biases N(0, 0.1²); matrices N(0, 1/fan_in).
#pragma once
#include "../wan.h" // WanConfig, wan_layout
#include "rng.h"

static void random_params(const WanConfig* c, real* buf, uint64_t seed) {
    Rng r = rng_make(seed);
    WanTensor* tl = (WanTensor*)malloc(sizeof(WanTensor) * WAN_MAX_TENSORS);
    if (!tl) {
        fprintf(stderr, "error: out of memory for the tensor list\n");
        exit(1);
    }
    int nt = wan_layout(c, tl, NULL, NULL, NULL);
    for (int i = 0; i < nt; i++) {
        const WanTensor* t = &tl[i];
        real* p = buf + t->offset;
        double mean = 0, std;
        if (strstr(t->name, "modulation"))
            std = 0.3;
        else if (strstr(t->name, "norm") && !strstr(t->name, "bias")) {
            mean = 1;
            std = 0.1;
        } else if (t->ndim == 1)
            std = 0.1;
        else
            std = 1.0 / sqrt((double)(t->numel / (size_t)t->shape[0]));
        for (size_t k = 0; k < t->numel; k++) p[k] = (real)(mean + std * rng_normal(&r));
    }
    free(tl);
}
