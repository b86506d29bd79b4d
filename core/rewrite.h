/* Builds an outgoing message by splicing edits into the received bytes. */
#ifndef SIPEDGE_REWRITE_H
#define SIPEDGE_REWRITE_H

#include <sys/types.h>

#include "core/sipmsg.h"

/* An edit replaces src[off, off+del) with ins. Edits are applied in order of
 * offset; two edits may share an offset (inserted in the order given). */
struct rw_edit {
    size_t off;
    size_t del;
    struct slice ins;
};

#define RW_MAX_EDITS 16

struct rewrite {
    const char *src;
    size_t src_len;
    struct rw_edit edits[RW_MAX_EDITS];
    unsigned nedits;
    size_t out_len;    /* length of the result */
    bool overflow;     /* more than RW_MAX_EDITS edits were asked for */
    char scratch[256]; /* small built values (Max-Forwards, received=) */
    size_t scratch_used;
};

/* Starts a rewrite of src[0..src_len) as it is (tests, raw buffers). A
 * received message is forwarded through rewrite_init_msg() instead. */
void rewrite_init(struct rewrite *rw, const char *src, size_t src_len);

/* Starts a rewrite of the received message m, parsed by sipmsg_parse() from
 * src: the one way a received message is written out again (forwarded
 * requests, relayed responses), so that the next hop frames exactly what we
 * framed. The output ends where m's body ends as Content-Length framed it
 * (datagram bytes past it are never forwarded, RFC 4475 dblreq), and it
 * always carries a Content-Length equal to that body: m without one (a
 * datagram, whose body is the rest of it) gets "Content-Length: N" before
 * its empty line (RFC 3261 §18.3: required on streams). */
void rewrite_init_msg(struct rewrite *rw, const struct sip_msg *m, const char *src);

/* Raw edit: replace src[off, off+del) with ins (borrowed until rewrite_build). */
void rewrite_splice(struct rewrite *rw, size_t off, size_t del, struct slice ins);

/* Inserts a whole header line (name, ": ", value, CRLF provided by the caller
 * in `line`) before the first header of the message (a new top Via). */
void rewrite_add_top(struct rewrite *rw, const struct sip_msg *m, struct slice line);

/* Inserts a header line before the first value of kind, or, when the message
 * has none, before the first header (Record-Route and Path). */
void rewrite_add_before(struct rewrite *rw, const struct sip_msg *m, enum sip_hdr_kind kind,
                        struct slice line);

/* Removes one header value: the whole line when it is alone on it, else just
 * the value and its separating comma. */
void rewrite_remove_value(struct rewrite *rw, const struct sip_msg *m, const struct sip_hdr *h);

/* Removes the first n values of kind (popping our own Route entries),
 * whole lines where every value goes, the leading values otherwise. */
void rewrite_remove_top(struct rewrite *rw, const struct sip_msg *m, enum sip_hdr_kind kind,
                        unsigned n);

/* Replaces Max-Forwards with its value minus one, or inserts
 * "Max-Forwards: <dflt>" when the message has none. */
void rewrite_dec_max_forwards(struct rewrite *rw, const struct sip_msg *m, int dflt);

/* Appends ";received=addr" and, when the Via asked for it, sets ";rport=port"
 * on the top Via value h (RFC 3581). addr is copied. */
void rewrite_via_received(struct rewrite *rw, const struct sip_hdr *h, struct slice addr,
                          int rport);

/* Writes the result into out[0..cap). Returns its length, or -1 if it does
 * not fit or an edit overflowed. Untouched bytes are copied as they are. */
ssize_t rewrite_build(struct rewrite *rw, char *out, size_t cap);

#endif
