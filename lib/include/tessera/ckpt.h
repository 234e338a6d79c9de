/**
 * @file tessera/ckpt.h
 * @brief Checkpoints: one parallel HDF5 file of global, layout-independent datasets.
 *
 * Every rank of a job writes the pieces of each global tensor it holds, however the tensor
 * is split (tensor-parallel blocks, ZeRO shards of a flat buffer), into one dataset of the
 * tensor's global shape; any other layout reads back exactly the pieces it needs.
 *
 * A piece (::tsr_ckpt_piece_t) is a rectangular block of the global tensor and a contiguous
 * run of that block's elements in row-major order: a tensor-parallel block is the whole
 * block; a ZeRO shard is the part of a block that falls in this rank's slice of a flat
 * buffer. Across the ranks of a write, the pieces of one dataset must cover every element
 * exactly once (ranks that hold nothing, or hold a replica that another rank writes, pass
 * an empty piece); the writer checks that.
 *
 * The file (see doc/checkpoint.md):
 *
 *     /         attributes format="tessera-ckpt", version, step, created, metadata_checksum,
 *               and what callers add
 *     /config   attributes that must match on restart (tsr_ckpt_expect_*)
 *     /layout   attributes describing the writer's layout (information only)
 *     /params/<name>, /optim/<name>/m, ...   fp32 datasets in global shape
 *     /rng, /data ...                        small int64 datasets
 *
 * Each dataset carries a "checksum" attribute: for fp32, the sum modulo 2^64 over its
 * elements of a 64-bit mix of (global row-major index, value bits), which is the same
 * whatever layout computed it (tsr_ckpt_checksum()); for int64, the same with a mix of the
 * 64-bit values (tsr_ckpt_checksum_i64()). The root attribute metadata_checksum (format
 * version 2 on) covers every attribute of every group, so that no value a resume reads (a
 * step, a loss scale, a configuration) can change unnoticed. fp32 datasets hold finite
 * values only, and /optim/<name>/v (a second moment) none below 0.
 *
 * Commit is atomic: the file is written as <dir>/step_<N>.h5.<job>.tmp (a name of its own
 * for each writer, so two jobs never write one file), closed, fsync'ed and renamed to
 * step_<N>.h5; then <dir>/latest (one line: the file name) is replaced by rename. A failure
 * on any rank, a full disk included, removes the temporary file and leaves earlier
 * checkpoints and latest untouched; every rank returns the same one-line error.
 *
 * Tessera turns off HDF5's automatic printing of its error stack (H5Eset_auto2) when this
 * module is first used: HDF5's failures come back as one line through tsr_last_error().
 *
 * All functions taking a writer or reader are collective over its communicator and must be
 * called by every rank in the same order with the same names and shapes.
 */
#ifndef TESSERA_CKPT_H
#define TESSERA_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/comm.h>
#include <tessera/grid.h>
#include <tessera/status.h>
#include <tessera/visibility.h>
#include <tessera/zero.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Value of the root attribute "format". */
#define TSR_CKPT_FORMAT "tessera-ckpt"
/** Value of the root attribute "version" written by this library. */
#define TSR_CKPT_VERSION 2

/** The part of a global tensor (1D or 2D, row-major) that one rank writes or reads. */
typedef struct tsr_ckpt_piece {
    int64_t row0, rows; /**< the block's rows in the global tensor (1D tensors: 0 and 1) */
    int64_t col0, cols; /**< the block's columns (1D tensors: the element range) */
    int64_t offset;     /**< first element of the run, counted row-major inside the block */
    int64_t count;      /**< elements in the run (0: this rank has nothing for this dataset) */
} tsr_ckpt_piece_t;

/** A piece that is a whole rows × cols block at (row0, col0). */
TSR_API tsr_ckpt_piece_t tsr_ckpt_block(int64_t row0, int64_t rows, int64_t col0, int64_t cols);

/** The empty piece. */
TSR_API tsr_ckpt_piece_t tsr_ckpt_nothing(void);

/** An opaque checkpoint being written. */
typedef struct tsr_ckpt_writer *tsr_ckpt_writer_t;

/** An opaque checkpoint open for reading. */
typedef struct tsr_ckpt_reader *tsr_ckpt_reader_t;

/**
 * Start writing checkpoint @p step into directory @p dir (created if missing) as
 * dir/step_<step>.h5.<job>.tmp. Writes the root attributes format, version, step and created.
 *
 * Rank 0 sets aside 1 MiB and 4 KiB per dataset beside the file (a .reserve) until it is
 * closed, and reserves each dataset's bytes before they are written: a full disk fails the
 * write at an agreed point with the errno text and the path ("No space left on device"),
 * and the file can still be closed and removed. TSR_ERR_IO if @p dir is not a writable
 * directory.
 *
 * For tests, TSR_CKPT_FAULT="RANK:DATASET" makes rank RANK fail just before it writes
 * DATASET (e.g. "1:/params/wte"), as a failing disk would; a malformed value is an error.
 */
TSR_API tsr_status_t tsr_ckpt_writer_create(tsr_comm_t comm, const char *dir, int64_t step,
                                            tsr_ckpt_writer_t *out);

/**
 * Write one fp32 dataset of global shape @p dims (@p ndim 1 or 2). @p data holds this
 * rank's piece->count values. Fails if the ranks' pieces do not cover the dataset exactly,
 * or if a value is not finite (or, in a dataset /optim/<name>/v, negative).
 */
TSR_API tsr_status_t tsr_ckpt_write_f32(tsr_ckpt_writer_t w, const char *name, int ndim, const int64_t dims[],
                                        const tsr_ckpt_piece_t *piece, const float *data);

/** Write a small int64 dataset of @p n values; rank 0's values are the ones written, with
 * their checksum. */
TSR_API tsr_status_t tsr_ckpt_write_i64(tsr_ckpt_writer_t w, const char *name, int64_t n, const int64_t *values);

/** Set an integer attribute on group @p group ("/", "/config", "/layout"; created if needed;
 * written "/a/b", without a trailing '/'). Every rank passes the same value. */
TSR_API tsr_status_t tsr_ckpt_set_i64(tsr_ckpt_writer_t w, const char *group, const char *name, int64_t value);

/** Set a floating-point attribute on @p group. */
TSR_API tsr_status_t tsr_ckpt_set_f64(tsr_ckpt_writer_t w, const char *group, const char *name, double value);

/** Set a string attribute on @p group. */
TSR_API tsr_status_t tsr_ckpt_set_str(tsr_ckpt_writer_t w, const char *group, const char *name, const char *value);

/**
 * Close the file, make it durable and publish it: rename to dir/step_<N>.h5, point
 * dir/latest at it, and delete older step files beyond the newest @p keep (0 keeps all).
 * If any rank failed at any point since the writer was created, nothing is published, the
 * temporary file is removed, and every rank returns the failing rank's error, e.g.
 * "rank 1 failed writing /params/wte: ...". Always frees the writer and NULLs *w.
 */
TSR_API tsr_status_t tsr_ckpt_commit(tsr_ckpt_writer_t *w, int keep);

/**
 * Mark the checkpoint as failed on this rank, for an error the caller met between writes
 * (its detail is taken from tsr_last_error()): tsr_ckpt_commit() then publishes nothing and
 * reports it on every rank. Local; the ranks learn of it at the writer's next step.
 */
TSR_API void tsr_ckpt_writer_fail(tsr_ckpt_writer_t w, tsr_status_t status);

/** Abandon a checkpoint being written: remove the temporary file, free, NULL *w. Accepts NULL. */
TSR_API void tsr_ckpt_abort(tsr_ckpt_writer_t *w);

/**
 * The path of the checkpoint dir/latest names, written into @p path (@p len bytes; the name
 * is at most NAME_MAX bytes, so strlen(dir) + NAME_MAX + 2 always suffice).
 * TSR_ERR_IO if the directory has no latest, TSR_ERR_FORMAT if latest does not hold one
 * file name, TSR_ERR_INVALID_ARG if the path does not fit in @p len.
 */
TSR_API tsr_status_t tsr_ckpt_latest(const char *dir, char *path, size_t len);

/** The HDF5 library the checkpoints go through, as H5get_libversion() gives it at run time
 * ("HDF5 1.10.8"). */
TSR_API const char *tsr_ckpt_hdf5_version(void);

/**
 * Open a checkpoint file. Checks that it is a regular file (not a FIFO, which would block,
 * nor a directory), an HDF5 file with format "tessera-ckpt" and a version this library
 * reads, with one-line errors naming what is wrong otherwise.
 */
TSR_API tsr_status_t tsr_ckpt_reader_open(tsr_comm_t comm, const char *path, tsr_ckpt_reader_t *out);

/** Close a reader; NULLs *r and accepts NULL. */
TSR_API void tsr_ckpt_reader_close(tsr_ckpt_reader_t *r);

/**
 * Verify the whole file: tsr_ckpt_verify_metadata(), tsr_ckpt_verify_dataset() for every
 * dataset, then tsr_ckpt_verify_state(). The first failure is returned, naming what is
 * wrong: TSR_ERR_CORRUPT for a checksum or a value, TSR_ERR_FORMAT for the structure.
 */
TSR_API tsr_status_t tsr_ckpt_verify(tsr_ckpt_reader_t r);

/**
 * Recompute one dataset's checksum (fp32: each rank reads a slice; int64: whole) and compare
 * it with the stored one; an fp32 dataset must also hold finite values only, and a second
 * moment /optim/<name>/v none below 0. Other element types are TSR_ERR_FORMAT.
 */
TSR_API tsr_status_t tsr_ckpt_verify_dataset(tsr_ckpt_reader_t r, const char *name);

/**
 * Recompute the checksum over every attribute of every group and compare it with the root
 * attribute metadata_checksum: TSR_ERR_CORRUPT if an attribute was changed, added or
 * removed; TSR_ERR_FORMAT for a file of format version 1, which has none.
 */
TSR_API tsr_status_t tsr_ckpt_verify_metadata(tsr_ckpt_reader_t r);

/**
 * The metadata checksum as stored and as computed from the attributes (tools that edit a
 * checkpoint on purpose re-seal it with this value). TSR_ERR_FORMAT if none is stored.
 */
TSR_API tsr_status_t tsr_ckpt_metadata_checksum(tsr_ckpt_reader_t r, uint64_t *stored, uint64_t *computed);

/**
 * Check the optimizer state that tsr_ckpt_save_zero() writes, where the file has one (an
 * /optim attribute step): /config optimizer is "adamw" or "sgd"; every /params/<name> has
 * the moments its optimizer keeps (AdamW: /optim/<name>/m and v; SGD: m for all or none),
 * of its shape; no moment without its parameter; /optim step and good_steps are not
 * negative and loss_scale is finite and positive. Where the file has /data/tokens (the
 * loader's position, in tokens), it is one value, equal to the root attribute tokens_seen.
 */
TSR_API tsr_status_t tsr_ckpt_verify_state(tsr_ckpt_reader_t r);

/** What tsr_ckpt_list() reports of one dataset. */
typedef struct tsr_ckpt_dataset_info {
    char name[256];      /**< full path, e.g. "/params/wte" */
    int ndim;            /**< 1 or 2 */
    int64_t dims[2];     /**< global shape (dims[1] is 0 for 1D) */
    int is_float;        /**< 1 for fp32 tensors, 0 otherwise (int64 data) */
    char type[16];       /**< the element type: "float32", "int64", or what else the file has */
    int has_checksum;    /**< whether a checksum attribute is stored */
    uint64_t checksum;   /**< the stored checksum */
} tsr_ckpt_dataset_info_t;

/** A dataset's shape as text, "1024" (1-D) or "85 x 1024" (2-D), into @p buf. @return buf. */
TSR_API char *tsr_ckpt_format_shape(int ndim, const int64_t dims[2], char *buf, size_t len);

/** Every dataset of the file, in name order, in a malloc'ed array (*out, *n; free() it). */
TSR_API tsr_status_t tsr_ckpt_list(tsr_ckpt_reader_t r, tsr_ckpt_dataset_info_t **out, size_t *n);

/** Called by tsr_ckpt_attrs() with each attribute's name and its value as text. */
typedef void (*tsr_ckpt_attr_fn)(const char *name, const char *value, void *ctx);

/** Call @p fn for each attribute of @p group (TSR_ERR_FORMAT if the group is missing). */
TSR_API tsr_status_t tsr_ckpt_attrs(tsr_ckpt_reader_t r, const char *group, tsr_ckpt_attr_fn fn, void *ctx);

/**
 * Read this rank's piece of an fp32 dataset, which must have exactly the shape @p dims.
 * If any rank fails (a bad piece, a read error), every rank returns that rank's error.
 */
TSR_API tsr_status_t tsr_ckpt_read_f32(tsr_ckpt_reader_t r, const char *name, int ndim, const int64_t dims[],
                                       const tsr_ckpt_piece_t *piece, float *data);

/** Read a small int64 dataset of exactly @p n values on every rank, checking its checksum. */
TSR_API tsr_status_t tsr_ckpt_read_i64(tsr_ckpt_reader_t r, const char *name, int64_t n, int64_t *values);

/** Read an integer attribute. TSR_ERR_FORMAT if it is missing or not one integer. */
TSR_API tsr_status_t tsr_ckpt_get_i64(tsr_ckpt_reader_t r, const char *group, const char *name, int64_t *value);

/** Read a floating-point attribute. TSR_ERR_FORMAT if it is missing or not one float. */
TSR_API tsr_status_t tsr_ckpt_get_f64(tsr_ckpt_reader_t r, const char *group, const char *name, double *value);

/** Read a string attribute into @p buf (@p len bytes, truncated and NUL-terminated): fixed-
 * length with any padding (h5py writes NULLPAD) or variable-length. */
TSR_API tsr_status_t tsr_ckpt_get_str(tsr_ckpt_reader_t r, const char *group, const char *name, char *buf,
                                      size_t len);

/**
 * Check that integer attribute group/name equals @p expected: TSR_ERR_MISMATCH otherwise,
 * e.g. "checkpoint /config n_layer is 12, this run has 6".
 */
TSR_API tsr_status_t tsr_ckpt_expect_i64(tsr_ckpt_reader_t r, const char *group, const char *name,
                                         int64_t expected);

/** Check that string attribute group/name equals @p expected, as tsr_ckpt_expect_i64(). */
TSR_API tsr_status_t tsr_ckpt_expect_str(tsr_ckpt_reader_t r, const char *group, const char *name,
                                         const char *expected);

/** The checksum of @p n values forming elements [first, first + n) of a tensor, row-major. */
TSR_API uint64_t tsr_ckpt_checksum(uint64_t first, size_t n, const float *values);

/** The checksum of elements [first, first + n) of an int64 dataset. */
TSR_API uint64_t tsr_ckpt_checksum_i64(uint64_t first, size_t n, const int64_t *values);

/* ---- One job per checkpoint directory (lib/ckpt/lock.c) ---- */

/** An opaque lock on a checkpoint directory. */
typedef struct tsr_ckpt_lock *tsr_ckpt_lock_t;

/**
 * Prepare @p dir for this job's checkpoints and lock it: rank 0 creates it if missing,
 * checks that it is a directory, takes a write lock on dir/lock (writing "pid P on HOST since
 * TIME" into it), creates, writes and removes a probe file, and removes the temporary files
 * of jobs that died. The lock lasts until tsr_ckpt_unlock() or the end of the process (a
 * killed job leaves no stale lock). Collective; every rank gets rank 0's verdict:
 * TSR_ERR_IO "checkpoint directory D is in use by another job (pid 1234 on node7 since ...
 * holds D/lock; ...)", or naming what cannot be created, written or removed. Call it before
 * training, so a bad --ckpt-dir fails before the first step.
 */
TSR_API tsr_status_t tsr_ckpt_lock(tsr_comm_t comm, const char *dir, tsr_ckpt_lock_t *out);

/** Release the lock; NULLs *lock and accepts NULL. Local. */
TSR_API void tsr_ckpt_unlock(tsr_ckpt_lock_t *lock);

/* ---- Saving and restoring a ZeRO optimizer (lib/ckpt/state.c) ---- */

/**
 * Write the whole state of @p opt: /params/<name>, /optim/<name>/m (AdamW, or SGD with
 * momentum) and /optim/<name>/v (AdamW) for every tensor registered on any rank, in its
 * global shape (a 1 x n tensor as a 1-D dataset of n); attributes /optim step, loss_scale,
 * good_steps and the hyperparameters (tsr_ckpt_get_zero_config()); /config optimizer ("adamw" or "sgd"); /layout layout, zero_stage, optimizer.
 * Each element is written by the one rank the ownership rule of tessera/zero.h names.
 *
 * @p w must have been created on tsr_grid_comm(@p grid, TSR_AXIS_WORLD), the grid @p opt
 * lives on; @p cfg is the configuration @p opt was created with (the handle does not expose
 * its stage and kind). Collective over the grid; the ranks first agree on the list of
 * tensors (pipeline stages register different ones), so every rank names every dataset.
 * On failure the checkpoint is incomplete: call tsr_ckpt_abort() (tsr_ckpt_commit() also
 * refuses to publish it when the writer failed, e.g. under TSR_CKPT_FAULT).
 */
TSR_API tsr_status_t tsr_ckpt_save_zero(tsr_ckpt_writer_t w, tsr_grid_t grid, tsr_zero_t opt,
                                        const tsr_zero_config_t *cfg);

/**
 * Restore @p opt (committed, on any layout and ZeRO stage) from a checkpoint written by
 * tsr_ckpt_save_zero(): each rank reads every element it stores, then the scalar state is
 * set and tsr_zero_sync_params() refreshes the working parameters. @p r and @p cfg as for
 * tsr_ckpt_save_zero(). Collective over the grid.
 *
 * Before anything is read into @p opt, TSR_ERR_MISMATCH names the first difference: the
 * optimizer kind (/config optimizer), a tensor missing from the checkpoint or of another
 * shape, or a checkpoint tensor the model lacks; @p opt is then untouched. The ranks'
 * ownership ranges are checksummed as they are read: TSR_ERR_CORRUPT names a dataset that
 * differs from its stored checksum or holds a value that is not finite (or a negative second
 * moment), and then (as after a read error) @p opt holds a partial state and must be loaded
 * again or discarded.
 *
 * Every value read is covered by a checksum: the attributes by tsr_ckpt_verify_metadata(),
 * checked first. The scalars must be consistent with @p cfg: step and good_steps not
 * negative; without dynamic loss scaling, loss_scale 1 and good_steps 0; with it, a finite,
 * positive loss_scale and good_steps below the window.
 */
TSR_API tsr_status_t tsr_ckpt_load_zero(tsr_ckpt_reader_t r, tsr_grid_t grid, tsr_zero_t opt,
                                        const tsr_zero_config_t *cfg);

/**
 * The optimizer configuration a checkpoint of tsr_ckpt_save_zero() records, into @p cfg
 * (from #TSR_ZERO_CONFIG_INIT): the kind (/config optimizer), the ZeRO stage (/layout
 * zero_stage), and the hyperparameters as /optim attributes lr, lr_schedule ("constant",
 * "cosine", "linear"), warmup_steps, total_steps, min_lr, weight_decay, beta1, beta2, eps,
 * momentum and clip_norm. A resume may change these (tsr-train warns); the kind it may not
 * (tsr_ckpt_load_zero()). TSR_ERR_FORMAT where one is missing (a file written before they
 * were recorded) or out of range. Local.
 */
TSR_API tsr_status_t tsr_ckpt_get_zero_config(tsr_ckpt_reader_t r, tsr_zero_config_t *cfg);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CKPT_H */
