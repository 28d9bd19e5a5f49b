/*
 * fairness.h - Jain's fairness index, the one definition the C tools share
 * (thunder-loadgen over per-worker accepts; thunder-stat can use it over
 * per-process accepts).
 *
 *   J = (Σx)² / (n·Σx²): 1 = perfectly even, 1/n = one takes all,
 *   0 when there is nothing to share (no values, or all zero).
 */
#pragma once

#include <stddef.h>

static inline double jain_index(const double *values, size_t n)
{
    double sum = 0, sum_squares = 0;
    for (size_t i = 0; i < n; i++) {
        sum += values[i];
        sum_squares += values[i] * values[i];
    }
    if (n == 0 || sum_squares == 0)
        return 0;
    return sum * sum / ((double)n * sum_squares);
}
