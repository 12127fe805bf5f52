/* tensors.c - releasing and looking up a parsed set of named tensors. */
#include "tensors.h"

#include <stdlib.h>
#include <string.h>

void dae_st_free(dae_st_file *f) {
    if (f == NULL) return;
    if (f->tensors != NULL) {
        for (int i = 0; i < f->n_tensors; i++) {
            free(f->tensors[i].name);
            free(f->tensors[i].data);
        }
        free(f->tensors);
    }
    if (f->meta_keys != NULL) {
        for (int i = 0; i < f->n_meta; i++) free(f->meta_keys[i]);
        free(f->meta_keys);
    }
    if (f->meta_values != NULL) {
        for (int i = 0; i < f->n_meta; i++) free(f->meta_values[i]);
        free(f->meta_values);
    }
    memset(f, 0, sizeof *f);
}

const dae_st_tensor *dae_st_find(const dae_st_file *f, const char *name) {
    if (f == NULL || name == NULL) return NULL;
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name != NULL && strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *dae_st_meta(const dae_st_file *f, const char *key) {
    if (f == NULL || key == NULL) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (f->meta_keys[i] != NULL && strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}
