/*
 * tsr-tokenize: make byte-level token shards (llm.c's format, vocabulary 256).
 *
 *   tsr-tokenize IN.txt OUT.bin                 one token per byte of IN.txt
 *   tsr-tokenize --synthetic BYTES OUT.bin      the deterministic demo corpus (see --seed)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tessera.h>

static const char usage[] =
    "Usage: tsr-tokenize [OPTIONS] IN.txt OUT.bin\n"
    "       tsr-tokenize --synthetic BYTES [--seed N] OUT.bin\n"
    "Write a byte-level token shard (llm.c format: 256 int32 header words, then uint16 tokens;\n"
    "vocabulary 256) from a text file (a regular file of at most 2147483647 bytes), or from\n"
    "Tessera's deterministic synthetic corpus.\n"
    "  --synthetic BYTES  generate BYTES (1 to 2147483647) bytes of synthetic English-like text\n"
    "                     instead of reading IN\n"
    "  --seed N           seed of the synthetic text, 0 to 2^64-1 (default 1)\n"
    "  --uint32           write llm.c's uint32 shard (magic 20240801, version 7) instead of uint16\n"
    "  --help, --version\n";

/* Read all of a regular file of at most TSR_DATA_MAX_TOKENS bytes; prints the error. */
static char *read_text(const char *path, size_t *n)
{
    struct stat st;
    char *text = NULL;
    /* O_NONBLOCK: a FIFO without a writer must not block; it is refused below. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "tsr-tokenize: %s: %s\n", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "tsr-tokenize: %s is %s, not a regular file (expected a text file)\n", path,
                S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a special file");
        goto fail;
    }
    if (st.st_size > TSR_DATA_MAX_TOKENS) {
        fprintf(stderr, "tsr-tokenize: %s has %lld bytes; a shard holds at most %d tokens\n", path,
                (long long)st.st_size, TSR_DATA_MAX_TOKENS);
        goto fail;
    }
    /* One byte more than its size: a file that grows while it is read is noticed. */
    size_t cap = (size_t)st.st_size + 1;
    text = malloc(cap);
    if (!text) {
        fprintf(stderr, "tsr-tokenize: no memory for the %lld bytes of %s\n", (long long)st.st_size, path);
        goto fail;
    }
    *n = 0;
    for (ssize_t got; *n < cap; *n += (size_t)got) {
        got = read(fd, text + *n, cap - *n);
        if (got < 0 && errno == EINTR) {
            got = 0;
            continue;
        }
        if (got < 0) {
            fprintf(stderr, "tsr-tokenize: cannot read %s: %s\n", path, strerror(errno));
            goto fail;
        }
        if (got == 0)
            break;
    }
    if (*n != (size_t)st.st_size) {
        fprintf(stderr, "tsr-tokenize: %s changed while it was read (%lld bytes, then %zu)\n", path,
                (long long)st.st_size, *n);
        goto fail;
    }
    close(fd);
    return text;
fail:
    if (fd >= 0)
        close(fd);
    free(text);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"synthetic", required_argument, 0, 's'}, {"seed", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},            {"version", no_argument, 0, 'V'},
        {"uint32", no_argument, 0, 'u'},
        {0},
    };
    int64_t synthetic = -1;
    uint64_t seed = 1;
    int token_bytes = 2;
    for (int c; (c = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        switch (c) {
        case 's':
            /* The limit is checked here, before gigabytes are generated for nothing. */
            if (tsr_parse_i64(optarg, 1, TSR_DATA_MAX_TOKENS, &synthetic) != TSR_OK) {
                fprintf(stderr, "tsr-tokenize: --synthetic %s: %s (a shard holds at most %d tokens)\n", optarg,
                        tsr_last_error(), TSR_DATA_MAX_TOKENS);
                return 2;
            }
            break;
        case 'S':
            if (tsr_parse_u64(optarg, &seed) != TSR_OK) {
                fprintf(stderr, "tsr-tokenize: --seed %s: %s\n", optarg, tsr_last_error());
                return 2;
            }
            break;
        case 'u':
            token_bytes = 4;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            printf("tsr-tokenize (%s)\n", tsr_build_info());
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    int want = synthetic > 0 ? 1 : 2;
    if (argc - optind != want) {
        fprintf(stderr, "tsr-tokenize: expected %s\n%s", want == 1 ? "OUT.bin" : "IN.txt OUT.bin", usage);
        return 2;
    }
    const char *out = argv[argc - 1];
    if (!*out) {
        fprintf(stderr, "tsr-tokenize: the output path is empty (expected OUT.bin)\n");
        return 2;
    }
    char *text = NULL;
    size_t n = 0;
    if (synthetic > 0) {
        n = (size_t)synthetic;
        text = malloc(n);
        if (text)
            tsr_data_synthetic_text(seed, n, text);
        else
            fprintf(stderr, "tsr-tokenize: no memory for %zu bytes of text\n", n);
    } else {
        text = read_text(argv[optind], &n);
    }
    if (!text)
        return 1;
    /* Streamed through the shard writer: a block of tokens at a time. */
    tsr_dataset_writer_t w = NULL;
    uint32_t block[4096];
    tsr_status_t rc = tsr_dataset_writer_create(out, token_bytes, &w);
    for (size_t i = 0; rc == TSR_OK && i < n; i += 4096) {
        size_t m = n - i < 4096 ? n - i : 4096;
        for (size_t k = 0; k < m; k++)
            block[k] = (unsigned char)text[i + k];
        rc = tsr_dataset_writer_append(w, block, m);
    }
    if (rc == TSR_OK)
        rc = tsr_dataset_writer_close(&w);
    tsr_dataset_writer_abort(&w);
    free(text);
    if (rc != TSR_OK) {
        fprintf(stderr, "tsr-tokenize: %s\n", tsr_last_error());
        return 1;
    }
    printf("tsr-tokenize: wrote %zu tokens to %s\n", n, out);
    return 0;
}
