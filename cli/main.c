/* main.c - `dae`, the command-line tool: dispatches to the subcommands and
 * prints the top-level usage and version. Exit codes: 0 success, 1
 * failure, 2 usage error. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gemm.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand SUBCOMMANDS[] = {
    {"train", cmd_train, "train a model on an IDX data set or a folder or archive of images, save it as safetensors"},
    {"eval", cmd_eval, "test MSE, PSNR and SSIM of a model and of the noisy input (raw and png protocols)"},
    {"denoise", cmd_denoise, "denoise an image of any size (PNG, JPEG, BMP, GIF, PNM, TGA) into a PNG"},
    {"noise", cmd_noise, "add seeded synthetic noise to an image, PNG out"},
    {"grid", cmd_grid, "a PNG of test images: original / noisy / denoised rows"},
    {"info", cmd_info, "architecture, parameter count and metadata of a weights file or checkpoint"},
    {"forward", cmd_forward, "run the network on a safetensors tensor of images, float outputs out"},
};
enum { N_SUBCOMMANDS = sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0] };

static void usage(FILE *out) {
    fprintf(out,
            "usage: dae COMMAND [ARGS] [FLAGS]\n\n"
            "dae %s - a denoising autoencoder: train it, evaluate it, and denoise images.\n\n"
            "commands:\n",
            DAE_VERSION);
    for (int i = 0; i < N_SUBCOMMANDS; i++) fprintf(out, "  %-9s %s\n", SUBCOMMANDS[i].name, SUBCOMMANDS[i].summary);
    fprintf(out,
            "\n`dae COMMAND --help` (or `dae help COMMAND`) describes each command's flags.\n\n"
            "flags:\n"
            "  --help    show this help\n"
            "  --version print the version\n\n"
            "environment:\n"
            "  DAE_DATA_DIR    default --data-dir\n"
            "  DAE_MODEL       default --model of denoise, grid and forward: a file, or NAME for\n"
            "                  NAME.safetensors in the models directory\n"
            "  DAE_MODELS_DIR  the models directory, looked in first; then ./models, and ../models\n"
            "                  or ../share/dae/models beside the executable (default model: " CLI_DEFAULT_MODEL ")\n\n"
            "exit status: 0 success, 1 failure, 2 usage error\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "dae: missing command:");
        for (int i = 0; i < N_SUBCOMMANDS; i++)
            fprintf(stderr, "%s %s", i == 0 ? "" : i == N_SUBCOMMANDS - 1 ? " or" : ",", SUBCOMMANDS[i].name);
        fprintf(stderr, " (see dae --help)\n");
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        if (strcmp(cmd, "help") == 0 && argc > 2) {
            for (int i = 0; i < N_SUBCOMMANDS; i++)
                if (strcmp(argv[2], SUBCOMMANDS[i].name) == 0) {
                    char help[] = "--help";
                    char *args[] = {help, NULL};
                    return SUBCOMMANDS[i].run(1, args);
                }
            fprintf(stderr, "dae: unknown command \"%s\" (see dae --help)\n", argv[2]);
            return CLI_EXIT_USAGE;
        }
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("dae %s\n", DAE_VERSION);
        return 0;
    }
    for (int i = 0; i < N_SUBCOMMANDS; i++)
        if (strcmp(cmd, SUBCOMMANDS[i].name) == 0) {
            char isa_err[160];
            if (dae_isa_env_check(isa_err, sizeof isa_err) != 0) fprintf(stderr, "dae: warning: %s\n", isa_err);
            return SUBCOMMANDS[i].run(argc - 2, argv + 2);
        }
    if (cmd[0] == '-') fprintf(stderr, "dae: unknown flag %s (see dae --help)\n", cmd);
    else fprintf(stderr, "dae: unknown command \"%s\" (see dae --help)\n", cmd);
    return CLI_EXIT_USAGE;
}
