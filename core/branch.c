/* Via branches of ours, server transaction keys and the loop hash. */
#include "core/branch.h"

#include "core/buf.h"
#include "core/hash.h"
#include "core/sipuri.h"

size_t branch_encode(const struct branch_id *id, char *out, size_t cap)
{
    struct buf b = buf_make(out, cap);
    buf_put(&b, BRANCH_PREFIX, BRANCH_PREFIX_LEN);
    buf_put_hex(&b, id->worker & 0xff, 2);
    buf_put_hex(&b, id->slot & 0xffffff, 6);
    buf_put_hex(&b, id->gen, 8);
    buf_put_hex(&b, id->loop, 8);
    buf_put_hex(&b, id->rand, 16);
    return buf_ok(&b) ? b.len : 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static bool hex_field(const char *p, unsigned n, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) {
        int d = hexval(p[i]);
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

bool branch_decode(struct slice br, struct branch_id *id)
{
    if (br.len != BRANCH_LEN || memcmp(br.ptr, BRANCH_PREFIX, BRANCH_PREFIX_LEN) != 0) return false;
    const char *p = br.ptr + BRANCH_PREFIX_LEN;
    uint64_t wk, slot, gen, loop;
    if (!hex_field(p, 2, &wk) || !hex_field(p + 2, 6, &slot) || !hex_field(p + 8, 8, &gen) ||
        !hex_field(p + 16, 8, &loop) || !hex_field(p + 24, 16, &id->rand))
        return false;
    id->worker = (uint32_t)wk;
    id->slot = (uint32_t)slot;
    id->gen = (uint32_t)gen;
    id->loop = (uint32_t)loop;
    return true;
}

size_t branch_stateless(struct slice in_branch, char *out, size_t cap)
{
    struct buf b = buf_make(out, cap);
    buf_puts(&b, "z9hG4bKSa");
    buf_put_hex(&b, hash_slice(in_branch), 16);
    return buf_ok(&b) ? b.len : 0;
}

size_t branch_server_key(const struct sip_msg *m, char *buf, size_t cap)
{
    const struct sip_hdr *top = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via v;
    if (!top || sipuri_parse_via(top->value, &v) < 0) return 0;
    struct slice method = m->method_name;
    if (m->method == SIP_METHOD_ACK || m->method == SIP_METHOD_CANCEL) method = SLICE_LIT("INVITE");

    struct buf b = buf_make(buf, cap);
    if (v.branch.len > 7 && memcmp(v.branch.ptr, BRANCH_MAGIC, 7) == 0) {
        buf_put_slice(&b, v.branch);
        buf_put(&b, "|", 1);
        buf_put_slice(&b, v.host_raw);
        buf_put(&b, ":", 1);
        buf_put_u(&b, (unsigned)v.port);
        buf_put(&b, "|", 1);
    } else {
        struct sip_addr from;
        const struct sip_hdr *f = sipmsg_hdr(m, SIP_HDR_FROM);
        buf_put_slice(&b, m->call_id);
        buf_put(&b, "|", 1);
        buf_put_u(&b, m->cseq);
        buf_put(&b, "|", 1);
        if (f && sipuri_parse_addr(f->value, &from) == 0) buf_put_slice(&b, from.tag);
        buf_put(&b, "|", 1);
        buf_put_slice(&b, m->ruri);
        buf_put(&b, "|", 1);
        buf_put_slice(&b, top->value);
        buf_put(&b, "|", 1);
    }
    buf_put_slice(&b, method);
    return buf_ok(&b) ? b.len : 0;
}

uint32_t branch_loop_hash(const struct sip_msg *m)
{
    struct hash_state h;
    hash_begin(&h);
    hash_update_slice(&h, m->ruri);
    hash_update_slice(&h, m->call_id);
    hash_update(&h, &m->cseq, sizeof m->cseq);
    const struct sip_hdr *f = sipmsg_hdr(m, SIP_HDR_FROM), *t = sipmsg_hdr(m, SIP_HDR_TO);
    const struct sip_hdr *r = sipmsg_hdr(m, SIP_HDR_ROUTE);
    if (f) hash_update_slice(&h, f->value);
    if (t) hash_update_slice(&h, t->value);
    if (r) hash_update_slice(&h, r->value);
    uint64_t v = hash_final(&h);
    return (uint32_t)(v ^ (v >> 32));
}
