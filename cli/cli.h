/* cli.h - what the dae subcommands share: the tool's version, the
 * subcommand entry points, and helpers for the data directory, thread
 * counts, model files, output paths and timestamps. */
#ifndef DAE_CLI_H
#define DAE_CLI_H

#include <stddef.h>

#include "args.h"
#include "dae_image.h"
#include "idx.h"
#include "model.h"
#include "modelfile.h"
#include "train.h"

#define DAE_VERSION "0.1.0"

/* Default model of `dae denoise`, `dae grid` and `dae forward` when
 * neither --model nor $DAE_MODEL is given: this file in a models directory
 * (see cli_open_model). */
#define CLI_DEFAULT_MODEL "mnist.safetensors"

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

/* Loads the model of the commands that have a default model, for command
 * cmd, and copies its path into path (len bytes, for messages). The file
 * is flag when given; else $DAE_MODEL, a file, or when it has no '/' and
 * no '.' the name of NAME.safetensors in a models directory (as
 * dae-server's DAE_MODEL); else CLI_DEFAULT_MODEL in a models directory.
 * The models directories, the first holding the file wins:
 * $DAE_MODELS_DIR, ./models, and beside the executable ../models (a
 * checkout's build/dae), ../../models (build/NAME/dae, `make BUILD=...`)
 * and ../share/dae/models (installed as PREFIX/bin/dae), so `dae denoise`
 * works from any directory. Returns 0, or the exit code after printing
 * the problem (for a missing default: every place looked in, and how to
 * choose a model). out, the command's output (named out_flag; NULL:
 * none), may not name the model's file (cli_check_distinct), which is
 * checked before the model is read. */
int cli_open_model(const char *cmd, const char *flag, dae_model *m, char *path, size_t len, const char *out_flag,
                   const char *out);

/* Flag table entries several commands share, with one wording. */
#define CLI_FLAG_MODEL(var)                                                                          \
    {"model", CLI_STRING, (var), 0, 0, "FILE",                                                       \
     "weights file or checkpoint (default $DAE_MODEL, else " CLI_DEFAULT_MODEL " in the models directory)", 0}
#define CLI_FLAG_DATA_DIR(var) \
    {"data-dir", CLI_STRING, (var), 0, 0, "DIR", "directory holding the data sets (default $DAE_DATA_DIR)", 0}
#define CLI_FLAG_THREADS(var) {"threads", CLI_INT, (var), 1, 64, "N", "threads (default: online CPUs)", 0}
#define CLI_FLAG_MAX_PIXELS(var) \
    {"max-pixels", CLI_INT, (var), 1, 0x7fffffff, "N", "refuse larger images (default 16777216)", 0}

/* Checks that path can be created: its directory exists and is writable,
 * and path itself is not a directory. "-" is refused (these outputs are not
 * written to standard output). Returns 0, or prints the problem as command
 * cmd and returns 1. */
int cli_check_output(const char *cmd, const char *path);

/* 0 when path a (an output, named by flag_a: "--out", "OUT") and path b
 * (another output, or an input when b_is_input) name different files;
 * else prints the usage error and returns 2: the one written last would
 * replace the other ("--out m.safetensors --loss-csv m.safetensors" left
 * the CSV and said it wrote the weights; "--sweep-svg" over "--model"
 * left a plot where the model was). NULL and "-" name no file. */
int cli_check_distinct(const char *cmd, const char *flag_a, const char *a, const char *flag_b, const char *b,
                       int b_is_input);

/* ------------------------------------------------------------ image files */

/* The image commands' paths: "-" is standard input as an input and
 * standard output as an output, so `cat a.png | dae denoise - - > b.png`
 * works; every message goes to stderr. */
#define CLI_STDIO_PATH "-"

/* cli_check_output for an image output, which is always a PNG: a name
 * ending in another image format's extension (".jpg") is a usage error;
 * for "-", refuses a terminal as standard output (a PNG is binary).
 * Returns 0, or the exit code after printing. */
int cli_check_image_output(const char *cmd, const char *path);

/* dae_image_load, or for "-" the same from standard input (refusing a
 * terminal, which would wait for an image nobody types). On failure
 * prints the problem as command cmd (naming the path, or "standard
 * input") and returns 1; *out is then zeroed. */
int cli_image_load(const char *cmd, const char *path, size_t max_pixels, dae_image *out);

/* dae_image_save_png (atomic), or for "-" the PNG written to standard
 * output. Returns 0, or 1 after printing. */
int cli_image_save(const char *cmd, const char *path, const dae_image *img);

/* Makes a pool of threads workers and one inference workspace of max_batch
 * per thread (pool NULL for one thread). Returns 0, or 1 after printing. */
int cli_workers_new(const char *cmd, const dae_model *m, int threads, int max_batch, dae_pool **pool,
                    dae_workspace ***workspaces);
void cli_workers_free(dae_pool *pool, dae_workspace **workspaces, int threads);

#endif
