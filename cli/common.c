/* common.c - helpers shared by the dae subcommands: data directory and
 * data set, thread count, finding and loading weights or checkpoints,
 * output path checks, image files or standard input and output, and
 * inference workers. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dataset_import.h"
#include "fileio.h"
#include "gemm.h"
#include "image.h"

const char *cli_data_dir(const char *flag) {
    if (flag != NULL) return flag;
    const char *env = getenv("DAE_DATA_DIR");
    return env != NULL && env[0] != '\0' ? env : NULL;
}

int cli_load_dataset(const char *cmd, const char *flag, const char *name, const dae_model *m, dae_dataset *out) {
    memset(out, 0, sizeof *out);
    const char *dir = cli_data_dir(flag);
    char err[DAE_ERR_LEN] = "";
    if (dae_import_is_path(name, dir)) {
        if (dae_dataset_import(name, NULL, m->in_h, m->in_w, out, NULL, err, sizeof err) != DAE_OK)
            return cli_error(cmd, "%s", err);
        return 0;
    }
    if (dir == NULL)
        return cli_usage_error(cmd, "no data directory: pass --data-dir DIR or set DAE_DATA_DIR");
    if (dae_dataset_load(dir, name, out, err, sizeof err) != DAE_OK) return cli_error(cmd, "%s", err);
    return 0;
}

/* ------------------------------------------------------------ models */

/* The models directories, in the order cli_open_model looks (see cli.h). */
enum { MODEL_DIRS = 5 };
typedef struct {
    char dir[MODEL_DIRS][PATH_MAX];
    int n;
} model_dirs;

static void model_dirs_add(model_dirs *d, const char *prefix, const char *suffix) {
    int len = snprintf(d->dir[d->n], PATH_MAX, "%s%s", prefix, suffix);
    if (len > 0 && len < PATH_MAX) d->n++; /* a path too long to hold is no place to look */
}

static void model_dirs_find(model_dirs *d) {
    d->n = 0;
    const char *env = getenv("DAE_MODELS_DIR");
    if (env != NULL && env[0] != '\0') model_dirs_add(d, env, "");
    model_dirs_add(d, "models", "");
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return; /* no /proc: only the directories above */
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL) return;
    *slash = '\0'; /* the executable's directory */
    if ((slash = strrchr(exe, '/')) == NULL) return;
    *slash = '\0'; /* its parent */
    model_dirs_add(d, exe, "/models");
    char parent[PATH_MAX];
    memcpy(parent, exe, strlen(exe) + 1);
    if ((slash = strrchr(parent, '/')) != NULL) {
        *slash = '\0';
        model_dirs_add(d, parent, "/models");
    }
    model_dirs_add(d, exe, "/share/dae/models");
}

/* Finds the model file cli_open_model opens (see cli.h) and copies its path
 * into path; returns 0, or 1 after printing where it looked. */
static int model_path(const char *cmd, const char *flag, char *path, size_t len) {
    const char *env = getenv("DAE_MODEL");
    const char *given = flag != NULL ? flag : env != NULL && env[0] != '\0' ? env : NULL;
    if (given != NULL && (flag != NULL || strchr(given, '/') != NULL || strchr(given, '.') != NULL)) {
        if (snprintf(path, len, "%s", given) >= (int)len) return cli_error(cmd, "%.64s...: path too long", given);
        return 0;
    }
    char file[NAME_MAX + 1];
    if (snprintf(file, sizeof file, "%s%s", given != NULL ? given : CLI_DEFAULT_MODEL,
                 given != NULL ? ".safetensors" : "") >= (int)sizeof file)
        return cli_error(cmd, "DAE_MODEL: the name \"%.64s...\" is too long", given);
    model_dirs d;
    model_dirs_find(&d);
    char looked[MODEL_DIRS * 160] = "";
    size_t used = 0;
    for (int i = 0; i < d.n; i++) {
        if (snprintf(path, len, "%s/%s", d.dir[i], file) >= (int)len) continue;
        if (access(path, F_OK) == 0) return 0;
        if (used < sizeof looked)
            used += (size_t)snprintf(looked + used, sizeof looked - used, "%s%s", used ? ", " : "", path);
    }
    path[0] = '\0';
    if (given != NULL)
        return cli_error(cmd, "DAE_MODEL=%s: no model of that name in %s (pass --model FILE or set DAE_MODEL to a file)",
                         given, looked);
    return cli_error(cmd, "no model given and none of %s exists (pass --model FILE, or set DAE_MODEL or "
                          "DAE_MODELS_DIR)", looked);
}

int cli_open_model(const char *cmd, const char *flag, dae_model *m, char *path, size_t len, const char *out_flag,
                   const char *out) {
    memset(m, 0, sizeof *m);
    if (model_path(cmd, flag, path, len) != 0) return CLI_EXIT_FAILURE;
    int rc = cli_check_distinct(cmd, out_flag, out, "the model", path, 1);
    if (rc != 0) return rc;
    char err[DAE_ERR_LEN] = "";
    if (dae_model_open(path, m, NULL, err, sizeof err) != DAE_OK) return cli_error(cmd, "%s", err);
    return 0;
}

/* ------------------------------------------------------------ outputs */

int cli_check_output(const char *cmd, const char *path) {
    if (strcmp(path, CLI_STDIO_PATH) == 0)
        return cli_error(cmd, "-: only image outputs go to standard output; name a file (./- for a file named -)");
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return cli_error(cmd, "%s: is a directory", path);
    char *dir = strdup(path);
    if (dir == NULL) return cli_error(cmd, "%s: out of memory", path);
    char *slash = strrchr(dir, '/');
    const char *d = slash == NULL ? "." : slash == dir ? "/" : (*slash = '\0', dir);
    int rc = 0;
    if (stat(d, &sb) != 0 || !S_ISDIR(sb.st_mode))
        rc = cli_error(cmd, "%s: directory %s does not exist", path, d);
    else if (access(d, W_OK) != 0)
        rc = cli_error(cmd, "%s: directory %s is not writable: %s", path, d, strerror(errno));
    free(dir);
    return rc;
}

/* The file a path names, as "<its directory's real path>/<its name>" (a
 * new string; NULL when out of memory or the directory does not exist):
 * two paths naming one file ("m.st", "./m.st", "../d/m.st") give the same. */
static char *file_identity(const char *path) {
    char *dir = strdup(path);
    if (dir == NULL) return NULL;
    char *slash = strrchr(dir, '/');
    const char *name = slash == NULL ? path : path + (slash - dir) + 1;
    const char *d = slash == NULL ? "." : slash == dir ? "/" : (*slash = '\0', dir);
    char *real = realpath(d, NULL), *id = NULL;
    if (real != NULL && (id = malloc(strlen(real) + strlen(name) + 2)) != NULL) sprintf(id, "%s/%s", real, name);
    free(real);
    free(dir);
    return id;
}

int cli_check_distinct(const char *cmd, const char *flag_a, const char *a, const char *flag_b, const char *b,
                       int b_is_input) {
    if (a == NULL || b == NULL || strcmp(a, CLI_STDIO_PATH) == 0 || strcmp(b, CLI_STDIO_PATH) == 0) return 0;
    char *id_a = file_identity(a), *id_b = file_identity(b);
    int rc = 0;
    if (id_a != NULL && id_b != NULL && strcmp(id_a, id_b) == 0)
        rc = b_is_input ? cli_usage_error(cmd, "%s names the file of %s (%s): writing it would replace that input",
                                          flag_a, flag_b, a)
                        : cli_usage_error(cmd, "%s and %s name the same file (%s): each output needs its own", flag_a,
                                          flag_b, a);
    free(id_a);
    free(id_b);
    return rc;
}

/* ------------------------------------------------------------ image files */

int cli_check_image_output(const char *cmd, const char *path) {
    if (strcmp(path, CLI_STDIO_PATH) == 0) {
        if (isatty(STDOUT_FILENO))
            return cli_error(cmd, "not writing a binary PNG to the terminal: redirect standard output (> out.png) "
                                  "or name an output file");
        return 0;
    }
    /* Only PNG is written: a name promising another format would hold a PNG. */
    static const char *const OTHER[] = {".jpg", ".jpeg", ".bmp", ".gif", ".pbm", ".pgm", ".ppm", ".pnm",
                                        ".tga", ".webp", ".tif", ".tiff", ".avif", ".heic"};
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot != NULL && strchr(dot, '/') == NULL && i < sizeof OTHER / sizeof OTHER[0]; i++)
        if (strcasecmp(dot, OTHER[i]) == 0)
            return cli_usage_error(cmd, "%s: the output is always a PNG; name it .png", path);
    return cli_check_output(cmd, path);
}

int cli_image_load(const char *cmd, const char *path, size_t max_pixels, dae_image *out) {
    char err[DAE_ERR_LEN] = "";
    memset(out, 0, sizeof *out);
    if (strcmp(path, CLI_STDIO_PATH) != 0) {
        if (dae_image_load(path, CLI_MAX_IMAGE_BYTES, max_pixels, out, err, sizeof err) != DAE_OK)
            return cli_error(cmd, "%s", err);
        return 0;
    }
    if (isatty(STDIN_FILENO))
        return cli_error(cmd, "standard input is a terminal: pipe an image in (< in.png) or name an input file");
    uint8_t *data;
    size_t len;
    if (dae_fd_read_all(STDIN_FILENO, "standard input", CLI_MAX_IMAGE_BYTES, &data, &len, err, sizeof err) != DAE_OK)
        return cli_error(cmd, "%s", err);
    dae_status st = dae_image_decode(data, len, max_pixels, out, err, sizeof err);
    free(data);
    if (st != DAE_OK) return cli_error(cmd, "standard input: %s", err);
    return 0;
}

int cli_image_save(const char *cmd, const char *path, const dae_image *img) {
    char err[DAE_ERR_LEN] = "";
    if (strcmp(path, CLI_STDIO_PATH) != 0) {
        if (dae_image_save_png(path, img, err, sizeof err) != DAE_OK) return cli_error(cmd, "%s", err);
        return 0;
    }
    uint8_t *png;
    size_t len;
    if (dae_image_encode_png(img, -1, &png, &len, err, sizeof err) != DAE_OK)
        return cli_error(cmd, "standard output: %s", err);
    int rc = 0;
    if (dae_write_all(STDOUT_FILENO, png, len) != 0) rc = cli_error(cmd, "standard output: %s", strerror(errno));
    free(png);
    return rc;
}

/* ------------------------------------------------------------ workers */

int cli_workers_new(const char *cmd, const dae_model *m, int threads, int max_batch, dae_pool **pool,
                    dae_workspace ***workspaces) {
    *pool = NULL;
    *workspaces = calloc((size_t)threads, sizeof(dae_workspace *));
    int ok = *workspaces != NULL;
    for (int t = 0; t < threads && ok; t++) ok = ((*workspaces)[t] = dae_workspace_new(m, max_batch, 0)) != NULL;
    if (ok && threads > 1) {
        dae_gemm_single_threaded(); /* our threads split the work; BLAS must not split it again */
        ok = (*pool = dae_pool_new(threads)) != NULL;
    }
    if (!ok) {
        cli_workers_free(*pool, *workspaces, threads);
        *pool = NULL;
        *workspaces = NULL;
        return cli_error(cmd, "out of memory for %d inference threads", threads);
    }
    return 0;
}

void cli_workers_free(dae_pool *pool, dae_workspace **workspaces, int threads) {
    dae_pool_free(pool);
    if (workspaces == NULL) return;
    for (int t = 0; t < threads; t++) dae_workspace_free(workspaces[t]);
    free(workspaces);
}
