/**
 * @file tessera/data.h
 * @brief Token datasets in llm.c's shard formats, and a deterministic, layout-independent loader.
 *
 * A shard file is llm.c's: a header of 256 little-endian int32 words (magic, version, number
 * of tokens, the rest 0), then the tokens: magic 20240520 and version 1 for uint16 tokens
 * (GPT-2), magic 20240801 and version 7 for uint32 tokens (Llama 3). Datasets prepared for
 * llm.c work unchanged; tsr-tokenize makes byte-level shards (vocabulary 256) from text.
 *
 * A dataset is a list of shards, each holding at most 2^31 - 1 tokens, together any number.
 * Shard k is cut into n_k = (tokens_k - 1) / T sequences of T inputs (and T targets, the
 * next tokens), starting at tokens 0, T, 2T, ...; a sequence never crosses shards. The
 * sequences of all shards, in order, make one epoch of N = sum n_k. The loader is a pure
 * function of the global sequence index g: epoch g / N, sequence g mod N of it, or with
 * shuffling the sequence a bijection of (seed, epoch) puts there. At step s the global batch
 * is the G sequences from the loader's position on (the sequences consumed before it); every
 * data-parallel rank takes its own range of them, so the batch is the same for every layout,
 * and the loader's whole position is one number, which need not be a multiple of G.
 *
 * Tokens are checked against the vocabulary as they are read, so opening a dataset costs
 * the same whatever its size.
 */
#ifndef TESSERA_DATA_H
#define TESSERA_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** First header word of a shard of uint16 tokens (version 1). */
#define TSR_DATA_MAGIC 20240520
/** First header word of a shard of uint32 tokens (llm.c's Llama 3 shards). */
#define TSR_DATA_MAGIC_U32 20240801
/** The version word of a shard of uint32 tokens. */
#define TSR_DATA_VERSION_U32 7
/** Header words before the tokens. */
#define TSR_DATA_HEADER_WORDS 256
/** The most tokens a shard holds: its header counts them in an int32. */
#define TSR_DATA_MAX_TOKENS 2147483647

/** An opaque token dataset (a list of shards, memory-mapped). */
typedef struct tsr_dataset *tsr_dataset_t;

/**
 * Open the shards @p spec names: a path, a glob pattern ("fineweb_train_*.bin", expanded
 * in sorted order), or a comma-separated list of them. Each must be a regular file (a FIFO
 * or a directory is refused at once) with a valid header and size. Errors say what is
 * wrong, e.g. "data.bin: magic number 12345, expected 20240520 or 20240801 (an llm.c token
 * shard, uint16 or uint32)" or "train_*.bin matches no file (expected token shards)".
 * @p vocab_size (at least 1) bounds the tokens, checked as they are read.
 */
TSR_API tsr_status_t tsr_dataset_open(const char *spec, int vocab_size, tsr_dataset_t *out);

/** Close a dataset; NULLs *ds and accepts NULL. */
TSR_API void tsr_dataset_close(tsr_dataset_t *ds);

/** Number of tokens in the dataset, over all shards. */
TSR_API int64_t tsr_dataset_tokens(tsr_dataset_t ds);

/** Number of shards. */
TSR_API int tsr_dataset_shard_count(tsr_dataset_t ds);

/** Sequences of @p seq_len tokens in one epoch (N above). */
TSR_API int64_t tsr_dataset_sequences(tsr_dataset_t ds, int seq_len);

/**
 * Tokens [first, first + n) of the shards taken in order, into @p out. TSR_ERR_INVALID_ARG
 * for a range outside the data or a token not below the vocabulary (naming shard and position).
 */
TSR_API tsr_status_t tsr_dataset_read(tsr_dataset_t ds, int64_t first, int64_t n, int32_t *out);

/** Shuffle the sequences of each epoch (@p shuffle 1) by a bijection that is a function of
 * (@p seed, epoch) alone, or read them in order (0, the default). */
TSR_API void tsr_dataset_set_shuffle(tsr_dataset_t ds, int shuffle, uint64_t seed);

/**
 * Sequences [first, first + count) of the global batch of @p global_batch sequences that
 * starts at global sequence @p position, each of @p seq_len inputs and the next-token
 * targets: inputs[i * seq_len + t] and targets[i * seq_len + t] = the token after it.
 * TSR_ERR_INVALID_ARG if no shard holds seq_len + 1 tokens, or for a token not below the
 * vocabulary.
 */
TSR_API tsr_status_t tsr_dataset_batch(tsr_dataset_t ds, int64_t position, int global_batch, int seq_len, int first,
                                       int count, int32_t *inputs, int32_t *targets);

/** An opaque shard being written. */
typedef struct tsr_dataset_writer *tsr_dataset_writer_t;

/**
 * Start writing a shard of @p token_bytes 2 (uint16) or 4 (uint32) per token at @p path,
 * as path.tmp until tsr_dataset_writer_close() renames it: tokens are streamed to the file,
 * so memory does not depend on the shard's size.
 */
TSR_API tsr_status_t tsr_dataset_writer_create(const char *path, int token_bytes, tsr_dataset_writer_t *out);

/** Append @p n tokens (each must fit the shard's width; at most #TSR_DATA_MAX_TOKENS in all). */
TSR_API tsr_status_t tsr_dataset_writer_append(tsr_dataset_writer_t w, const uint32_t *tokens, size_t n);

/** Write the header, fsync, close and rename to the final path; always frees and NULLs *w. */
TSR_API tsr_status_t tsr_dataset_writer_close(tsr_dataset_writer_t *w);

/** Abandon a shard being written (its temporary file is removed); NULLs *w, accepts NULL. */
TSR_API void tsr_dataset_writer_abort(tsr_dataset_writer_t *w);

/** Write @p n uint16 tokens (at most #TSR_DATA_MAX_TOKENS) as a shard file, atomically. */
TSR_API tsr_status_t tsr_dataset_write(const char *path, const uint16_t *tokens, int64_t n);

/**
 * Deterministic synthetic English-like text for demos and tests: @p bytes characters from
 * a small grammar of sentences, a function of @p seed alone. Byte-level tokens of it have
 * enough structure for a tiny model to learn quickly.
 */
TSR_API void tsr_data_synthetic_text(uint64_t seed, size_t bytes, char *out);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_DATA_H */
