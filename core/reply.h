/* Replies sipedge builds itself: Vias copied, To-tag, Content-Length: 0 (pure). */
#ifndef SIPEDGE_REPLY_H
#define SIPEDGE_REPLY_H

#include <sys/types.h>

#include "core/netaddr.h"
#include "core/sipmsg.h"
#include "core/worker.h" /* struct rx_info */

/* The reason phrase sipedge writes for code ("Unknown" for a code it never
 * sends). Static string; any thread. */
const char *reply_reason(int code);

/* Builds the response `code` to request m into out[0..cap):
 *  - every Via of m in order; the top one gets ;received= (the IP of src)
 *    when its sent-by differs or it asked for rport, and ;rport=<port of
 *    src> when it asked for rport without a value (RFC 3581);
 *  - From, Call-ID, CSeq as received; To as received, plus ";tag=se" and 8
 *    hex digits when code > 100 and To has no tag (the same tag for a
 *    retransmission of the request, in this process);
 *  - "Warning: 399 sipedge \"warning\"" when warning is not NULL; `extra`
 *    (whole header lines with CRLF) when not NULL; a Server header;
 *    "Content-Length: 0" and the empty line.
 * Borrows everything; returns the length, or -1 when it does not fit, or
 * when a value it would copy holds a control byte (sipmsg_value_clean):
 * such a request gets no answer rather than one that carries them back.
 * Pure; any thread. */
ssize_t reply_build(const struct sip_msg *m, const struct netaddr *src, int code,
                    const char *warning, const char *extra, char *out, size_t cap);

/* Where the responses to request m, received as rx says, go: the source
 * address, except over UDP when the top Via has no rport, then the Via's
 * port (default 5060) at the source IP (RFC 3261 §18.2.2, RFC 3581).
 * Pure; any thread. */
void reply_dst(const struct sip_msg *m, const struct rx_info *rx, struct netaddr *dst);

#endif
