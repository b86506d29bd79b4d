/* Incremental framing of SIP messages on a byte stream (TCP/TLS). */
#ifndef SIPEDGE_FRAMER_H
#define SIPEDGE_FRAMER_H

#include "core/slice.h"
#include "core/sipmsg.h"

enum framer_result {
    FRAMER_INCOMPLETE = 0, /* need more bytes */
    FRAMER_MESSAGE,        /* a message of *msg_len bytes starts at the buffer start */
    FRAMER_KEEPALIVE,      /* RFC 5626: CRLFCRLF ping (answer CRLF) of *msg_len bytes */
    FRAMER_PONG,           /* a lone CRLF (keep-alive pong) of *msg_len bytes: skip it */
    FRAMER_INVALID,        /* unrecoverable: close the connection */
};

/* Per-connection state so a byte-at-a-time stream is not rescanned. */
struct framer {
    size_t scanned;     /* bytes already searched for the header end */
    size_t headers_len; /* 0 until the header end is found */
    size_t msg_len;     /* headers_len + Content-Length once known */
    enum sip_err err;
};

void framer_init(struct framer *f);

/* Looks at the unconsumed stream bytes buf[0..len) (the same start each call
 * until a result other than INCOMPLETE is returned; then the caller drops
 * *msg_len bytes and the framer resets itself). Only Content-Length decides
 * where a message ends: a missing, duplicate, negative or non-numeric one is
 * FRAMER_INVALID (f->err says which), as is a header block above
 * lim->max_msg_size or a declared body that would exceed it. Pure. */
enum framer_result framer_feed(struct framer *f, const char *buf, size_t len,
                               const struct sipmsg_limits *lim, size_t *msg_len);

#endif
