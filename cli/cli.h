/* cli.h - what the dae subcommands share: the tool's version, the
 * subcommand entry points, and helpers for the data directory, thread
 * counts, model files, output paths and timestamps. */
#ifndef DAE_CLI_H
#define DAE_CLI_H

#include <stddef.h>

#include "args.h"
#include "idx.h"
#include "model.h"
#include "modelfile.h"
#include "train.h"

#define DAE_VERSION "0.1.0"

/* Default model of `dae denoise` and `dae grid` when neither --model nor
 * $DAE_MODEL is given, relative to the current directory. */
#define CLI_DEFAULT_MODEL "models/mnist.safetensors"

/* Largest image file `dae denoise` and `dae noise` read. */
#define CLI_MAX_IMAGE_BYTES ((size_t)256 << 20)

/* Each subcommand takes the arguments after its name and returns the
 * process exit code: 0 success, 1 failure, 2 usage error. */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_denoise(int argc, char **argv);
int cmd_noise(int argc, char **argv);
int cmd_grid(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_forward(int argc, char **argv);

/* Returns the data directory: flag when not NULL, else $DAE_DATA_DIR when
 * set and non-empty, else NULL (the caller reports a usage error). */
const char *cli_data_dir(const char *flag);

/* Loads the data set name under the data directory given by flag or
 * $DAE_DATA_DIR into *out; a name that is a path (dae_import_is_path) is
 * an archive or folder of images, imported in m's input size. Returns 0,
 * or prints the problem (as command cmd) and returns the exit code: 2 when
 * no directory is configured, 1 when the files are missing or malformed. */
int cli_load_dataset(const char *cmd, const char *flag, const char *name, const dae_model *m, dae_dataset *out);

/* The model path of the commands that have a default model: flag, else
 * $DAE_MODEL, else CLI_DEFAULT_MODEL. */
const char *cli_model_path(const char *flag);

/* Loads the model at cli_model_path(flag) for command cmd; when the path is
 * the default and missing, says how to choose another. Returns 0, or the
 * exit code after printing the problem. */
int cli_open_model(const char *cmd, const char *flag, dae_model *m);

/* Flag table entries several commands share, with one wording. */
#define CLI_FLAG_MODEL(var)                                                                          \
    {"model", CLI_STRING, (var), 0, 0, "FILE",                                                       \
     "weights file or checkpoint (default $DAE_MODEL, else " CLI_DEFAULT_MODEL ")", 0}
#define CLI_FLAG_DATA_DIR(var) \
    {"data-dir", CLI_STRING, (var), 0, 0, "DIR", "directory holding the data sets (default $DAE_DATA_DIR)", 0}
#define CLI_FLAG_THREADS(var) {"threads", CLI_INT, (var), 1, 64, "N", "threads (default: online CPUs)", 0}
#define CLI_FLAG_MAX_PIXELS(var) \
    {"max-pixels", CLI_INT, (var), 1, 0x7fffffff, "N", "refuse larger images (default 16777216)", 0}

/* Checks that path can be created: its directory exists and is writable,
 * and path itself is not a directory. Returns 0, or prints the problem as
 * command cmd and returns 1. */
int cli_check_output(const char *cmd, const char *path);

/* Makes a pool of threads workers and one inference workspace of max_batch
 * per thread (pool NULL for one thread). Returns 0, or 1 after printing. */
int cli_workers_new(const char *cmd, const dae_model *m, int threads, int max_batch, dae_pool **pool,
                    dae_workspace ***workspaces);
void cli_workers_free(dae_pool *pool, dae_workspace **workspaces, int threads);

#endif
