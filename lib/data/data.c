/* data.c: llm.c token shards, the step-indexed loader, synthetic text. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

struct tsr_dataset {
    void *map;       /* the whole file, read-only */
    size_t map_size;
    const uint16_t *tokens;
    int64_t ntokens;
};

tsr_status_t tsr_dataset_open(const char *path, int vocab_size, tsr_dataset_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dataset *ds = tsr__calloc(1, sizeof *ds);
    struct stat st;
    int fd = -1;
    *out = NULL;
    TSR_CHECK(ds, TSR_ERR_OUT_OF_MEMORY, "no memory for a dataset");
    TSR_CHECK(vocab_size >= 1 && vocab_size <= 65536, TSR_ERR_INVALID_ARG,
              "vocabulary size %d: token shards hold uint16 tokens (1 to 65536)", vocab_size);
    TSR_CHECK(path && *path, TSR_ERR_INVALID_ARG, "the token shard's path is empty (expected a file)");
    /* O_NONBLOCK: a FIFO without a writer must not block the open; it is refused just below. */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    TSR_CHECK(fd >= 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_CHECK(fstat(fd, &st) == 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_TRY(tsr__check_regular(path, &st, "a token shard"));
    size_t header = TSR_DATA_HEADER_WORDS * sizeof(int32_t);
    TSR_CHECK((size_t)st.st_size >= header, TSR_ERR_FORMAT,
              "%s: %lld bytes, shorter than the %zu-byte header of a token shard", path, (long long)st.st_size,
              header);
    ds->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    TSR_CHECK(ds->map != MAP_FAILED, TSR_ERR_IO, "%s: cannot map it: %s", path, strerror(errno));
    ds->map_size = (size_t)st.st_size;
    const int32_t *h = ds->map;
    TSR_CHECK(h[0] == TSR_DATA_MAGIC, TSR_ERR_FORMAT, "%s: magic number %d, expected %d (an llm.c token shard)",
              path, h[0], TSR_DATA_MAGIC);
    TSR_CHECK(h[1] == 1, TSR_ERR_FORMAT, "%s: version %d, expected 1 (uint16 tokens)", path, h[1]);
    ds->ntokens = h[2];
    TSR_CHECK(h[2] >= 0 && (size_t)st.st_size == header + (size_t)h[2] * sizeof(uint16_t), TSR_ERR_FORMAT,
              "%s: the header says %d tokens (%zu bytes) but the file has %lld bytes", path, h[2],
              header + (size_t)(h[2] > 0 ? h[2] : 0) * sizeof(uint16_t), (long long)st.st_size);
    ds->tokens = (const uint16_t *)((const char *)ds->map + header);
    for (int64_t i = 0; i < ds->ntokens; i++)
        TSR_CHECK(ds->tokens[i] < vocab_size, TSR_ERR_INVALID_ARG,
                  "%s: token %d at position %lld is not below the vocabulary size %d", path, ds->tokens[i],
                  (long long)i, vocab_size);
    *out = ds;
    ds = NULL;
cleanup:
    if (fd >= 0)
        close(fd);
    tsr_dataset_close(&ds);
    return rc;
}

void tsr_dataset_close(tsr_dataset_t *ds)
{
    if (!ds || !*ds)
        return;
    if ((*ds)->map && (*ds)->map != MAP_FAILED)
        munmap((*ds)->map, (*ds)->map_size);
    free(*ds);
    *ds = NULL;
}

int64_t tsr_dataset_tokens(tsr_dataset_t ds)
{
    return ds->ntokens;
}

const uint16_t *tsr_dataset_data(tsr_dataset_t ds)
{
    return ds->tokens;
}

tsr_status_t tsr_dataset_write(const char *path, const uint16_t *tokens, int64_t n)
{
    tsr_status_t rc = TSR_OK;
    char *tmp = NULL;
    int32_t header[TSR_DATA_HEADER_WORDS] = {TSR_DATA_MAGIC, 1, (int32_t)n};
    FILE *f = NULL;
    TSR_CHECK(n >= 0 && n <= TSR_DATA_MAX_TOKENS, TSR_ERR_INVALID_ARG, "%lld tokens: a shard holds at most %d",
              (long long)n, TSR_DATA_MAX_TOKENS);
    TSR_CHECK(path && *path, TSR_ERR_INVALID_ARG, "the token shard's path is empty (expected a file)");
    TSR_CHECK(tmp = tsr__strdupf("%s.tmp", path), TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    f = fopen(tmp, "wb");
    TSR_CHECK(f, TSR_ERR_IO, "%s: %s", tmp, strerror(errno));
    TSR_CHECK(fwrite(header, sizeof header, 1, f) == 1 &&
                  (n == 0 || fwrite(tokens, sizeof *tokens, (size_t)n, f) == (size_t)n) && fflush(f) == 0 &&
                  fsync(fileno(f)) == 0,
              TSR_ERR_IO, "%s: %s", tmp, strerror(errno));
    TSR_CHECK(fclose(f) == 0, TSR_ERR_IO, "%s: %s", tmp, strerror(errno));
    f = NULL;
    TSR_CHECK(rename(tmp, path) == 0, TSR_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
cleanup:
    if (f) {
        fclose(f);
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

tsr_status_t tsr_dataset_batch(tsr_dataset_t ds, int64_t step, int global_batch, int seq_len, int first, int count,
                               int32_t *inputs, int32_t *targets)
{
    if (seq_len < 1 || global_batch < 1 || step < 0 || first < 0 || count < 0 || first + count > global_batch)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "batch of sequences %d+%d of %d at step %lld, length %d", first, count,
                         global_batch, (long long)step, seq_len);
    if (ds->ntokens < (int64_t)seq_len + 2)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "the dataset has %lld tokens, fewer than a sequence of %d needs (%d)",
                         (long long)ds->ntokens, seq_len, seq_len + 2);
    /* Starts advance by seq_len through the data and wrap; a sequence needs seq_len + 1 tokens. */
    uint64_t span = (uint64_t)(ds->ntokens - seq_len - 1);
    for (int i = 0; i < count; i++) {
        uint64_t j = (uint64_t)step * (uint64_t)global_batch + (uint64_t)(first + i);
        uint64_t start = j % span * (uint64_t)seq_len % span;
        const uint16_t *src = ds->tokens + start;
        for (int t = 0; t < seq_len; t++) {
            inputs[(size_t)i * seq_len + t] = src[t];
            targets[(size_t)i * seq_len + t] = src[t + 1];
        }
    }
    return TSR_OK;
}

/* A tiny grammar: "the <adj> <noun> <verb> the <noun> <place>." and variations. */
static const char *const subjects[] = {"the cat", "a dog", "the old man", "my sister", "the bird", "a child",
                                       "the teacher", "our neighbour"};
static const char *const verbs[] = {"sees", "likes", "finds", "follows", "watches", "carries", "draws", "calls"};
static const char *const objects[] = {"the ball", "a red box", "the small boat", "an apple", "the green hat",
                                      "a long letter", "the map", "a cup of tea"};
static const char *const places[] = {"in the garden", "by the river", "at home", "near the school",
                                     "on the hill", "under the tree", "in the kitchen", "at the market"};

#define PICK(list, r) list[(r) % (sizeof list / sizeof list[0])]

void tsr_data_synthetic_text(uint64_t seed, size_t bytes, char *out)
{
    size_t n = 0;
    for (uint64_t s = 0; n < bytes; s++) {
        uint32_t r[4];
        const uint32_t counter[4] = {(uint32_t)s, (uint32_t)(s >> 32), 0x74657874u /* "text" */, 0};
        const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
        tsr_philox4x32(counter, key, r);
        char sentence[160];
        int len = snprintf(sentence, sizeof sentence, "%s %s %s %s.%s", PICK(subjects, r[0]), PICK(verbs, r[1]),
                           PICK(objects, r[2]), PICK(places, r[3]), r[3] % 5 == 0 ? "\n" : " ");
        for (int i = 0; i < len && n < bytes; i++)
            out[n++] = i == 0 ? (char)(sentence[0] - 'a' + 'A') : sentence[i];
    }
}
