/* log: leveled log lines to stderr, one line per event, prefixed with level and time.
 * Owns only the log threshold, set once at start-up. */
#ifndef ISERGW_LOG_H
#define ISERGW_LOG_H

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_parse_level(const char *name, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)  log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
        do {                                                                                       \
                if (log_get_level() >= LOG_LVL_DEBUG)                                              \
                        log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                       \
        } while (0)

#endif
