/*
 * fuzz_ckpt: the checkpoint reader on crafted checkpoints (libFuzzer target; see HACKING).
 *
 * Each input is a script of edits, made with HDF5's own API (as a user with h5py could),
 * to a real checkpoint of a tiny GPT written by Tessera at start-up: attributes set to
 * other values, types, dataspaces and string paddings, or deleted; datasets deleted,
 * replaced by others of any rank, shape, type and storage, linked under other names; values
 * poked (NaN, Inf, anything) with or without their checksum fixed; the metadata checksum
 * re-sealed. The file is then read every way tsr-ckpt and tsr-train --resume read one
 * (ckpt_common.c). Whatever HDF5 can write, Tessera must refuse or accept with no crash,
 * hang or sanitizer report. fuzz_ckpt_bytes fuzzes the file's bytes instead.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hdf5.h>
#include <tessera.h>

#include "fuzz.h"

#define MAX_NAMES 256
#define MAX_OPS 8

static char base_path[512], work[256];
static uint8_t *base;
static size_t base_size;
static char *names[MAX_NAMES]; /* the base file's datasets */
static int nnames;

static const char *const groups[] = {"/", "/config", "/layout", "/optim", "/data", "/params", "/optim/wte"};
static const char *const attr_names[] = {
    "format",  "version",   "step",       "created",    "metadata_checksum", "tokens_seen", "seed",  "n_layer",
    "n_embd",  "n_head",    "vocab_size", "seq_len",    "model",             "batch",       "optimizer",
    "loss_scale", "good_steps", "layout", "zero_stage", "checksum",          "extra"};

/* The input, read a few bytes at a time (zeros once it runs out). */
typedef struct script {
    const uint8_t *p;
    size_t n;
} script_t;

static uint64_t take(script_t *s, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v = v << 8 | (s->n ? *s->p : 0);
        if (s->n)
            s->p++, s->n--;
    }
    return v;
}

#define PICK(s, list) list[take(s, 1) % (sizeof list / sizeof *list)]

static herr_t collect(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    (void)obj, (void)data;
    if (info->type == H5O_TYPE_DATASET && nnames < MAX_NAMES) {
        names[nnames] = malloc(strlen(name) + 2);
        if (names[nnames])
            sprintf(names[nnames++], "/%s", name);
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[300];
    fuzz_ckpt_setup(argc, argv);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the edits fail often, by design */
    fuzz_path(work, sizeof work, "ckpt-edit", "h5");
    snprintf(dir, sizeof dir, "%s.base", work);
    if (!fuzz_ckpt_write_base(dir, base_path, sizeof base_path))
        abort();
    FILE *f = fopen(base_path, "rb");
    fseek(f, 0, SEEK_END);
    base_size = (size_t)ftell(f);
    rewind(f);
    base = malloc(base_size);
    if (!base || fread(base, 1, base_size, f) != base_size)
        abort();
    fclose(f);
    hid_t file = H5Fopen(base_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5Ovisit(file, H5_INDEX_NAME, H5_ITER_INC, collect, NULL);
    H5Fclose(file);
    return 0;
}

/* One of the base file's datasets, or (rarely) a new name. */
static const char *dataset(script_t *s, char *buf, size_t len)
{
    unsigned k = (unsigned)take(s, 1);
    if (k < 240 && nnames > 0)
        return names[k % (unsigned)nnames];
    static const char *const fresh[] = {"/params/extra", "/optim/extra/m", "/optim/wte/z", "/data/other", "/x"};
    snprintf(buf, len, "%s", PICK(s, fresh));
    return buf;
}

/* An element type. */
static hid_t element_type(script_t *s)
{
    switch (take(s, 1) % 9) {
    case 0: return H5Tcopy(H5T_IEEE_F32LE);
    case 1: return H5Tcopy(H5T_IEEE_F64LE);
    case 2: return H5Tcopy(H5T_STD_I64LE);
    case 3: return H5Tcopy(H5T_STD_I32LE);
    case 4: return H5Tcopy(H5T_STD_U8LE);
    case 5: return H5Tcopy(H5T_STD_U64LE);
    case 6: return H5Tcopy(H5T_IEEE_F32BE);
    case 7: return H5Tcopy(H5T_STD_I64BE);
    default: {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 1 + take(s, 1) % 16);
        return t;
    }
    }
}

/* A dataspace: scalar, null, or simple of rank 1-4 with small dimensions. */
static hid_t dataspace(script_t *s)
{
    unsigned kind = (unsigned)take(s, 1) % 8;
    if (kind == 0)
        return H5Screate(H5S_SCALAR);
    if (kind == 1)
        return H5Screate(H5S_NULL);
    int rank = 1 + (int)(take(s, 1) % 4);
    hsize_t dims[4];
    for (int i = 0; i < rank; i++)
        dims[i] = take(s, 1) % 12;
    return H5Screate_simple(rank, dims, NULL);
}

static void set_attr(hid_t file, script_t *s)
{
    const char *group = PICK(s, groups);
    const char *name = PICK(s, attr_names);
    hid_t loc = H5Oopen(file, group, H5P_DEFAULT);
    if (loc < 0)
        return;
    if (H5Aexists(loc, name) > 0)
        H5Adelete(loc, name);
    unsigned how = (unsigned)take(s, 1) % 6;
    hid_t type = -1, space = how == 5 ? dataspace(s) : H5Screate(H5S_SCALAR);
    uint8_t value[256] = {0};
    switch (how) {
    case 0: type = H5Tcopy(H5T_NATIVE_INT64); break;
    case 1: type = H5Tcopy(H5T_NATIVE_DOUBLE); break;
    case 2: type = H5Tcopy(take(s, 1) & 1 ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT32); break;
    case 3:
    case 4: {
        /* a string: fixed with any padding and character set, or variable-length */
        type = H5Tcopy(H5T_C_S1);
        size_t len = take(s, 1) % 40;
        for (size_t i = 0; i < len; i++)
            value[i] = (uint8_t)take(s, 1);
        if (how == 4) {
            const char *vlen = (const char *)value;
            H5Tset_size(type, H5T_VARIABLE);
            H5Tset_cset(type, take(s, 1) & 1 ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
            hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
            if (a >= 0) {
                H5Awrite(a, type, &vlen);
                H5Aclose(a);
            }
            H5Tclose(type);
            H5Sclose(space);
            H5Oclose(loc);
            return;
        }
        H5Tset_size(type, len ? len : 1);
        H5Tset_strpad(type, (H5T_str_t)(take(s, 1) % 3));
        H5Tset_cset(type, take(s, 1) & 1 ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
        break;
    }
    default: type = element_type(s); break;
    }
    if (how <= 2)
        for (int i = 0; i < 8; i++)
            value[i] = (uint8_t)take(s, 1);
    hssize_t points = H5Sget_select_npoints(space);
    size_t need = (size_t)(points > 0 ? points : 1) * H5Tget_size(type);
    uint8_t *buf = need <= sizeof value ? value : calloc(1, need);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && buf)
        H5Awrite(a, type, buf);
    if (buf != value)
        free(buf);
    if (a >= 0)
        H5Aclose(a);
    H5Tclose(type);
    H5Sclose(space);
    H5Oclose(loc);
}

static void replace_dataset(hid_t file, script_t *s)
{
    char buf[64];
    const char *name = dataset(s, buf, sizeof buf);
    hid_t type = element_type(s), space = dataspace(s), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    unsigned storage = (unsigned)take(s, 1) % 3;
    int rank = H5Sget_simple_extent_ndims(space);
    if (storage == 1)
        H5Pset_layout(dcpl, H5D_COMPACT);
    if (storage == 2 && rank > 0) {
        hsize_t chunk[4] = {1, 1, 1, 1};
        H5Pset_chunk(dcpl, rank, chunk);
    }
    if (H5Lexists(file, name, H5P_DEFAULT) > 0)
        H5Ldelete(file, name, H5P_DEFAULT);
    hid_t d = H5Dcreate2(file, name, type, space, lcpl, dcpl, H5P_DEFAULT);
    hssize_t points = H5Sget_select_npoints(space);
    if (d >= 0 && points > 0 && take(s, 1) % 4) { /* else leave it unwritten */
        size_t bytes = (size_t)points * H5Tget_size(type);
        uint8_t *v = malloc(bytes);
        for (size_t i = 0; v && i < bytes; i++)
            v[i] = (uint8_t)(i * 37 + take(s, 1));
        if (v)
            H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
    }
    if (d >= 0 && take(s, 1) % 2) {
        hid_t cs = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(d, "checksum", H5T_STD_U64LE, cs, H5P_DEFAULT, H5P_DEFAULT);
        uint64_t sum = take(s, 8);
        if (a >= 0) {
            H5Awrite(a, H5T_NATIVE_UINT64, &sum);
            H5Aclose(a);
        }
        H5Sclose(cs);
    }
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
}

/* Set one element of an fp32 or int64 dataset, and (usually) the checksum that matches. */
static void poke(hid_t file, script_t *s)
{
    char buf[64];
    hid_t d = H5Dopen2(file, dataset(s, buf, sizeof buf), H5P_DEFAULT);
    if (d < 0)
        return;
    hid_t space = H5Dget_space(d), type = H5Dget_type(d);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    int is_int = H5Tget_class(type) == H5T_INTEGER;
    size_t size = is_int ? 8 : 4;
    uint8_t *v = n > 0 && n < (1 << 20) ? malloc((size_t)n * size) : NULL;
    if (v && H5Dread(d, is_int ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0) {
        size_t at = (size_t)(take(s, 2) % (uint64_t)n);
        static const float special[] = {0.0f / 0.0f, 1.0f / 0.0f, -1.0f / 0.0f, -1.0f, 0.0f, 3.4e38f, -0.0f};
        if (is_int) {
            int64_t x = (int64_t)take(s, 8);
            memcpy(v + at * 8, &x, 8);
        } else {
            unsigned k = (unsigned)take(s, 1);
            uint32_t bits = (uint32_t)take(s, 4);
            float x;
            memcpy(&x, &bits, 4);
            if (k % 2)
                x = special[k / 2 % (sizeof special / sizeof *special)];
            memcpy(v + at * 4, &x, 4);
        }
        H5Dwrite(d, is_int ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        if (take(s, 1) % 4 && H5Aexists(d, "checksum") > 0) {
            uint64_t sum = is_int ? tsr_ckpt_checksum_i64(0, (size_t)n, (const int64_t *)v)
                                  : tsr_ckpt_checksum(0, (size_t)n, (const float *)v);
            hid_t a = H5Aopen(d, "checksum", H5P_DEFAULT);
            if (a >= 0) {
                H5Awrite(a, H5T_NATIVE_UINT64, &sum);
                H5Aclose(a);
            }
        }
    }
    free(v);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(d);
}

static void link_dataset(hid_t file, script_t *s)
{
    char a[64], b[64];
    const char *from = dataset(s, a, sizeof a), *to = dataset(s, b, sizeof b);
    if (strcmp(from, to) == 0)
        return;
    if (H5Lexists(file, to, H5P_DEFAULT) > 0)
        H5Ldelete(file, to, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    if (take(s, 1) % 2)
        H5Lcreate_hard(file, from, file, to, lcpl, H5P_DEFAULT);
    else
        H5Lcreate_soft(from, file, to, lcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
}

/* Store the metadata checksum the attributes have now. */
static void seal(void)
{
    uint64_t sum = 0;
    fuzz_ckpt_seal(work, &sum); /* fails where metadata_checksum is missing: seal adds it */
    int64_t bits = (int64_t)sum;
    hid_t f = H5Fopen(work, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = f >= 0 ? H5Gopen2(f, "/", H5P_DEFAULT) : -1;
    if (g >= 0) {
        if (H5Aexists(g, "metadata_checksum") > 0)
            H5Adelete(g, "metadata_checksum");
        hid_t space = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(g, "metadata_checksum", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            H5Awrite(a, H5T_NATIVE_INT64, &bits);
            H5Aclose(a);
        }
        H5Sclose(space);
        H5Gclose(g);
    }
    if (f >= 0)
        H5Fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    script_t s = {data, size};
    int sealed = 0;
    if (!fuzz_write(work, base, base_size))
        return 0;
    hid_t file = H5Fopen(work, H5F_ACC_RDWR, H5P_DEFAULT);
    if (file < 0)
        return 0;
    char buf[64];
    for (int op = 0; op < MAX_OPS && s.n > 0; op++) {
        switch (take(&s, 1) % 8) {
        case 0: case 1: set_attr(file, &s); break;
        case 2: {
            hid_t loc = H5Oopen(file, PICK(&s, groups), H5P_DEFAULT);
            if (loc >= 0) {
                H5Adelete(loc, PICK(&s, attr_names));
                H5Oclose(loc);
            }
            break;
        }
        case 3: H5Ldelete(file, dataset(&s, buf, sizeof buf), H5P_DEFAULT); break;
        case 4: replace_dataset(file, &s); break;
        case 5: poke(file, &s); break;
        case 6: link_dataset(file, &s); break;
        default: sealed = 1; break;
        }
    }
    H5Fclose(file);
    H5Eclear2(H5E_DEFAULT);
    if (sealed)
        seal();
    fuzz_ckpt_read(work);
    return 0;
}
