/* Tests for core/txn.c: the table's limits (count, bytes), its accounting, lookups and nonces. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/txn.h"

TestSuite(txn);

Test(txn, count_limit_refuses_new_transactions)
{
    struct txn_table t;
    cr_assert_eq(txn_table_init(&t, 16, 1 << 30), 0);
    struct txn *x[16];
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(txn_table_admit(&t, 100), TXN_ADMIT_OK, "%d", i);
        char k[8];
        k[0] = (char)('a' + i);
        x[i] = txn_new(&t, k, 1);
        cr_assert_not_null(x[i]);
    }
    cr_assert_eq(t.live, 16);
    cr_assert_eq(txn_table_admit(&t, 100), TXN_ADMIT_COUNT);
    cr_assert_null(txn_new(&t, "z", 1), "a 17th transaction");
    /* one finishes: room for one more */
    txn_free(&t, x[3]);
    cr_assert_eq(txn_table_admit(&t, 100), TXN_ADMIT_OK);
    x[3] = txn_new(&t, "y", 1);
    cr_assert_not_null(x[3]);
    cr_assert_eq(txn_find_key(&t, "y", 1), x[3]);
    cr_assert_null(txn_find_key(&t, "d", 1), "the freed key is gone");
    for (int i = 0; i < 16; i++)
        txn_free(&t, x[i]);
    cr_assert_eq(t.live, 0);
    txn_table_cleanup(&t);
}

Test(txn, byte_budget_counts_everything_a_transaction_keeps)
{
    struct txn_table t;
    cr_assert_eq(txn_table_init(&t, 1024, 64 * 1024), 0);
    cr_assert_eq(t.bytes, 0);
    struct txn *x = txn_new(&t, "key-1", 5);
    cr_assert_not_null(x);
    uint64_t base = t.bytes;
    cr_assert_eq(base, sizeof(struct txn) + 5);
    static char req[20000], resp[9000];
    cr_assert_eq(txn_set_request(&t, x, req, sizeof req), 0);
    cr_assert_eq(t.bytes, base + sizeof req);
    txn_keep_response(&t, x, resp, 100, 180);
    cr_assert_eq(t.bytes, base + sizeof req + 100);
    txn_keep_response(&t, x, resp, sizeof resp, 200); /* a larger final one replaces it */
    cr_assert_eq(t.bytes, base + sizeof req + sizeof resp);
    cr_assert_eq(txn_set_tls_name(&t, x, "sip.example.com"), 0);
    cr_assert_eq(t.bytes, base + sizeof req + sizeof resp + 16);
    cr_assert_eq(txn_set_tls_name(&t, x, ""), 0);
    cr_assert_null(x->tls_name);
    cr_assert_eq(t.bytes, base + sizeof req + sizeof resp);
    cr_assert_eq(txn_set_tls_name(&t, x, "a"), 0);
    /* 64 KiB budget: another 20 KB request still fits, 40 KB does not */
    cr_assert_eq(txn_table_admit(&t, 20000), TXN_ADMIT_OK);
    cr_assert_eq(txn_table_admit(&t, 40000), TXN_ADMIT_BYTES);
    struct txn *y = txn_new(&t, "key-2", 5);
    cr_assert_eq(txn_set_request(&t, y, req, sizeof req), 0);
    cr_assert_eq(txn_table_admit(&t, 20000), TXN_ADMIT_BYTES);
    /* freeing gives every byte back */
    txn_free(&t, x);
    txn_free(&t, y);
    cr_assert_eq(t.bytes, 0);
    cr_assert_eq(txn_table_admit(&t, 40000), TXN_ADMIT_OK);
    txn_table_cleanup(&t);
}

Test(txn, stale_slot_and_generation_find_nothing)
{
    struct txn_table t;
    cr_assert_eq(txn_table_init(&t, 64, 1 << 20), 0);
    struct txn *x = txn_new(&t, "k", 1);
    uint32_t slot = x->slot, gen = x->gen;
    cr_assert_eq(txn_find_slot(&t, slot, gen), x);
    cr_assert_null(txn_find_slot(&t, slot, gen + 1));
    cr_assert_null(txn_find_slot(&t, slot + 1, gen));
    cr_assert_null(txn_find_slot(&t, 0xffffff, gen));
    txn_free(&t, x);
    cr_assert_null(txn_find_slot(&t, slot, gen));
    txn_table_cleanup(&t);
}

/* The buckets grow with the live transactions, and every key stays findable
 * across the rehashes. */
Test(txn, buckets_grow_and_lookups_survive_rehash)
{
    struct txn_table t;
    cr_assert_eq(txn_table_init(&t, 1u << 16, 1ull << 32), 0);
    uint32_t first = t.nbuckets;
    enum { N = 10000 };
    static struct txn *x[N];
    char k[16];
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key-%d", i);
        x[i] = txn_new(&t, k, (size_t)n);
        cr_assert_not_null(x[i]);
    }
    cr_assert_gt(t.nbuckets, first);
    cr_assert_geq(t.nbuckets * 2, (uint32_t)N / 2);
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key-%d", i);
        cr_assert_eq(txn_find_key(&t, k, (size_t)n), x[i], "%s", k);
        cr_assert_eq(txn_find_slot(&t, x[i]->slot, x[i]->gen), x[i]);
    }
    for (int i = 0; i < N; i += 2)
        txn_free(&t, x[i]);
    for (int i = 1; i < N; i += 2) {
        int n = snprintf(k, sizeof k, "key-%d", i);
        cr_assert_eq(txn_find_key(&t, k, (size_t)n), x[i]);
    }
    txn_table_cleanup(&t);
}
