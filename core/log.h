/* Logging: one text or JSON line per event on stderr, with time and worker id. */
#ifndef SIPEDGE_LOG_H
#define SIPEDGE_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

/* Sets the level and format. Call once from main before any thread starts;
 * read-only afterwards. Until then: info, text. */
void log_init(const struct config *cfg);

bool log_enabled(enum log_level level);

/* Names the calling thread in its log lines (at most 15 bytes, e.g. "w0");
 * the runtime calls it as each worker starts. Calling thread only. */
void log_set_thread_tag(const char *tag);

/* Writes one line (truncated at 1 KiB) with a single write(2), so lines from
 * different threads never interleave. Any thread. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_E(...) log_msg(LOG_ERR, __VA_ARGS__)
#define LOG_W(...) log_msg(LOG_WARN, __VA_ARGS__)
#define LOG_I(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOG_D(...)                                                                                 \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__);                               \
    } while (0)

/* Rate limiter state of one call site on one thread. */
struct log_rl {
    uint64_t window_ms; /* start of the current one-second window */
    unsigned logged;    /* lines written in this window */
    unsigned suppressed;
};

#define LOG_RL_PER_SEC 10

/* True when the call site may log now. When a new window opens after lines
 * were suppressed, first writes a line saying how many were dropped at site. */
bool log__rl_allow(struct log_rl *rl, enum log_level level, const char *site);

/* For events a remote peer can cause: at most LOG_RL_PER_SEC lines per second
 * per call site and thread (the state is thread-local, so workers never share it). */
#define LOG_RL_STR2(x) #x
#define LOG_RL_STR(x)  LOG_RL_STR2(x)
#define LOG_RL(level, ...)                                                                         \
    do {                                                                                           \
        static _Thread_local struct log_rl log_rl_site_;                                           \
        if (log_enabled(level) &&                                                                  \
            log__rl_allow(&log_rl_site_, level, __FILE__ ":" LOG_RL_STR(__LINE__)))                \
            log_msg(level, __VA_ARGS__);                                                           \
    } while (0)

#endif
