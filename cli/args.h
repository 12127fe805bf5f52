/* args.h - the command-line flag parser every dae subcommand shares.
 *
 * A command declares its flags in a table (long names only: `--name value`
 * or `--name=value`; booleans take no value), with a numeric range for
 * numbers and one help line each. cli_parse fills the values, collects
 * positional arguments and reports any mistake (unknown flag, missing or
 * malformed value, number out of range, wrong number of positionals) as
 * one line on stderr naming the flag. `--help` or `-h` prints the usage
 * generated from the table. `--` ends the flags. */
#ifndef DAE_CLI_ARGS_H
#define DAE_CLI_ARGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum {
    CLI_STRING, /* value: const char ** */
    CLI_INT,    /* value: int *, checked against [min, max] */
    CLI_U64,    /* value: uint64_t *, a non-negative decimal integer */
    CLI_DOUBLE, /* value: double *, finite, checked against [min, max] */
    CLI_FLOAT,  /* value: float *, as CLI_DOUBLE */
    CLI_BOOL,   /* value: int *, set to 1 when the flag is present */
} cli_kind;

typedef struct {
    const char *name; /* without the leading "--" */
    cli_kind kind;
    void *value;
    double min, max;  /* for CLI_INT, CLI_DOUBLE and CLI_FLOAT */
    const char *meta; /* placeholder in the usage ("N", "FILE"); NULL for booleans */
    const char *help; /* one line, saying the default */
    int seen;         /* set by cli_parse */
} cli_flag;

typedef struct {
    const char *name;        /* "train": the usage says "dae train" */
    const char *synopsis;    /* what follows "dae NAME" in the usage line */
    const char *description; /* a sentence or two, printed under the usage line */
    cli_flag *flags;
    int n_flags;
    int min_pos, max_pos;    /* how many positional arguments are allowed */
    const char *required;    /* flags that must be given, comma-separated ("dataset,out"); NULL: none */
} cli_command;

/* What cli_parse returns when the command should go on; anything else is
 * the exit code to return at once. */
#define CLI_CONTINUE (-1)
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2

/* Parses argv[0..argc) (the arguments after the subcommand name) against
 * cmd's flags; positional arguments go to pos (room for cmd->max_pos) and
 * their count to *n_pos; a flag of cmd->required that is missing is a
 * usage error. Returns CLI_CONTINUE; 0 after printing the usage
 * for --help; or CLI_EXIT_USAGE after printing the mistake on stderr. */
int cli_parse(cli_command *cmd, int argc, char **argv, const char **pos, int *n_pos);

/* Prints cmd's usage, description and flag table to out. */
void cli_usage(const cli_command *cmd, FILE *out);

/* Prints "dae NAME: <message> (see dae NAME --help)" on stderr and
 * returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "dae NAME: <message>" on stderr and returns CLI_EXIT_FAILURE. */
int cli_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
