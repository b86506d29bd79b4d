/* libFuzzer target: stream framer fed growing prefixes at input-derived split points. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/framer.h"
#include "core/sipmsg.h"
#include "fuzz/fuzz.h"

/* Calls the framer on an exact-size heap copy so ASan catches reads past len. */
static enum framer_result feed(struct framer *f, const char *p, size_t len,
                               const struct sipmsg_limits *lim, size_t *ml)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, p, len);
    enum framer_result r = framer_feed(f, copy, len, lim, ml);
    free(copy);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    /* byte 0 picks the limit and seeds the split points; the rest is the stream */
    static const size_t limits[] = {65535, 1024, 256, 64};
    const struct sipmsg_limits lim = {limits[data[0] & 3], 64};
    uint32_t rng = 0x9e3779b9u ^ data[0] ^ ((uint32_t)data[size - 1] << 8) ^ (uint32_t)size;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;

    struct framer f;
    framer_init(&f);
    size_t off = 0, end = 0;
    while (off < len) {
        rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
        size_t step = (rng & 7) == 0 ? 1 + (rng >> 8) % 2048 : 1 + (rng >> 8) % 16;
        end = end + step < len ? end + step : len;
        if (end <= off) end = off + 1 <= len ? off + 1 : len;
        size_t ml = 0;
        enum framer_result r = feed(&f, buf + off, end - off, &lim, &ml);
        if (r == FRAMER_INCOMPLETE) {
            if (end == len) break;
            continue;
        }
        /* fed in one go, the rest of the stream gives the same answer */
        struct framer g;
        framer_init(&g);
        size_t ml2 = 0;
        enum framer_result r2 = feed(&g, buf + off, len - off, &lim, &ml2);
        CHECK(r2 == r);
        if (r == FRAMER_INVALID) {
            CHECK(f.err != SIP_ERR_NONE && f.err == g.err);
            /* the parser rejects it too (or, for a short stream, waits) */
            struct sip_msg m;
            struct sip_hdr h[64];
            if (buf[off] != '\r' && buf[off] != '\n')
                CHECK(sipmsg_parse(buf + off, end - off, &m, h, &lim, 0) < 0);
            break;
        }
        CHECK(ml2 == ml);
        CHECK(ml > 0 && ml <= end - off);
        if (r == FRAMER_KEEPALIVE || r == FRAMER_PONG) {
            CHECK(buf[off] == '\r' || buf[off] == '\n');
        } else {
            CHECK(r == FRAMER_MESSAGE);
            CHECK(ml <= lim.max_msg_size);
            /* the parser sees the same message, or rejects its syntax */
            char *copy = malloc(ml);
            memcpy(copy, buf + off, ml);
            struct sip_msg m;
            struct sip_hdr h[64];
            int pr = sipmsg_parse(copy, ml, &m, h, &lim, 0);
            CHECK(pr == -1 || pr == (int)ml);
            free(copy);
        }
        off += ml;
    }
    return 0;
}
