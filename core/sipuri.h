/* SIP/SIPS/tel URI, name-addr and Via parsers over slices. */
#ifndef SIPEDGE_SIPURI_H
#define SIPEDGE_SIPURI_H

#include "core/slice.h"

enum sip_scheme { SIP_SCHEME_OTHER = 0, SIP_SCHEME_SIP, SIP_SCHEME_SIPS, SIP_SCHEME_TEL };

enum sip_transport {
    SIP_TRANSPORT_NONE = 0, /* not given */
    SIP_TRANSPORT_UDP,
    SIP_TRANSPORT_TCP,
    SIP_TRANSPORT_TLS,
    SIP_TRANSPORT_SCTP,
    SIP_TRANSPORT_WS,
    SIP_TRANSPORT_WSS,
    SIP_TRANSPORT_OTHER,
};

enum sip_host_type { SIP_HOST_NAME = 0, SIP_HOST_IPV4, SIP_HOST_IPV6 };

struct sip_uri {
    uint8_t scheme;    /* enum sip_scheme */
    uint8_t host_type; /* enum sip_host_type */
    uint8_t transport; /* enum sip_transport from ;transport= */
    bool lr;
    bool ob;
    struct slice scheme_name;
    struct slice user; /* escapes kept as on the wire; may hold ';' */
    struct slice password;
    struct slice host;     /* IPv6 without the brackets */
    struct slice host_raw; /* as written, brackets included */
    int port;              /* 0 when absent */
    struct slice params;   /* from the first ';' after the host, without it */
    struct slice headers;  /* after '?', without it */
    struct slice maddr;
    struct slice transport_name;
    struct slice user_param; /* user=phone ... */
    struct slice opaque;     /* non-SIP schemes: everything after "scheme:" */
};

/* Parses an absolute URI. sip/sips/tel are parsed fully; any other scheme
 * that is syntactically a scheme is accepted with only `opaque` set.
 * Returns 0, or -1 on a malformed URI. Pure. */
int sipuri_parse(struct slice s, struct sip_uri *u);

/* name-addr / addr-spec with header parameters (To, From, Contact, Route...). */
struct sip_addr {
    struct slice display; /* quotes included, may be empty */
    struct slice uri_text;
    struct sip_uri uri;
    struct slice params; /* header params after the URI, without leading ';' */
    struct slice tag;
    struct slice expires;
    struct slice q;
    bool star; /* Contact: * */
    bool bracketed;
};
int sipuri_parse_addr(struct slice s, struct sip_addr *a);

/* Via: SIP/2.0/TRANSPORT sent-by ;params */
struct sip_via {
    struct slice transport_name;
    uint8_t transport; /* enum sip_transport */
    struct slice host; /* IPv6 without brackets */
    struct slice host_raw;
    int port; /* 0 when absent */
    struct slice branch;
    struct slice received;
    struct slice maddr;
    struct slice ttl;
    bool has_rport;
    struct slice rport;  /* value, empty when given bare */
    struct slice params; /* everything after sent-by, without leading ';' */
};
int sipuri_parse_via(struct slice s, struct sip_via *v);

/* Looks up a ;name[=value] parameter in a parameter list (without leading ';').
 * Returns true when present; *val gets the value (empty if bare). */
bool sipuri_param(struct slice params, struct slice name, struct slice *val);

enum sip_transport sipuri_transport_id(struct slice name);
/* The transport's name: upper case as in Via ("UDP", "TCP", "TLS", ...) or
 * lower case as in a transport= parameter and in logs ("udp", ...). NONE and
 * OTHER read as UDP. Pure. */
const char *sipuri_transport_str(enum sip_transport t);
const char *sipuri_transport_name(enum sip_transport t);

/* True when host is a literal IPv4 (dotted quad) or IPv6 (hex and colons,
 * optional embedded IPv4). Pure syntax checks. */
bool sipuri_is_ipv4(struct slice host);
bool sipuri_is_ipv6(struct slice host);

struct netaddr;
/* Where URI u sends a request: transport (;transport=, sips: is TLS, default
 * UDP) and address, for an IP literal host or maddr ("localhost" is
 * 127.0.0.1; default port 5060, 5061 for TLS). 0, -EHOSTUNREACH for a name
 * (resolve it), -EPROTONOSUPPORT for another transport. Pure. */
int sipuri_target(const struct sip_uri *u, uint8_t *proto, struct netaddr *dst);

#endif
