/* srv_log.c - text or JSON Lines log on stderr (see srv_log.h). Not a general logging
 * library: no levels to filter, no files, no rotation (the container runtime collects stderr). */
#include "srv_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static log_format g_format = LOG_TEXT;
static int g_access = 1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void log_init(log_format f, int access_log)
{
    g_format = f;
    g_access = access_log;
}

/* A growing line in a fixed buffer; output past the end is cut (a log line is never worth
 * an allocation failure). */
typedef struct { char buf[4096]; size_t n; } line;

static void put(line *l, const char *s, size_t len)
{
    if (l->n + len >= sizeof l->buf - 2) len = sizeof l->buf - 2 - l->n;
    memcpy(l->buf + l->n, s, len);
    l->n += len;
}

static void puts_(line *l, const char *s) { put(l, s, strlen(s)); }

static void printf_(line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof l->buf - 2 - l->n;
    int k = vsnprintf(l->buf + l->n, room, fmt, ap);
    va_end(ap);
    if (k > 0) l->n += (size_t)k < room ? (size_t)k : room - 1;
}

/* A JSON string literal, escaping quotes, backslashes and control bytes. */
static void jstr(line *l, const char *s)
{
    put(l, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; put(l, e, 2); }
        else if (c < 0x20) printf_(l, "\\u%04x", c);
        else put(l, (const char *)&c, 1);
    }
    put(l, "\"", 1);
}

/* Text fields go unquoted unless they hold spaces, quotes or control bytes. */
static void tstr(line *l, const char *s)
{
    int plain = *s != '\0';
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == '"' || *p == '\\') plain = 0;
    if (plain) puts_(l, s);
    else jstr(l, s);
}

static void timestamp(line *l)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    printf_(l, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

static void emit(line *l)
{
    l->buf[l->n++] = '\n';
    pthread_mutex_lock(&g_lock);
    size_t off = 0;
    while (off < l->n) {
        ssize_t w = write(STDERR_FILENO, l->buf + off, l->n - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    pthread_mutex_unlock(&g_lock);
}

static const char *level_name(log_level lv)
{
    return lv == LOG_ERROR ? "error" : lv == LOG_WARN ? "warn" : "info";
}

void log_msg(log_level lv, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    line l = {.n = 0};
    if (g_format == LOG_JSON) {
        puts_(&l, "{\"ts\":\"");
        timestamp(&l);
        printf_(&l, "\",\"level\":\"%s\",\"msg\":", level_name(lv));
        jstr(&l, msg);
        puts_(&l, "}");
    } else {
        timestamp(&l);
        printf_(&l, " %s ", level_name(lv));
        puts_(&l, msg);
    }
    emit(&l);
}

void log_access(const log_access_rec *r)
{
    if (!g_access) return;
    line l = {.n = 0};
    int js = g_format == LOG_JSON;
    /* field helpers: JSON `,"k":v` or text ` k=v` */
#define FSTR(k, v) do { if (v) { if (js) { puts_(&l, ",\"" k "\":"); jstr(&l, v); } \
                                 else { puts_(&l, " " k "="); tstr(&l, v); } } } while (0)
#define FNUM(k, fmt, v) do { printf_(&l, js ? ",\"" k "\":" fmt : " " k "=" fmt, v); } while (0)
    if (js) {
        puts_(&l, "{\"ts\":\"");
        timestamp(&l);
        puts_(&l, "\",\"level\":\"info\",\"msg\":\"access\"");
    } else {
        timestamp(&l);
        puts_(&l, " access");
    }
    FSTR("id", r->id);
    FSTR("remote", r->remote);
    FSTR("method", r->method);
    FSTR("path", r->path);
    FNUM("status", "%d", r->status);
    FNUM("bytes_in", "%llu", (unsigned long long)r->bytes_in);
    FNUM("bytes_out", "%llu", (unsigned long long)r->bytes_out);
    FNUM("ms", "%.3f", r->ms);
    FSTR("model", r->model);
    if (r->version >= 0) FNUM("version", "%d", r->version);
    if (r->images >= 0) FNUM("images", "%d", r->images);
    if (r->decode_ms >= 0) FNUM("decode_ms", "%.3f", r->decode_ms);
    if (r->queue_ms >= 0) FNUM("queue_ms", "%.3f", r->queue_ms);
    if (r->infer_ms >= 0) FNUM("infer_ms", "%.3f", r->infer_ms);
    FSTR("error", r->error);
#undef FSTR
#undef FNUM
    if (js) puts_(&l, "}");
    emit(&l);
}
