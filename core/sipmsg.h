/* Zero-copy SIP message parser: start line, indexed headers, body framing. */
#ifndef SIPEDGE_SIPMSG_H
#define SIPEDGE_SIPMSG_H

#include "core/slice.h"

/* Header kinds. Every RFC 3261 header plus the few a proxy acts on. */
enum sip_hdr_kind {
    SIP_HDR_OTHER = 0,
    SIP_HDR_ACCEPT,
    SIP_HDR_ACCEPT_ENCODING,
    SIP_HDR_ACCEPT_LANGUAGE,
    SIP_HDR_ALERT_INFO,
    SIP_HDR_ALLOW,
    SIP_HDR_AUTHENTICATION_INFO,
    SIP_HDR_AUTHORIZATION,
    SIP_HDR_CALL_ID,
    SIP_HDR_CALL_INFO,
    SIP_HDR_CONTACT,
    SIP_HDR_CONTENT_DISPOSITION,
    SIP_HDR_CONTENT_ENCODING,
    SIP_HDR_CONTENT_LANGUAGE,
    SIP_HDR_CONTENT_LENGTH,
    SIP_HDR_CONTENT_TYPE,
    SIP_HDR_CSEQ,
    SIP_HDR_DATE,
    SIP_HDR_ERROR_INFO,
    SIP_HDR_EXPIRES,
    SIP_HDR_FROM,
    SIP_HDR_IN_REPLY_TO,
    SIP_HDR_MAX_FORWARDS,
    SIP_HDR_MIME_VERSION,
    SIP_HDR_MIN_EXPIRES,
    SIP_HDR_ORGANIZATION,
    SIP_HDR_PRIORITY,
    SIP_HDR_PROXY_AUTHENTICATE,
    SIP_HDR_PROXY_AUTHORIZATION,
    SIP_HDR_PROXY_REQUIRE,
    SIP_HDR_RECORD_ROUTE,
    SIP_HDR_REPLY_TO,
    SIP_HDR_REQUIRE,
    SIP_HDR_RETRY_AFTER,
    SIP_HDR_ROUTE,
    SIP_HDR_SERVER,
    SIP_HDR_SUBJECT,
    SIP_HDR_SUPPORTED,
    SIP_HDR_TIMESTAMP,
    SIP_HDR_TO,
    SIP_HDR_UNSUPPORTED,
    SIP_HDR_USER_AGENT,
    SIP_HDR_VIA,
    SIP_HDR_WARNING,
    SIP_HDR_WWW_AUTHENTICATE,
    /* extensions a proxy meets every day */
    SIP_HDR_PATH,            /* RFC 3327 */
    SIP_HDR_EVENT,           /* RFC 6665, compact o */
    SIP_HDR_ALLOW_EVENTS,    /* compact u */
    SIP_HDR_REFER_TO,        /* compact r */
    SIP_HDR_REFERRED_BY,     /* compact b */
    SIP_HDR_SESSION_EXPIRES, /* compact x */
    SIP_HDR_FLOW_TIMER,      /* RFC 5626 */
    SIP_HDR__COUNT
};

enum sip_method {
    SIP_METHOD_OTHER = 0,
    SIP_METHOD_INVITE,
    SIP_METHOD_ACK,
    SIP_METHOD_BYE,
    SIP_METHOD_CANCEL,
    SIP_METHOD_OPTIONS,
    SIP_METHOD_REGISTER,
    SIP_METHOD_PRACK,
    SIP_METHOD_SUBSCRIBE,
    SIP_METHOD_NOTIFY,
    SIP_METHOD_PUBLISH,
    SIP_METHOD_INFO,
    SIP_METHOD_REFER,
    SIP_METHOD_MESSAGE,
    SIP_METHOD_UPDATE,
};

/* Why a message was rejected. sipmsg_err_status() maps each to a response code. */
enum sip_err {
    SIP_ERR_NONE = 0,
    SIP_ERR_START_LINE,    /* malformed request or status line */
    SIP_ERR_VERSION,       /* not SIP/2.0: 505 */
    SIP_ERR_STATUS_CODE,   /* status outside 100..699 */
    SIP_ERR_HEADER_SYNTAX, /* a header line without a name or colon, bad folding */
    SIP_ERR_TOO_MANY_HEADERS,
    SIP_ERR_TOO_LARGE,      /* header block or whole message above the limit */
    SIP_ERR_NO_HEADER_END,  /* datagram without the empty line ending the headers */
    SIP_ERR_CONTENT_LENGTH, /* not a number, negative, or overflowing */
    SIP_ERR_CL_DUPLICATE,   /* Content-Length given twice */
    SIP_ERR_CL_MISSING,     /* stream message without Content-Length */
    SIP_ERR_BODY_SHORT,     /* datagram body shorter than Content-Length */
    SIP_ERR_CSEQ,           /* CSeq missing a method or number above 2^32-1 */
    SIP_ERR_CSEQ_METHOD,    /* CSeq method differs from the request method */
    SIP_ERR_MAX_FORWARDS,   /* not a number in 0..255 */
    SIP_ERR_MISSING_HEADER, /* To, From, Call-ID, CSeq or Via absent */
    SIP_ERR_DUP_HEADER,     /* a single-valued header given twice */
    SIP_ERR_REQUEST_URI,    /* Request-URI malformed */
    SIP_ERR_VIA,            /* a Via value malformed */
    SIP_ERR_ADDRESS,        /* To, From, Contact, Route, Record-Route, Path malformed */
    SIP_ERR_CONTROL_BYTES,  /* a control byte (not HTAB) or DEL in the start line or a header */
    SIP_ERR__COUNT
};

/* One header value. Multi-valued headers (Via, Route, Record-Route, Path,
 * Contact, and the comma lists) give one entry per value, all sharing the
 * same line; SIP_HF_SAME_LINE marks the 2nd and later values of a line. */
struct sip_hdr {
    struct slice name;  /* as on the wire, e.g. "v" or "Via" */
    struct slice value; /* this value, LWS-trimmed; may hold folded CRLF SP */
    struct slice line;  /* the whole header line(s) including the final CRLF */
    uint8_t kind;       /* enum sip_hdr_kind */
    uint8_t flags;
};
#define SIP_HF_SAME_LINE    0x01 /* not the first value of its line */
#define SIP_HF_LAST_IN_LINE 0x02

#define SIPMSG_NO_HDR 0xffff

struct sip_msg {
    /* start line */
    bool is_request;
    uint8_t method;           /* enum sip_method (requests) */
    struct slice method_name; /* requests */
    struct slice ruri;        /* requests */
    int status;               /* responses: 100..699 */
    struct slice reason;      /* responses, may be empty */
    struct slice start_line;  /* without CRLF */

    /* headers: a caller-owned array, filled in wire order. The index below
     * is the parser's: read it through sipmsg_hdr(), sipmsg_hdr_nth() and
     * sipmsg_hdr_count(), which know that a kind may be absent. */
    struct sip_hdr *hdrs;
    uint16_t nhdrs;
    uint16_t first[SIP_HDR__COUNT]; /* index of the first value, SIPMSG_NO_HDR if none */
    uint16_t count[SIP_HDR__COUNT]; /* number of values of each kind */

    /* values every layer needs, decoded once */
    uint32_t cseq;
    uint8_t cseq_method; /* enum sip_method */
    struct slice cseq_method_name;
    int max_forwards;       /* -1 when absent */
    int64_t content_length; /* -1 when absent */
    struct slice call_id;

    size_t headers_len; /* bytes up to and including the empty line */
    struct slice body;
    size_t msg_len; /* bytes this message occupies in the buffer */

    enum sip_err err;
    size_t err_pos; /* offset of the offending byte */
};

/* parse flags */
#define SIPMSG_DATAGRAM 0x01 /* UDP: the buffer is the whole message */

struct sipmsg_limits {
    size_t max_msg_size; /* header block + body */
    uint16_t max_headers;
};

/* Parses one message from buf[0..len).
 * Returns the number of bytes the message occupies (> 0), -2 when more bytes
 * are needed (streams only), or -1 when invalid (m->err, m->err_pos say why).
 * The caller owns hdrs[0..max_hdrs); m points into buf, which must outlive it.
 * For datagrams, bytes past Content-Length are discarded (returned length
 * still covers the whole datagram), a missing Content-Length means the body
 * is the rest, and a body shorter than Content-Length is SIP_ERR_BODY_SHORT.
 * Structural checks only; sipmsg_validate() does the semantic ones. Pure:
 * any thread, no allocation. */
int sipmsg_parse(const char *buf, size_t len, struct sip_msg *m, struct sip_hdr *hdrs,
                 const struct sipmsg_limits *lim, unsigned flags);

/* RFC 3261 §16.3 / §8.2 checks a proxy makes before routing a parsed message
 * (core/sipmsg_validate.c), requests and responses alike: no control bytes
 * (sipmsg_check_controls), mandatory headers, single-valued headers given
 * once, top Via, To and From well formed; for requests also the CSeq method
 * matching the request method, the Request-URI, Contact and the Routes a
 * proxy reads. Returns SIP_ERR_NONE or the reason (also stored in m->err).
 * Pure; any thread. */
enum sip_err sipmsg_validate(struct sip_msg *m);

/* The start line and header block of a parsed message (sipmsg_parse() > 0)
 * hold no C0 control byte but HTAB, and no DEL, with three exceptions: CR
 * directly followed by LF, LF directly preceded by CR or followed by SP/HTAB
 * (a fold), and a byte RFC 3261 §25.1 allows in a quoted-pair (a backslash
 * inside a quoted string, then any byte but CR and LF). A bare CR or LF is
 * where a peer that splits lines differently would see an injected header;
 * NUL ends C strings. SIP_ERR_CONTROL_BYTES (with m->err_pos at the byte) or
 * SIP_ERR_NONE. The body is not looked at. Pure; any thread. */
enum sip_err sipmsg_check_controls(struct sip_msg *m);

/* The same rule for one header value (a slice of a parsed message, folds
 * included): true when it holds no control byte but HTAB, folds (CRLF or LF
 * then SP/HTAB) and quoted-pairs. For what sipedge copies out of a message
 * it did not validate. Pure; any thread. */
bool sipmsg_value_clean(struct slice v);

/* Response code for a request rejected with e: 505 for SIP_ERR_VERSION, 513
 * for SIP_ERR_TOO_LARGE, else 400. Pure; any thread. */
int sipmsg_err_status(enum sip_err e);
/* Reason phrase for e (static storage; "unknown error" outside the enum).
 * Pure; any thread. */
const char *sipmsg_err_str(enum sip_err e);

/* The method a request line names, case-sensitively (RFC 3261 §7.1);
 * SIP_METHOD_OTHER when it is none of enum sip_method. Pure; any thread. */
enum sip_method sipmsg_method_id(struct slice name);
/* The kind of a header name, full or compact form, case-insensitively;
 * SIP_HDR_OTHER when unknown or not a token. Pure; any thread. */
enum sip_hdr_kind sipmsg_hdr_kind(struct slice name);

/* Header access: the documented way to read a parsed message's headers,
 * checked for absence, so that no caller indexes m->hdrs[m->first[kind]]
 * for a kind the message lacks. m is the output of sipmsg_parse() (after
 * -1 or -2: the headers indexed before it stopped). A kind outside
 * enum sip_hdr_kind counts as absent. The result points into m->hdrs and
 * lives as long as that array and the parsed buffer. Pure; any thread. */

/* The first value of a kind (the top Via, the top Route...), or NULL when
 * the message has none. */
static inline const struct sip_hdr *sipmsg_hdr(const struct sip_msg *m, enum sip_hdr_kind kind)
{
    if ((unsigned)kind >= SIP_HDR__COUNT || m->first[kind] == SIPMSG_NO_HDR) return NULL;
    return &m->hdrs[m->first[kind]];
}

/* How many values of a kind the message has (0 when absent). */
static inline unsigned sipmsg_hdr_count(const struct sip_msg *m, enum sip_hdr_kind kind)
{
    return (unsigned)kind < SIP_HDR__COUNT ? m->count[kind] : 0;
}

/* The i-th value of a kind, from 0 in wire order, or NULL when there are
 * not that many. Linear from the first one. */
const struct sip_hdr *sipmsg_hdr_nth(const struct sip_msg *m, enum sip_hdr_kind kind, unsigned i);

/* The value of h's kind after h (h from sipmsg_hdr() or this function), or
 * NULL after the last one: for (h = sipmsg_hdr(m, k); h; h = sipmsg_hdr_next(m, h)). */
static inline const struct sip_hdr *sipmsg_hdr_next(const struct sip_msg *m,
                                                    const struct sip_hdr *h)
{
    const struct sip_hdr *end = m->hdrs + m->nhdrs;
    uint8_t kind = h->kind;
    while (++h < end)
        if (h->kind == kind) return h;
    return NULL;
}

/* Offset of a slice that points into buf. */
static inline size_t sipmsg_off(const char *buf, struct slice s)
{
    return (size_t)(s.ptr - buf);
}

#endif
