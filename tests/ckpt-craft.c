/*
 * ckpt-craft: damage a checkpoint on purpose, the way a hostile or careless user could with
 * h5py, for the tests of tsr-ckpt and tsr-train --resume. Not a test itself.
 *
 *   ckpt-craft FILE set-i64 GROUP NAME VALUE     replace an attribute by an int64
 *   ckpt-craft FILE set-f64 GROUP NAME VALUE     ... by a double
 *   ckpt-craft FILE set-str GROUP NAME VALUE [nullpad]   ... by a fixed-length string
 *                                                (nullpad: h5py's np.bytes_, no terminator)
 *   ckpt-craft FILE delete DATASET               unlink a dataset
 *   ckpt-craft FILE poke DATASET INDEX VALUE     set one float element (nan, inf, -1 ...) and
 *                                                store the checksum that matches it
 *   ckpt-craft FILE write-i64 DATASET VALUE      set element 0 of an int64 dataset, likewise
 *   ckpt-craft FILE rank3 DATASET                replace a dataset by a 2 x 2 x 2 one
 *   ckpt-craft FILE retype DATASET               replace an fp32 dataset by an int32 one
 *   ckpt-craft FILE reshape DATASET ROWS COLS    replace an fp32 dataset by a ROWS x COLS one
 *   ckpt-craft FILE wide-checksum DATASET        make its checksum attribute 64 values long
 *   ckpt-craft FILE seal                         store the metadata checksum that matches
 *
 * The edits keep a file's other checksums valid, so that a test reaches the check it means.
 * Exit 0 on success, 1 with a message otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hdf5.h>
#include <tessera.h>

static const char *file_path;

static int die(const char *what)
{
    fprintf(stderr, "ckpt-craft %s: %s failed\n", file_path, what);
    return 1;
}

static int write_checksum(hid_t dset, uint64_t sum)
{
    if (H5Aexists(dset, "checksum") > 0 && H5Adelete(dset, "checksum") < 0)
        return -1;
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(dset, "checksum", H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, H5T_NATIVE_UINT64, &sum) : -1;
    H5Aclose(a);
    H5Sclose(space);
    return st < 0 ? -1 : 0;
}

static int set_attr(hid_t f, const char *group, const char *name, hid_t type, const void *value)
{
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0)
        return -1;
    if (H5Aexists(g, name) > 0)
        H5Adelete(g, name);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, type, value) : -1;
    H5Aclose(a);
    H5Sclose(space);
    H5Gclose(g);
    return st < 0 ? -1 : 0;
}

/* Replace dataset name by one of `type` and shape dims[0..rank), filled with zeros. */
static int replace(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims)
{
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    if (H5Ldelete(f, name, H5P_DEFAULT) < 0)
        return -1;
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    void *zeros = calloc(n, 8);
    herr_t st = d >= 0 && zeros ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) : -1;
    if (st >= 0)
        st = write_checksum(d, 0);
    free(zeros);
    H5Dclose(d);
    H5Sclose(space);
    return st < 0 ? -1 : 0;
}

/* Read a whole dataset as `mem` values of `size` bytes each (malloc'ed); *n elements. */
static void *read_all(hid_t d, hid_t mem, size_t size, hsize_t *n)
{
    hid_t space = H5Dget_space(d);
    *n = (hsize_t)H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    void *v = malloc(*n * size + 1);
    if (v && H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
        free(v);
        v = NULL;
    }
    return v;
}

static int poke(hid_t f, const char *name, long index, double value)
{
    hsize_t n;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    float *v = d >= 0 ? read_all(d, H5T_NATIVE_FLOAT, sizeof *v, &n) : NULL;
    int st = v && index >= 0 && (hsize_t)index < n ? 0 : -1;
    if (st == 0) {
        v[index] = (float)value;
        st = H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0 ? -1
             : write_checksum(d, tsr_ckpt_checksum(0, (size_t)n, v));
    }
    free(v);
    H5Dclose(d);
    return st;
}

static int write_i64(hid_t f, const char *name, long long value)
{
    hsize_t n;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    int64_t *v = d >= 0 ? read_all(d, H5T_NATIVE_INT64, sizeof *v, &n) : NULL;
    int st = v && n > 0 ? 0 : -1;
    if (st == 0) {
        v[0] = value;
        st = H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0 ? -1
             : write_checksum(d, tsr_ckpt_checksum_i64(0, (size_t)n, v));
    }
    free(v);
    H5Dclose(d);
    return st;
}

static int wide_checksum(hid_t f, const char *name)
{
    hsize_t n = 64;
    uint64_t v[64] = {0};
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0 || H5Adelete(d, "checksum") < 0)
        return -1;
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(d, "checksum", H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, H5T_NATIVE_UINT64, v) : -1;
    H5Aclose(a);
    H5Sclose(space);
    H5Dclose(d);
    return st < 0 ? -1 : 0;
}

/* Store the metadata checksum the attributes have now (read through Tessera's reader). */
static int seal(void)
{
    tsr_comm_t self = NULL;
    tsr_ckpt_reader_t r = NULL;
    uint64_t stored = 0, computed = 0;
    int ok = tsr_comm_create(MPI_COMM_SELF, &self) == TSR_OK && tsr_ckpt_reader_open(self, file_path, &r) == TSR_OK;
    tsr_status_t rc = ok ? tsr_ckpt_metadata_checksum(r, &stored, &computed) : TSR_ERR_IO;
    tsr_ckpt_reader_close(&r);
    tsr_comm_destroy(&self);
    if (rc != TSR_OK && rc != TSR_ERR_FORMAT) { /* a missing metadata_checksum is what seal adds */
        fprintf(stderr, "ckpt-craft %s: %s\n", file_path, tsr_last_error());
        return -1;
    }
    hid_t f = H5Fopen(file_path, H5F_ACC_RDWR, H5P_DEFAULT);
    int64_t sum = (int64_t)computed;
    int st = f >= 0 ? set_attr(f, "/", "metadata_checksum", H5T_STD_I64LE, &sum) : -1;
    H5Fclose(f);
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ckpt-craft FILE OP ARGS... (see the comment in tests/ckpt-craft.c)\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    file_path = argv[1];
    const char *op = argv[2];
    int st = -1;
    if (strcmp(op, "seal") == 0) {
        st = seal();
    } else {
        hid_t f = H5Fopen(file_path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (f < 0) {
            MPI_Finalize();
            return die("opening");
        }
        if (strcmp(op, "set-i64") == 0 && argc == 6) {
            int64_t v = strtoll(argv[5], NULL, 10);
            st = set_attr(f, argv[3], argv[4], H5T_NATIVE_INT64, &v);
        } else if (strcmp(op, "set-f64") == 0 && argc == 6) {
            double v = strtod(argv[5], NULL);
            st = set_attr(f, argv[3], argv[4], H5T_NATIVE_DOUBLE, &v);
        } else if (strcmp(op, "set-str") == 0 && (argc == 6 || argc == 7)) {
            hid_t t = H5Tcopy(H5T_C_S1);
            int nullpad = argc == 7 && strcmp(argv[6], "nullpad") == 0;
            H5Tset_size(t, strlen(argv[5]) + !nullpad);
            H5Tset_strpad(t, nullpad ? H5T_STR_NULLPAD : H5T_STR_NULLTERM);
            st = set_attr(f, argv[3], argv[4], t, argv[5]);
            H5Tclose(t);
        } else if (strcmp(op, "delete") == 0 && argc == 4) {
            st = H5Ldelete(f, argv[3], H5P_DEFAULT) < 0 ? -1 : 0;
        } else if (strcmp(op, "poke") == 0 && argc == 6) {
            st = poke(f, argv[3], strtol(argv[4], NULL, 10), strtod(argv[5], NULL));
        } else if (strcmp(op, "write-i64") == 0 && argc == 5) {
            st = write_i64(f, argv[3], strtoll(argv[4], NULL, 10));
        } else if (strcmp(op, "rank3") == 0 && argc == 4) {
            const hsize_t dims[3] = {2, 2, 2};
            st = replace(f, argv[3], H5T_IEEE_F32LE, 3, dims);
        } else if (strcmp(op, "retype") == 0 && argc == 4) {
            hid_t d = H5Dopen2(f, argv[3], H5P_DEFAULT), space = H5Dget_space(d);
            hsize_t dims[2] = {0, 0};
            int rank = H5Sget_simple_extent_ndims(space);
            if (rank == 1 || rank == 2)
                H5Sget_simple_extent_dims(space, dims, NULL);
            H5Sclose(space);
            H5Dclose(d);
            st = rank == 1 || rank == 2 ? replace(f, argv[3], H5T_STD_I32LE, rank, dims) : -1;
        } else if (strcmp(op, "reshape") == 0 && argc == 6) {
            const hsize_t dims[2] = {strtoull(argv[4], NULL, 10), strtoull(argv[5], NULL, 10)};
            st = replace(f, argv[3], H5T_IEEE_F32LE, 2, dims);
        } else if (strcmp(op, "wide-checksum") == 0 && argc == 4) {
            st = wide_checksum(f, argv[3]);
        } else {
            fprintf(stderr, "ckpt-craft: unknown operation or wrong arguments: %s\n", op);
            st = -2;
        }
        if (H5Fclose(f) < 0)
            st = -1;
    }
    MPI_Finalize();
    if (st == -2)
        return 2;
    return st < 0 ? die(op) : 0;
}
