/* data.c: llm.c token shards (uint16 and uint32), shard lists and globs, the sequence-indexed
 * loader with its per-epoch shuffle, the shard writer, synthetic text. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

typedef struct shard {
    char *path;
    void *map;        /* the whole file, read-only (NULL for a file of no tokens) */
    size_t map_size;
    const unsigned char *tokens;
    int width;        /* bytes per token: 2 or 4 */
    int64_t ntokens;
    int64_t first_seq; /* the index of its first sequence, for the cached sequence length */
} shard_t;

struct tsr_dataset {
    shard_t *shards;
    int nshards;
    int64_t ntokens;
    int vocab;
    int shuffle;
    uint64_t seed;
    int seq_len;       /* the sequence length first_seq and nseq are cached for (0: none) */
    int64_t nseq;      /* sequences per epoch at seq_len */
};

static uint32_t token_at(const shard_t *s, int64_t i)
{
    if (s->width == 2) {
        uint16_t v;
        memcpy(&v, s->tokens + 2 * i, 2);
        return v;
    }
    uint32_t v;
    memcpy(&v, s->tokens + 4 * i, 4);
    return v;
}

/* Map one shard and check its header and size (the tokens are checked as they are read). */
static tsr_status_t open_shard(const char *path, shard_t *s)
{
    tsr_status_t rc = TSR_OK;
    struct stat st;
    int32_t h[TSR_DATA_HEADER_WORDS];
    size_t header = sizeof h;
    /* O_NONBLOCK: a FIFO without a writer must not block the open; it is refused just below. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    TSR_CHECK(s->path = tsr__strdupf("%s", path), TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    TSR_CHECK(fd >= 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_CHECK(fstat(fd, &st) == 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_TRY(tsr__check_regular(path, &st, "a token shard"));
    TSR_CHECK((size_t)st.st_size >= header, TSR_ERR_FORMAT,
              "%s: %lld bytes, shorter than the %zu-byte header of a token shard", path, (long long)st.st_size,
              header);
    TSR_CHECK(pread(fd, h, header, 0) == (ssize_t)header, TSR_ERR_IO, "%s: cannot read its header: %s", path,
              strerror(errno));
    TSR_CHECK(h[0] == TSR_DATA_MAGIC || h[0] == TSR_DATA_MAGIC_U32, TSR_ERR_FORMAT,
              "%s: magic number %d, expected %d or %d (an llm.c token shard, uint16 or uint32)", path, h[0],
              TSR_DATA_MAGIC, TSR_DATA_MAGIC_U32);
    s->width = h[0] == TSR_DATA_MAGIC ? 2 : 4;
    int version = s->width == 2 ? 1 : TSR_DATA_VERSION_U32;
    TSR_CHECK(h[1] == version, TSR_ERR_FORMAT, "%s: version %d, expected %d (%s tokens)", path, h[1], version,
              s->width == 2 ? "uint16" : "uint32");
    TSR_CHECK(h[2] >= 0 && (uint64_t)st.st_size == header + (uint64_t)h[2] * (uint64_t)s->width, TSR_ERR_FORMAT,
              "%s: the header says %d tokens (%llu bytes) but the file has %lld bytes", path, h[2],
              (unsigned long long)(header + (uint64_t)(h[2] > 0 ? h[2] : 0) * (uint64_t)s->width),
              (long long)st.st_size);
    s->ntokens = h[2];
    if (s->ntokens > 0) {
        s->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        TSR_CHECK(s->map != MAP_FAILED, TSR_ERR_IO, "%s: cannot map it: %s", path, strerror(errno));
        s->map_size = (size_t)st.st_size;
        s->tokens = (const unsigned char *)s->map + header;
    }
cleanup:
    if (s->map == MAP_FAILED)
        s->map = NULL;
    if (fd >= 0)
        close(fd);
    return rc;
}

static int has_glob_chars(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* Append the shards one comma-separated item names: a path, or a glob pattern (sorted). */
static tsr_status_t add_item(struct tsr_dataset *ds, const char *item)
{
    tsr_status_t rc = TSR_OK;
    glob_t g = {0};
    int globbed = 0;
    size_t n = 1;
    TSR_CHECK(*item, TSR_ERR_INVALID_ARG, "an empty name in the list of token shards (expected FILE[,FILE...])");
    if (has_glob_chars(item)) {
        int e = glob(item, GLOB_ERR, NULL, &g);
        globbed = 1;
        TSR_CHECK(e != GLOB_NOMATCH, TSR_ERR_IO, "%s matches no file (expected token shards)", item);
        TSR_CHECK(e == 0, TSR_ERR_IO, "%s: cannot expand the pattern: %s", item, strerror(errno));
        n = g.gl_pathc;
    }
    shard_t *grown = realloc(ds->shards, (size_t)(ds->nshards + (int)n) * sizeof *grown);
    TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for %zu more shards", n);
    ds->shards = grown;
    for (size_t i = 0; i < n; i++) {
        shard_t *s = &ds->shards[ds->nshards++];
        memset(s, 0, sizeof *s);
        TSR_TRY(open_shard(globbed ? g.gl_pathv[i] : item, s));
        ds->ntokens += s->ntokens;
    }
cleanup:
    if (globbed)
        globfree(&g);
    return rc;
}

tsr_status_t tsr_dataset_open(const char *spec, int vocab_size, tsr_dataset_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dataset *ds = tsr__calloc(1, sizeof *ds);
    char *list = NULL;
    *out = NULL;
    TSR_CHECK(ds, TSR_ERR_OUT_OF_MEMORY, "no memory for a dataset");
    TSR_CHECK(vocab_size >= 1, TSR_ERR_INVALID_ARG, "vocabulary size %d: expected at least 1", vocab_size);
    TSR_CHECK(spec && *spec, TSR_ERR_INVALID_ARG, "the token shard's path is empty (expected a file)");
    TSR_CHECK(list = tsr__strdupf("%s", spec), TSR_ERR_OUT_OF_MEMORY, "no memory for the list of shards");
    ds->vocab = vocab_size;
    for (char *item = list, *next; item; item = next) {
        next = strchr(item, ',');
        if (next)
            *next++ = '\0';
        TSR_TRY(add_item(ds, item));
    }
    *out = ds;
    ds = NULL;
cleanup:
    free(list);
    tsr_dataset_close(&ds);
    return rc;
}

void tsr_dataset_close(tsr_dataset_t *ds)
{
    if (!ds || !*ds)
        return;
    for (int i = 0; i < (*ds)->nshards; i++) {
        if ((*ds)->shards[i].map)
            munmap((*ds)->shards[i].map, (*ds)->shards[i].map_size);
        free((*ds)->shards[i].path);
    }
    free((*ds)->shards);
    free(*ds);
    *ds = NULL;
}

int64_t tsr_dataset_tokens(tsr_dataset_t ds)
{
    return ds->ntokens;
}

int tsr_dataset_shard_count(tsr_dataset_t ds)
{
    return ds->nshards;
}

void tsr_dataset_set_shuffle(tsr_dataset_t ds, int shuffle, uint64_t seed)
{
    ds->shuffle = shuffle != 0;
    ds->seed = seed;
}

/* The token and where it is, checked against the vocabulary. */
static tsr_status_t checked_token(const struct tsr_dataset *ds, const shard_t *s, int64_t i, int32_t *out)
{
    uint32_t v = token_at(s, i);
    if (v >= (uint32_t)ds->vocab)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: token %lu at position %lld is not below the vocabulary size %d",
                         s->path, (unsigned long)v, (long long)i, ds->vocab);
    *out = (int32_t)v;
    return TSR_OK;
}

tsr_status_t tsr_dataset_read(tsr_dataset_t ds, int64_t first, int64_t n, int32_t *out)
{
    if (first < 0 || n < 0 || first > ds->ntokens - n)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tokens [%lld, %lld) of a dataset of %lld", (long long)first,
                         (long long)(first + n), (long long)ds->ntokens);
    int k = 0;
    for (int64_t done = 0; done < n;) {
        while (first >= ds->shards[k].ntokens)
            first -= ds->shards[k++].ntokens;
        const shard_t *s = &ds->shards[k];
        for (; done < n && first < s->ntokens; first++, done++) {
            tsr_status_t rc = checked_token(ds, s, first, &out[done]);
            if (rc != TSR_OK)
                return rc;
        }
    }
    return TSR_OK;
}

/* Cache each shard's first sequence index for sequences of seq_len tokens (+1 target). */
static void index_sequences(struct tsr_dataset *ds, int seq_len)
{
    if (ds->seq_len == seq_len)
        return;
    int64_t n = 0;
    for (int k = 0; k < ds->nshards; k++) {
        ds->shards[k].first_seq = n;
        n += ds->shards[k].ntokens > seq_len ? (ds->shards[k].ntokens - 1) / seq_len : 0;
    }
    ds->nseq = n;
    ds->seq_len = seq_len;
}

int64_t tsr_dataset_sequences(tsr_dataset_t ds, int seq_len)
{
    if (seq_len < 1)
        return 0;
    index_sequences(ds, seq_len);
    return ds->nseq;
}

/*
 * The shuffle: a bijection of [0, n) for each epoch, a 6-round Feistel network on the
 * smallest even number of bits that holds n, keyed by (seed, epoch) through Philox; values
 * outside [0, n) walk the cycle again (fewer than 4 rounds of it on average). Memory does not
 * depend on n.
 */
static int64_t permute(uint64_t seed, int64_t epoch, int64_t n, int64_t i)
{
    int half = 1;
    while ((int64_t)1 << (2 * half) < n)
        half++;
    uint64_t mask = ((uint64_t)1 << half) - 1, x = (uint64_t)i;
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    do {
        uint64_t l = x >> half, r = x & mask;
        for (uint32_t round = 0; round < 6; round++) {
            uint32_t o[4];
            const uint32_t counter[4] = {(uint32_t)r, round, (uint32_t)epoch, (uint32_t)((uint64_t)epoch >> 32)};
            tsr_philox4x32(counter, key, o);
            uint64_t f = (((uint64_t)o[1] << 32) | o[0]) & mask;
            uint64_t t = l ^ f;
            l = r;
            r = t;
        }
        x = (l << half) | r;
    } while (x >= (uint64_t)n);
    return (int64_t)x;
}

tsr_status_t tsr_dataset_batch(tsr_dataset_t ds, int64_t position, int global_batch, int seq_len, int first,
                               int count, int32_t *inputs, int32_t *targets)
{
    if (seq_len < 1 || global_batch < 1 || position < 0 || first < 0 || count < 0 || first + count > global_batch)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "batch of sequences %d+%d of %d at sequence %lld, length %d", first,
                         count, global_batch, (long long)position, seq_len);
    index_sequences(ds, seq_len);
    if (ds->nseq < 1)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "the data has no shard of %d tokens or more, which one sequence of %d needs (%lld tokens in "
                         "%d shards)", seq_len + 1, seq_len, (long long)ds->ntokens, ds->nshards);
    for (int i = 0; i < count; i++) {
        int64_t g = position + first + i, epoch = g / ds->nseq, j = g % ds->nseq;
        if (ds->shuffle)
            j = permute(ds->seed, epoch, ds->nseq, j);
        /* The last shard whose first sequence is <= j: one with sequences (a shorter shard has
         * the first index of the next). */
        int lo = 0, hi = ds->nshards - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (ds->shards[mid].first_seq <= j)
                lo = mid;
            else
                hi = mid - 1;
        }
        const shard_t *s = &ds->shards[lo];
        int64_t start = (j - s->first_seq) * seq_len;
        int32_t *x = inputs + (size_t)i * seq_len, *y = targets + (size_t)i * seq_len;
        for (int t = 0; t < seq_len; t++) {
            tsr_status_t rc = checked_token(ds, s, start + t, &x[t]);
            if (rc != TSR_OK)
                return rc;
        }
        memcpy(y, x + 1, (size_t)(seq_len - 1) * sizeof *y);
        tsr_status_t rc = checked_token(ds, s, start + seq_len, &y[seq_len - 1]);
        if (rc != TSR_OK)
            return rc;
    }
    return TSR_OK;
}

/* ---- writing shards ---- */

struct tsr_dataset_writer {
    char *path, *tmp;
    FILE *f;
    int width;
    int64_t n;
};

tsr_status_t tsr_dataset_writer_create(const char *path, int token_bytes, tsr_dataset_writer_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dataset_writer *w = tsr__calloc(1, sizeof *w);
    int32_t header[TSR_DATA_HEADER_WORDS] = {0};
    *out = NULL;
    TSR_CHECK(w, TSR_ERR_OUT_OF_MEMORY, "no memory for a shard writer");
    TSR_CHECK(token_bytes == 2 || token_bytes == 4, TSR_ERR_INVALID_ARG,
              "%d bytes per token: a shard holds uint16 (2) or uint32 (4) tokens", token_bytes);
    TSR_CHECK(path && *path, TSR_ERR_INVALID_ARG, "the token shard's path is empty (expected a file)");
    w->width = token_bytes;
    TSR_CHECK((w->path = tsr__strdupf("%s", path)) && (w->tmp = tsr__strdupf("%s.tmp", path)), TSR_ERR_OUT_OF_MEMORY,
              "no memory for a path");
    w->f = fopen(w->tmp, "wb");
    TSR_CHECK(w->f, TSR_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    TSR_CHECK(fwrite(header, sizeof header, 1, w->f) == 1, TSR_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    *out = w;
    w = NULL;
cleanup:
    tsr_dataset_writer_abort(&w);
    return rc;
}

tsr_status_t tsr_dataset_writer_append(tsr_dataset_writer_t w, const uint32_t *tokens, size_t n)
{
    unsigned char buf[8192];
    size_t per = sizeof buf / (size_t)w->width;
    if ((uint64_t)w->n + n > TSR_DATA_MAX_TOKENS)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: more than %d tokens (a shard's header counts them in an int32; "
                         "split the data into shards)", w->path, TSR_DATA_MAX_TOKENS);
    for (size_t i = 0; i < n; i += per) {
        size_t m = n - i < per ? n - i : per;
        for (size_t k = 0; k < m; k++) {
            uint32_t v = tokens[i + k];
            if (w->width == 2 && v > 65535)
                return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: token %lu does not fit a uint16 shard", w->path,
                                 (unsigned long)v);
            if (w->width == 2) {
                uint16_t h = (uint16_t)v;
                memcpy(buf + 2 * k, &h, 2);
            } else {
                memcpy(buf + 4 * k, &v, 4);
            }
        }
        if (fwrite(buf, (size_t)w->width, m, w->f) != m)
            return TSR_ERROR(TSR_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    }
    w->n += (int64_t)n;
    return TSR_OK;
}

tsr_status_t tsr_dataset_writer_close(tsr_dataset_writer_t *wp)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dataset_writer *w = *wp;
    int32_t header[3] = {w->width == 2 ? TSR_DATA_MAGIC : TSR_DATA_MAGIC_U32, w->width == 2 ? 1 : TSR_DATA_VERSION_U32,
                         (int32_t)w->n};
    TSR_CHECK(fseek(w->f, 0, SEEK_SET) == 0 && fwrite(header, sizeof header, 1, w->f) == 1 && fflush(w->f) == 0 &&
                  fsync(fileno(w->f)) == 0,
              TSR_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    int closed = fclose(w->f);
    w->f = NULL;
    TSR_CHECK(closed == 0, TSR_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    TSR_CHECK(rename(w->tmp, w->path) == 0, TSR_ERR_IO, "cannot rename %s to %s: %s", w->tmp, w->path,
              strerror(errno));
    free(w->tmp);
    w->tmp = NULL;
cleanup:
    tsr_dataset_writer_abort(wp);
    return rc;
}

void tsr_dataset_writer_abort(tsr_dataset_writer_t *wp)
{
    if (!wp || !*wp)
        return;
    struct tsr_dataset_writer *w = *wp;
    if (w->f)
        fclose(w->f);
    if (w->tmp)
        unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w);
    *wp = NULL;
}

tsr_status_t tsr_dataset_write(const char *path, const uint16_t *tokens, int64_t n)
{
    tsr_status_t rc = TSR_OK;
    tsr_dataset_writer_t w = NULL;
    uint32_t buf[4096];
    TSR_CHECK(n >= 0 && n <= TSR_DATA_MAX_TOKENS, TSR_ERR_INVALID_ARG, "%lld tokens: a shard holds at most %d",
              (long long)n, TSR_DATA_MAX_TOKENS);
    TSR_TRY(tsr_dataset_writer_create(path, 2, &w));
    for (int64_t i = 0; i < n; i += 4096) {
        size_t m = n - i < 4096 ? (size_t)(n - i) : 4096;
        for (size_t k = 0; k < m; k++)
            buf[k] = tokens[i + (int64_t)k];
        TSR_TRY(tsr_dataset_writer_append(w, buf, m));
    }
    TSR_TRY(tsr_dataset_writer_close(&w));
cleanup:
    tsr_dataset_writer_abort(&w);
    return rc;
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
