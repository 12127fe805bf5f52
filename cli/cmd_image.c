/* cmd_image.c - the image subcommands: `dae denoise` (any image, any size,
 * through the tiling engine), `dae noise` (seeded synthetic noise) and
 * `dae grid` (test images original / noisy / denoised in one PNG). Every
 * output is a PNG written atomically: nothing appears at the output path
 * unless the command succeeds. "-" is standard input or output (cli.h). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image.h"
#include "tile.h"

/* Tiles per forward pass and thread in `dae denoise`. */
enum { DENOISE_BATCH = 64 };

/* ------------------------------------------------------------ denoise */

int cmd_denoise(int argc, char **argv) {
    static const char name[] = "denoise";
    const char *model_path = NULL;
    int threads = dae_online_cpus(), max_pixels = (int)DAE_IMAGE_MAX_PIXELS;
    cli_flag flags[] = {
        CLI_FLAG_MODEL(&model_path),
        CLI_FLAG_THREADS(&threads),
        CLI_FLAG_MAX_PIXELS(&max_pixels),
    };
    cli_command cmd = {name, "IN OUT [flags]",
                       "Denoises IN (PNG of any kind, JPEG, BMP, GIF, PNM or TGA; any size) into the PNG OUT of the\n"
                       "same size: overlapping model-sized tiles blended smoothly; gray stays gray, colour channels\n"
                       "are denoised independently, alpha is kept; 16-bit input comes back 8-bit. IN or OUT \"-\" is\n"
                       "standard input or output: cat in.png | dae denoise - - > out.png",
                       flags, (int)(sizeof flags / sizeof flags[0]), 2, 2, NULL};
    const char *pos[2];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    const char *in_path = pos[0], *out_path = pos[1];
    if ((rc = cli_check_image_output(name, out_path)) != 0) return rc;
    dae_model m;
    char model_file[PATH_MAX];
    if ((rc = cli_open_model(name, model_path, &m, model_file, sizeof model_file, "OUT", out_path)) != 0) return rc;
    char err[DAE_ERR_LEN] = "";
    dae_image in = {0}, out = {0};
    dae_pool *pool = NULL;
    dae_workspace **ws = NULL;
    int exit_code = CLI_EXIT_FAILURE;
    if (dae_denoise_check_model(&m, model_file, err, sizeof err) != DAE_OK) {
        cli_error(name, "%s", err);
        goto done;
    }
    if (cli_image_load(name, in_path, (size_t)max_pixels, &in) != 0) goto done;
    if (cli_workers_new(name, &m, threads, DENOISE_BATCH, &pool, &ws) != 0) goto done;
    if (dae_denoise_image(&m, pool, ws, &in, &out, err, sizeof err) != DAE_OK) {
        cli_error(name, "%s: %s", strcmp(in_path, CLI_STDIO_PATH) == 0 ? "standard input" : in_path, err);
        goto done;
    }
    if (cli_image_save(name, out_path, &out) != 0) goto done;
    exit_code = 0;
done:
    cli_workers_free(pool, ws, threads);
    dae_image_free(&in);
    dae_image_free(&out);
    dae_model_free(&m);
    return exit_code;
}

/* ------------------------------------------------------------ noise */

int cmd_noise(int argc, char **argv) {
    static const char name[] = "noise";
    const char *noise_text = "gaussian:0.5";
    uint64_t seed = 0;
    int max_pixels = (int)DAE_IMAGE_MAX_PIXELS;
    cli_flag flags[] = {
        {"noise", CLI_STRING, &noise_text, 0, 0, "SPEC",
         "gaussian:S[:clip][:quantize], salt-pepper:P, speckle:S (default gaussian:0.5)", 0},
        {"seed", CLI_U64, &seed, 0, 0, "N", "noise seed: same seed, same bytes out (default 0)", 0},
        CLI_FLAG_MAX_PIXELS(&max_pixels),
    };
    cli_command cmd = {name, "IN OUT [flags]",
                       "Adds seeded synthetic noise to every colour channel of IN (alpha untouched) and writes the\n"
                       "PNG OUT, clipped to [0, 1] and quantised to 8 bits. IN or OUT \"-\" is standard input or output.",
                       flags, (int)(sizeof flags / sizeof flags[0]), 2, 2, NULL};
    const char *pos[2];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    char err[DAE_ERR_LEN] = "";
    dae_noise_spec spec;
    if (dae_noise_parse(noise_text, &spec, err, sizeof err) != DAE_OK) return cli_usage_error(name, "--noise: %s", err);
    if ((rc = cli_check_image_output(name, pos[1])) != 0) return rc;
    dae_image img;
    if (cli_image_load(name, pos[0], (size_t)max_pixels, &img) != 0) return CLI_EXIT_FAILURE;
    const char *in_name = strcmp(pos[0], CLI_STDIO_PATH) == 0 ? "standard input" : pos[0];
    if (dae_image_add_noise(&img, &spec, seed, err, sizeof err) != DAE_OK) rc = cli_error(name, "%s: %s", in_name, err);
    else rc = cli_image_save(name, pos[1], &img);
    dae_image_free(&img);
    return rc;
}

/* ------------------------------------------------------------ grid */

/* Draws a side x side float image (values clipped to [0, 1]) scaled by
 * scale, nearest neighbour, with its top-left corner at (x0, y0). */
static void blit(dae_image *g, const float *px, int side_h, int side_w, int scale, int x0, int y0) {
    for (int y = 0; y < side_h * scale; y++)
        for (int x = 0; x < side_w * scale; x++) {
            float v = px[(y / scale) * side_w + x / scale];
            v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
            g->pixels[(size_t)(y0 + y) * (size_t)g->width + (size_t)(x0 + x)] = (uint8_t)(v * 255.0f + 0.5f);
        }
}

int cmd_grid(int argc, char **argv) {
    static const char name[] = "grid";
    const char *model_path = NULL, *dataset = NULL, *data_dir = NULL, *out_path = NULL;
    const char *noise_text = "gaussian:0.5";
    int count = 10, scale = 4, first = 0;
    uint64_t seed = DAE_EVAL_SEED;
    cli_flag flags[] = {
        CLI_FLAG_MODEL(&model_path),
        {"dataset", CLI_STRING, &dataset, 0, 0, "NAME", "data set whose test images to show (required)", 0},
        CLI_FLAG_DATA_DIR(&data_dir),
        {"out", CLI_STRING, &out_path, 0, 0, "FILE", "the PNG to write, - for standard output (required)", 0},
        {"count", CLI_INT, &count, 1, 100, "N", "test images across (default 10)", 0},
        {"first", CLI_INT, &first, 0, 0x7fffffff, "N", "index of the first test image (default 0)", 0},
        {"scale", CLI_INT, &scale, 1, 16, "N", "pixels per image pixel (default 4)", 0},
        {"noise", CLI_STRING, &noise_text, 0, 0, "SPEC", "noise to add (default gaussian:0.5)", 0},
        {"seed", CLI_U64, &seed, 0, 0, "N", "noise seed; image i gets stream i (default: eval's seed, 20260101)", 0},
    };
    cli_command cmd = {name, "--dataset NAME --out FILE [flags]",
                       "Writes one gray PNG with three rows of test images - original, noisy, denoised - scaled\n"
                       "up with white gaps, like the original notebook's figure. With the default seed the noisy\n"
                       "images are those `dae eval` scores.",
                       flags, (int)(sizeof flags / sizeof flags[0]), 0, 0, "dataset,out"};
    const char *pos[1];
    int n_pos;
    int rc = cli_parse(&cmd, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    char err[DAE_ERR_LEN] = "";
    dae_noise_spec spec;
    if (dae_noise_parse(noise_text, &spec, err, sizeof err) != DAE_OK) return cli_usage_error(name, "--noise: %s", err);
    if ((rc = cli_check_image_output(name, out_path)) != 0) return rc;
    dae_model m;
    char model_file[PATH_MAX];
    if ((rc = cli_open_model(name, model_path, &m, model_file, sizeof model_file, "--out", out_path)) != 0) return rc;
    dae_dataset data;
    if ((rc = cli_load_dataset(name, data_dir, dataset, &m, &data)) != 0) {
        dae_model_free(&m);
        return rc;
    }
    const dae_idx_images *test = &data.test_images;
    int exit_code = CLI_EXIT_FAILURE;
    float *clean = NULL, *noisy = NULL, *denoised = NULL;
    dae_workspace *ws = NULL;
    dae_image grid = {0};
    if (dae_model_check_images(&m, test, model_file, dataset, err, sizeof err) != DAE_OK) {
        cli_error(name, "%s", err);
        goto done;
    }
    if (first >= test->count || count > test->count - first) {
        cli_error(name, "%s: test images %d to %d asked for, the data set has %d", dataset, first, first + count - 1,
                  test->count);
        goto done;
    }
    size_t n = dae_model_image_size(&m);
    clean = malloc(sizeof(float) * n * (size_t)count);
    noisy = malloc(sizeof(float) * n * (size_t)count);
    denoised = malloc(sizeof(float) * n * (size_t)count);
    ws = dae_workspace_new(&m, count, 0);
    if (clean == NULL || noisy == NULL || denoised == NULL || ws == NULL) {
        cli_error(name, "out of memory for %d images", count);
        goto done;
    }
    for (int i = 0; i < count; i++) {
        const uint8_t *px = test->pixels + (size_t)(first + i) * n;
        dae_noise_pixels(&spec, px, clean + i * n, noisy + i * n, n, seed, (uint64_t)(first + i));
    }
    dae_model_forward(&m, ws, noisy, denoised, count);
    int gap = scale, cw = m.in_w * scale, ch = m.in_h * scale;
    if (dae_image_alloc(&grid, count * cw + (count + 1) * gap, 3 * ch + 4 * gap, 1, err, sizeof err) != DAE_OK) {
        cli_error(name, "%s: %s", out_path, err);
        goto done;
    }
    memset(grid.pixels, 255, (size_t)grid.width * (size_t)grid.height);
    const float *rows[3] = {clean, noisy, denoised};
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < count; i++)
            blit(&grid, rows[r] + i * n, m.in_h, m.in_w, scale, gap + i * (cw + gap), gap + r * (ch + gap));
    if (cli_image_save(name, out_path, &grid) != 0) goto done;
    exit_code = 0;
done:
    dae_image_free(&grid);
    dae_workspace_free(ws);
    free(clean);
    free(noisy);
    free(denoised);
    dae_dataset_free(&data);
    dae_model_free(&m);
    return exit_code;
}
