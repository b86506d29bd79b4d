/* What the fuzz targets share: CHECK, an invariant whose failure libFuzzer records as a crash. */
#ifndef SIPEDGE_FUZZ_FUZZ_H
#define SIPEDGE_FUZZ_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

/* abort() so libFuzzer records the input as a crash */
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
