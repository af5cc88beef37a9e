#include "src/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Written once before any thread starts; read-only afterwards. */
static enum log_level log_threshold = LOG_LVL_INFO;

void log_set_level(enum log_level level)
{
        log_threshold = level;
}

enum log_level log_get_level(void)
{
        return log_threshold;
}

int log_parse_level(const char *name, enum log_level *out)
{
        static const char *const names[] = {"error", "warn", "info", "debug"};
        for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                if (strcasecmp(name, names[i]) == 0) {
                        *out = (enum log_level)i;
                        return 0;
                }
        }
        return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
        if (level > log_threshold)
                return;
        char line[1024];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s ", tm.tm_hour, tm.tm_min,
                         tm.tm_sec, ts.tv_nsec / 1000000, tags[level]);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        size_t len = strlen(line);
        line[len++] = '\n';
        /* One write per line so lines from several reactors never interleave. */
        fwrite(line, 1, len, stderr);
}
