/* isergw-ctl: the command-line client of the status socket (docs/status.md §6). */
#ifndef ISERGW_CTL_H
#define ISERGW_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CTL_ERR_LEN 512

/* ---- client.c: one connection to the status socket ---- */

struct ctl_conn {
        int fd;
        char *buf; /* bytes received after the last reply */
        size_t len;
        size_t cap;
};

/* Connects; on failure fills err with "cannot connect to PATH: ... (hint)". */
int ctl_connect(struct ctl_conn *c, const char *path, char *err, size_t errlen);
void ctl_close(struct ctl_conn *c);
/* Sends req (its reference is taken) and waits for the reply, at most timeout_ms (< 0: no
 * limit). Returns the reply's "result" (a new reference) or NULL with err: the daemon's error
 * text, or what went wrong with the connection. */
json_t *ctl_call(struct ctl_conn *c, json_t *req, int timeout_ms, char *err, size_t errlen);
/* {"cmd":"query","object":object}. */
json_t *ctl_query(struct ctl_conn *c, const char *object, char *err, size_t errlen);

/* ---- table.c: aligned text tables ---- */

struct table {
        size_t ncols;
        const char *const *headers; /* NULL: no header line */
        char **cells;               /* row-major */
        size_t ncells;
        size_t cap;
};

void table_init(struct table *t, size_t ncols, const char *const *headers);
/* Appends the next cell (rows fill left to right). */
void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Columns whose cells are all numbers (or "-") are right-aligned. */
void table_print(const struct table *t, FILE *out);
void table_free(struct table *t);

/* ---- render.c: human-readable output of results ---- */

void render_status(FILE *out, const json_t *snapshot);
void render_targets(FILE *out, const json_t *result);
void render_sessions(FILE *out, const json_t *result);
void render_luns(FILE *out, const json_t *result);
void render_pool(FILE *out, const json_t *result);
void render_cache(FILE *out, const json_t *result);
void render_mirror(FILE *out, const json_t *result);
void render_stats(FILE *out, const json_t *result);

#endif
