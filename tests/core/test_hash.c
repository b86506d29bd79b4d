/* Keyed hash: streaming equals one-shot at every split, the key matters. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/hash.h"

TestSuite(hash);

Test(hash, streaming_matches_one_shot_at_every_split)
{
    const char *s = "INVITE sip:bob@biloxi.example.com SIP/2.0 z9hG4bK776asdhds";
    size_t n = strlen(s);
    uint64_t whole = hash_bytes(s, n);

    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b += 3) {
            struct hash_state h;
            hash_begin(&h);
            hash_update(&h, s, a);
            hash_update(&h, s + a, b - a);
            hash_update(&h, s + b, n - b);
            cr_assert_eq(hash_final(&h), whole, "split %zu/%zu", a, b);
        }
    }
}

Test(hash, key_changes_every_value)
{
    uint8_t k1[16] = {1}, k2[16] = {2};
    const char *s = "call-id-1234@host";
    uint64_t a, b;

    hash_set_key(k1);
    a = hash_bytes(s, strlen(s));
    hash_set_key(k2);
    b = hash_bytes(s, strlen(s));
    cr_assert_neq(a, b);
    hash_set_key(k1);
    cr_assert_eq(hash_bytes(s, strlen(s)), a);
}

Test(hash, length_prefixed_pieces_do_not_collide)
{
    struct hash_state h1, h2;

    hash_begin(&h1);
    hash_update_slice(&h1, (struct slice){"ab", 2});
    hash_update_slice(&h1, (struct slice){"c", 1});
    hash_begin(&h2);
    hash_update_slice(&h2, (struct slice){"a", 1});
    hash_update_slice(&h2, (struct slice){"bc", 2});
    cr_assert_neq(hash_final(&h1), hash_final(&h2));
}

Test(hash, lengths_around_word_boundaries_differ)
{
    char z[32] = {0};
    uint64_t seen[32];

    for (size_t n = 0; n < 32; n++) {
        seen[n] = hash_bytes(z, n);
        for (size_t m = 0; m < n; m++)
            cr_assert_neq(seen[m], seen[n], "lengths %zu and %zu", m, n);
    }
}
