/* Private to the management port: what its HTTP server (core/mgmt.c) and
 * its pages (core/mgmt_pages.c) share. Management thread only. */
#ifndef SIPEDGE_MGMT_INT_H
#define SIPEDGE_MGMT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/slice.h"

/* What the pages read besides the workers' counters: written by
 * mgmt_start() before the thread starts (cfg, start_s) and by the thread
 * itself (refused). */
struct mgmt_view {
    const struct config *cfg;
    uint64_t start_s;
    uint64_t refused; /* LIMIT_STATS_CLIENTS: no worker counts it */
};
extern struct mgmt_view mgmt__view;

/* What a page renderer gets: the query string, and the HTTP status it
 * answers with (200 unless it says otherwise). */
struct mgmt_page {
    struct slice query;
    int status;
};

/* A page: its path, content type and renderer. */
struct mgmt_endpoint {
    const char *path;
    const char *type;
    void (*fn)(struct buf *, struct mgmt_page *);
};

/* The page at path (query string removed), or NULL. */
const struct mgmt_endpoint *mgmt__endpoint(struct slice path);
/* Renders ep into a heap buffer (the caller frees it) with *len set;
 * NULL when out of memory. The calling thread is an RCU reader only for
 * the while. */
char *mgmt__render(const struct mgmt_endpoint *ep, struct mgmt_page *pg, size_t *len);

#endif
