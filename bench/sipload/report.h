/* sipload's result: the sums over the threads, a human summary and one JSON line. */
#ifndef SIPLOAD_REPORT_H
#define SIPLOAD_REPORT_H

#include "bench/sipload/sipload.h"

struct report_times {
    double setup_s; /* start to the measured window (phones registered, connections up) */
    uint64_t t0_ns; /* the window's start */
    bool interrupted;
};

/* Sums a's counters and histograms into sum. Pure. */
void report_sum(struct sl_stats *sum, const struct sl_stats *a);
/* Prints the summary (unless --quiet) and the JSON line on stdout (and to
 * --json). Returns the exit status: 0 when nothing failed, else 1. Main
 * thread, after the threads were joined. */
int report_print(const struct sl_run *run, const struct report_times *t);

#endif
