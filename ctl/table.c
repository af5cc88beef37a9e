/* Aligned text tables for isergw-ctl. */
#include "ctl/ctl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void table_init(struct table *t, size_t ncols, const char *const *headers)
{
        memset(t, 0, sizeof(*t));
        t->ncols = ncols;
        t->headers = headers;
}

void table_cell(struct table *t, const char *fmt, ...)
{
        if (t->ncells == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 32;
                char **cells = realloc(t->cells, cap * sizeof(*cells));
                if (!cells)
                        return;
                t->cells = cells;
                t->cap = cap;
        }
        char *cell = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&cell, fmt, ap) < 0)
                cell = NULL;
        va_end(ap);
        t->cells[t->ncells++] = cell;
}

static const char *cell_at(const struct table *t, size_t i)
{
        return i < t->ncells && t->cells[i] ? t->cells[i] : "";
}

static size_t nrows(const struct table *t)
{
        return (t->ncells + t->ncols - 1) / t->ncols;
}

/* A number, optionally followed by "%" or by a space and anything ("10.0 GiB"). */
static bool numeric_cell(const char *s)
{
        if (!isdigit((unsigned char)s[0]))
                return false;
        char *end = NULL;
        strtod(s, &end);
        return *end == '\0' || strcmp(end, "%") == 0 || *end == ' ';
}

static bool numeric_column(const struct table *t, size_t col)
{
        bool any = false;
        for (size_t r = 0; r < nrows(t); r++) {
                const char *s = cell_at(t, r * t->ncols + col);
                if (strcmp(s, "-") == 0)
                        continue;
                if (!numeric_cell(s))
                        return false;
                any = true;
        }
        return any;
}

static size_t column_width(const struct table *t, size_t col)
{
        size_t w = t->headers ? strlen(t->headers[col]) : 0;
        for (size_t r = 0; r < nrows(t); r++) {
                size_t len = strlen(cell_at(t, r * t->ncols + col));
                if (len > w)
                        w = len;
        }
        return w;
}

static void print_row(FILE *out, const char *const *cells, const size_t *width, const bool *right,
                      size_t ncols)
{
        while (ncols > 1 && cells[ncols - 1][0] == '\0')
                ncols--; /* no trailing blanks */
        for (size_t c = 0; c < ncols; c++) {
                bool last = c + 1 == ncols;
                const char *sep = last ? "\n" : "  ";
                if (right[c])
                        fprintf(out, "%*s%s", (int)width[c], cells[c], sep);
                else if (last)
                        fprintf(out, "%s%s", cells[c], sep);
                else
                        fprintf(out, "%-*s%s", (int)width[c], cells[c], sep);
        }
}

void table_print(const struct table *t, FILE *out)
{
        size_t *width = calloc(t->ncols, sizeof(*width));
        bool *right = calloc(t->ncols, sizeof(*right));
        const char **row = calloc(t->ncols, sizeof(*row));
        if (!width || !right || !row)
                goto done;
        for (size_t c = 0; c < t->ncols; c++) {
                width[c] = column_width(t, c);
                right[c] = numeric_column(t, c);
        }
        if (t->headers)
                print_row(out, t->headers, width, right, t->ncols);
        for (size_t r = 0; r < nrows(t); r++) {
                for (size_t c = 0; c < t->ncols; c++)
                        row[c] = cell_at(t, r * t->ncols + c);
                print_row(out, row, width, right, t->ncols);
        }
done:
        free(width);
        free(right);
        free(row);
}

void table_free(struct table *t)
{
        for (size_t i = 0; i < t->ncells; i++)
                free(t->cells[i]);
        free(t->cells);
        memset(t, 0, sizeof(*t));
}
