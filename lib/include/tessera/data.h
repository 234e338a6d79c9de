/**
 * @file tessera/data.h
 * @brief Token datasets in llm.c's shard format, and a deterministic, layout-independent loader.
 *
 * A shard file is llm.c's: a header of 256 little-endian int32 words (magic 20240520,
 * version 1, number of tokens, the rest 0), then the tokens as uint16. Datasets prepared
 * for llm.c work unchanged; tsr-tokenize makes byte-level shards (vocabulary 256) from text.
 *
 * The loader is a pure function of (step, sequence index): at step s the global batch is
 * G sequences of T + 1 tokens, sequence j starting at token ((s * G + j) * T) modulo
 * (tokens - T - 1), read in order through the data. Every data-parallel rank takes its own
 * range of j, so the global batch is the same for every layout, and the loader's whole
 * position is the step number.
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

/** First header word of a token shard. */
#define TSR_DATA_MAGIC 20240520
/** Header words before the tokens. */
#define TSR_DATA_HEADER_WORDS 256
/** The most tokens a shard holds: its header counts them in an int32. */
#define TSR_DATA_MAX_TOKENS 2147483647

/** An opaque token dataset (one shard, memory-mapped). */
typedef struct tsr_dataset *tsr_dataset_t;

/**
 * Open a shard and check it: a regular file (a FIFO or a directory is refused at once),
 * header, size, and every token below @p vocab_size.
 * Errors say what is wrong, e.g. "data.bin: magic number 12345, expected 20240520 (an
 * llm.c token shard)" or "data.bin: token 300 at position 17 is not below the vocabulary
 * size 256".
 */
TSR_API tsr_status_t tsr_dataset_open(const char *path, int vocab_size, tsr_dataset_t *out);

/** Close a dataset; NULLs *ds and accepts NULL. */
TSR_API void tsr_dataset_close(tsr_dataset_t *ds);

/** Number of tokens in the dataset. */
TSR_API int64_t tsr_dataset_tokens(tsr_dataset_t ds);

/** The tokens themselves (read-only, tsr_dataset_tokens() of them). */
TSR_API const uint16_t *tsr_dataset_data(tsr_dataset_t ds);

/** Write @p n tokens (at most #TSR_DATA_MAX_TOKENS) as a shard file (atomically: a temporary
 * file, then rename). */
TSR_API tsr_status_t tsr_dataset_write(const char *path, const uint16_t *tokens, int64_t n);

/**
 * Sequences [first, first + count) of the global batch of step @p step, each of
 * @p seq_len inputs and the next-token targets: inputs[i * seq_len + t] and
 * targets[i * seq_len + t] = the token after it. @p global_batch is G above.
 * TSR_ERR_INVALID_ARG if the dataset has fewer than seq_len + 2 tokens.
 */
TSR_API tsr_status_t tsr_dataset_batch(tsr_dataset_t ds, int64_t step, int global_batch, int seq_len, int first,
                                       int count, int32_t *inputs, int32_t *targets);

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
