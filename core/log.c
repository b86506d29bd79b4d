/* Logging: formats one line per event and writes it to stderr in one call. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

#define LOG_LINE_MAX 1024

/* Written once by log_init() before threads start, read-only afterwards. */
static struct {
    enum log_level level;
    bool json;
} log_cfg = {LOG_INFO, false};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_init(const struct config *cfg)
{
    log_cfg.level = cfg->log_level;
    log_cfg.json = cfg->log_json;
}

bool log_enabled(enum log_level level)
{
    return level <= log_cfg.level;
}

/* Appends s to out[*n..cap) as JSON string content; stops when full. */
static void json_escape(char *out, size_t *n, size_t cap, const char *s)
{
    for (; *s && *n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)c;
        } else if (c < 0x20) {
            *n += (size_t)snprintf(out + *n, cap - *n, "\\u%04x", c);
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

/* The calling thread's tag in every line ("main" until set). */
static _Thread_local char thread_tag[16];

void log_set_thread_tag(const char *tag)
{
    snprintf(thread_tag, sizeof(thread_tag), "%s", tag);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX * 2], ts[32], who[16];
    struct timespec now;
    struct tm tm;
    va_list ap;
    size_t n;
    int r;

    if (!log_enabled(level)) return;
    va_start(ap, fmt);
    r = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r < 0) return;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);
    snprintf(who, sizeof(who), "%s", thread_tag[0] ? thread_tag : "main");

    if (log_cfg.json) {
        r = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"thread\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, who,
                     level_names[level]);
        n = (size_t)r;
        json_escape(line, &n, sizeof(line) - 3, msg);
        memcpy(line + n, "\"}\n", 3);
        n += 3;
    } else {
        /* one event, one line: a peer's bytes in msg cannot forge another */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
        r = snprintf(line, sizeof(line), "%s %s %s %s\n", ts, who, level_names[level], msg);
        n = (size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* One write per line; a short write to a full pipe loses the rest, which
     * is better than blocking a worker. */
    if (write(STDERR_FILENO, line, n) < 0) return;
}

bool log__rl_allow(struct log_rl *rl, enum log_level level, const char *site)
{
    uint64_t now_ms = clock_mono_ms();
    unsigned dropped;

    if (now_ms - rl->window_ms >= 1000 || rl->window_ms == 0) {
        dropped = rl->suppressed;
        rl->window_ms = now_ms;
        rl->logged = 0;
        rl->suppressed = 0;
        if (dropped) log_msg(level, "%u similar messages suppressed (%s)", dropped, site);
    }
    if (rl->logged < LOG_RL_PER_SEC) {
        rl->logged++;
        return true;
    }
    rl->suppressed++;
    return false;
}
