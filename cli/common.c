/* common.c - helpers shared by the dae subcommands: data directory and
 * data set, thread count, loading weights or checkpoints, output path
 * checks, timestamps and inference workers. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dataset_import.h"
#include "gemm.h"

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

int cli_open_model(const char *cmd, const char *flag, dae_model *m) {
    const char *path = cli_model_path(flag);
    char err[DAE_ERR_LEN] = "";
    if (flag == NULL && access(path, F_OK) != 0) {
        memset(m, 0, sizeof *m);
        return cli_error(cmd, "%s: no such model file (pass --model FILE or set DAE_MODEL)", path);
    }
    if (dae_model_open(path, m, NULL, err, sizeof err) != DAE_OK) return cli_error(cmd, "%s", err);
    return 0;
}

const char *cli_model_path(const char *flag) {
    if (flag != NULL) return flag;
    const char *env = getenv("DAE_MODEL");
    return env != NULL && env[0] != '\0' ? env : CLI_DEFAULT_MODEL;
}

int cli_check_output(const char *cmd, const char *path) {
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
