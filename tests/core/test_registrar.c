/* Tests for core/registrar.c's pure decisions: granted expiry, certificate
 * identities against the AOR. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/registrar.h"

TestSuite(registrar);

#define S(lit) SLICE_LIT(lit)

Test(registrar, grant_within_min_and_max_expires)
{
    struct config cfg = {.min_expires_s = 60, .max_expires_s = 3600};
    static const struct {
        uint64_t asked;
        enum registrar_expiry want;
        uint64_t granted;
    } cases[] = {
        {0, REGISTRAR_EXP_OK, 0}, /* removal is always allowed */
        {1, REGISTRAR_EXP_TOO_BRIEF, 1},
        {59, REGISTRAR_EXP_TOO_BRIEF, 59},
        {60, REGISTRAR_EXP_OK, 60},
        {3600, REGISTRAR_EXP_OK, 3600},
        {3601, REGISTRAR_EXP_LOWERED, 3600},
        {UINT32_MAX, REGISTRAR_EXP_LOWERED, 3600},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t g = 12345;
        cr_assert_eq(registrar_grant(cases[i].asked, &cfg, &g), cases[i].want, "case %zu", i);
        if (cases[i].want != REGISTRAR_EXP_TOO_BRIEF)
            cr_assert_eq(g, cases[i].granted, "case %zu: %llu", i, (unsigned long long)g);
    }
}

Test(registrar, certificate_identity_names_the_aor)
{
    static const struct {
        const char *id;
        bool match;
    } cases[] = {
        {"sip:alice@cc.example.com", true},
        {"sips:alice@CC.Example.com", true}, /* host case-insensitive */
        {"SIP:alice@cc.example.com;transport=tls", true},
        {"alice@cc.example.com", true}, /* a CN */
        {"alice@CC.EXAMPLE.COM", true},
        {"sip:Alice@cc.example.com", false}, /* the user part is case-sensitive */
        {"sip:bob@cc.example.com", false},
        {"sip:alice@other.example.com", false},
        {"sip:cc.example.com", false},
        {"sip:alice@cc.example.com.evil.example", false},
        {"alice", false},
        {"https:alice@cc.example.com", false},
        {"alic@cc.example.com", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(registrar_names_aor(slice_make(cases[i].id, strlen(cases[i].id)), S("alice"),
                                         S("cc.example.com")),
                     cases[i].match, "case %zu: %s", i, cases[i].id);
    /* an AOR without a user part is never named */
    cr_assert_not(registrar_names_aor(S("sip:cc.example.com"), S(""), S("cc.example.com")));
}
