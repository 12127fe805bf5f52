/* args.c - long-flag parsing with typed, range-checked values, and the
 * usage text generated from a command's flag table. */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cli_usage_error(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dae %s: ", name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see dae %s --help)\n", name);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_error(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dae %s: ", name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_FAILURE;
}

void cli_usage(const cli_command *cmd, FILE *out) {
    fprintf(out, "usage: dae %s %s\n\n%s\n", cmd->name, cmd->synopsis, cmd->description);
    if (cmd->n_flags == 0) return;
    fprintf(out, "\nflags:\n");
    for (int i = 0; i < cmd->n_flags; i++) {
        const cli_flag *f = &cmd->flags[i];
        char left[64];
        if (f->meta != NULL) snprintf(left, sizeof left, "--%s %s", f->name, f->meta);
        else snprintf(left, sizeof left, "--%s", f->name);
        fprintf(out, "  %-26s %s\n", left, f->help);
    }
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
}

/* Stores text as the value of flag f; returns 0 or prints the mistake and
 * returns CLI_EXIT_USAGE. */
static int set_value(const cli_command *cmd, cli_flag *f, const char *text) {
    char *end;
    errno = 0;
    switch (f->kind) {
    case CLI_STRING:
        *(const char **)f->value = text;
        return 0;
    case CLI_BOOL:
        *(int *)f->value = 1;
        return 0;
    case CLI_INT: {
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno == ERANGE || v < f->min || v > f->max)
            return cli_usage_error(cmd->name, "--%s must be an integer from %.0f to %.0f, not \"%s\"", f->name,
                                   f->min, f->max, text);
        *(int *)f->value = (int)v;
        return 0;
    }
    case CLI_U64: {
        unsigned long long v = strtoull(text, &end, 10);
        if (end == text || *end != '\0' || errno == ERANGE || text[0] < '0' || text[0] > '9')
            return cli_usage_error(cmd->name, "--%s must be a non-negative integer below 2^64, not \"%s\"",
                                   f->name, text);
        *(uint64_t *)f->value = (uint64_t)v;
        return 0;
    }
    case CLI_DOUBLE:
    case CLI_FLOAT: {
        double v = strtod(text, &end);
        if (end == text || *end != '\0' || !isfinite(v) || v < f->min || v > f->max)
            return cli_usage_error(cmd->name, "--%s must be a number from %g to %g, not \"%s\"", f->name, f->min,
                                   f->max, text);
        if (f->kind == CLI_FLOAT) *(float *)f->value = (float)v;
        else *(double *)f->value = v;
        return 0;
    }
    }
    return 0;
}

int cli_parse(cli_command *cmd, int argc, char **argv, const char **pos, int *n_pos) {
    *n_pos = 0;
    int flags_done = 0;
    /* --help anywhere before "--" wins over any mistake; after it, it is a file name. */
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_usage(cmd, stdout);
            return 0;
        }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (flags_done || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*n_pos >= cmd->max_pos)
                return cmd->max_pos == 0
                           ? cli_usage_error(cmd->name, "takes no arguments, got \"%s\"", a)
                           : cli_usage_error(cmd->name, "too many arguments: \"%s\"", a);
            pos[(*n_pos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = 1;
            continue;
        }
        if (a[1] != '-') return cli_usage_error(cmd->name, "unknown flag %s", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        cli_flag *f = NULL;
        for (int k = 0; k < cmd->n_flags && f == NULL; k++)
            if (strlen(cmd->flags[k].name) == name_len && strncmp(cmd->flags[k].name, name, name_len) == 0)
                f = &cmd->flags[k];
        if (f == NULL) return cli_usage_error(cmd->name, "unknown flag --%.*s", (int)name_len, name);
        if (f->seen) return cli_usage_error(cmd->name, "--%s given twice", f->name);
        f->seen = 1;
        const char *value;
        if (f->kind == CLI_BOOL) {
            if (eq != NULL) return cli_usage_error(cmd->name, "--%s takes no value", f->name);
            value = "1";
        } else if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return cli_usage_error(cmd->name, "--%s needs a value (%s)", f->name, f->meta ? f->meta : "");
        }
        if (f->kind == CLI_STRING && value[0] == '\0')
            return cli_usage_error(cmd->name, "--%s needs a non-empty value", f->name);
        int rc = set_value(cmd, f, value);
        if (rc != 0) return rc;
    }
    if (*n_pos < cmd->min_pos) return cli_usage_error(cmd->name, "missing arguments: dae %s %s", cmd->name, cmd->synopsis);
    for (const char *r = cmd->required; r != NULL && *r != '\0'; r += strspn(r, ",")) {
        size_t n = strcspn(r, ",");
        for (int k = 0; k < cmd->n_flags; k++)
            if (!cmd->flags[k].seen && strlen(cmd->flags[k].name) == n && strncmp(cmd->flags[k].name, r, n) == 0)
                return cli_usage_error(cmd->name, "--%s is required", cmd->flags[k].name);
        r += n;
    }
    return CLI_CONTINUE;
}
