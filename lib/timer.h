// lib/timer.h: the one wall clock of the CPU programs: monotonic seconds, for timings printed next to results.
#pragma once
#include <time.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
