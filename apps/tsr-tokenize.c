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
    "  --help, --version\n"
    "The input is streamed, 64 KiB at a time (memory does not grow with it); when standard error\n"
    "is a terminal, a progress line goes there.\n";

/* Bytes read from the input at a time: memory does not depend on the input's size. */
#define CHUNK (1 << 16)
/* A progress line every this many bytes (on a terminal). */
#define PROGRESS_EVERY (1 << 22)

/* Open a regular file of at most TSR_DATA_MAX_TOKENS bytes for reading; its size in *size.
 * Returns the descriptor, or -1 after printing the error. */
static int open_text(const char *path, off_t *size)
{
    struct stat st;
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
    *size = st.st_size;
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

/* On a terminal: how far the input is, on one line rewritten in place. */
static void progress(size_t done, off_t size)
{
    fprintf(stderr, "\rtsr-tokenize: %3.0f%% (%.1f of %.1f MB)", size > 0 ? 100.0 * (double)done / (double)size : 100.0,
            (double)done / 1e6, (double)size / 1e6);
}

/* Append the bytes of text[0..m) as tokens. */
static tsr_status_t append_bytes(tsr_dataset_writer_t w, const char *text, size_t m)
{
    uint32_t block[4096];
    tsr_status_t rc = TSR_OK;
    for (size_t i = 0; rc == TSR_OK && i < m; i += 4096) {
        size_t k = m - i < 4096 ? m - i : 4096;
        for (size_t j = 0; j < k; j++)
            block[j] = (unsigned char)text[i + j];
        rc = tsr_dataset_writer_append(w, block, k);
    }
    return rc;
}

/* Stream the file `path` (open as fd, `size` bytes when opened) into w, CHUNK bytes at a time;
 * *n gets the bytes read. Returns 0, or 1 after printing the error. */
static int stream_text(int fd, const char *path, off_t size, tsr_dataset_writer_t w, size_t *n)
{
    static char buf[CHUNK];
    int tty = isatty(STDERR_FILENO);
    size_t next = PROGRESS_EVERY;
    *n = 0;
    for (;;) {
        ssize_t got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            fprintf(stderr, "%stsr-tokenize: cannot read %s: %s\n", tty ? "\n" : "", path, strerror(errno));
            return 1;
        }
        if (got == 0)
            break;
        /* Past the size it had when opened: the file grows while it is read. */
        if (*n + (size_t)got > (size_t)size)
            break;
        if (append_bytes(w, buf, (size_t)got) != TSR_OK) {
            fprintf(stderr, "%stsr-tokenize: %s\n", tty ? "\n" : "", tsr_last_error());
            return 1;
        }
        *n += (size_t)got;
        if (tty && *n >= next) {
            progress(*n, size);
            next = *n + PROGRESS_EVERY;
        }
    }
    if (tty) {
        progress(*n, size);
        fputc('\n', stderr);
    }
    if (*n != (size_t)size) {
        fprintf(stderr, "tsr-tokenize: %s changed while it was read (%lld bytes, then %s%zu)\n", path,
                (long long)size, *n < (size_t)size ? "" : "more than ", *n);
        return 1;
    }
    return 0;
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
    size_t n = 0;
    off_t size = 0;
    int fd = -1;
    if (synthetic <= 0 && (fd = open_text(argv[optind], &size)) < 0)
        return 1;
    /* Streamed through the shard writer: the input a chunk at a time, the tokens a block at a time. */
    tsr_dataset_writer_t w = NULL;
    tsr_status_t rc = tsr_dataset_writer_create(out, token_bytes, &w);
    int bad = rc != TSR_OK;
    if (!bad && synthetic > 0) {
        /* The synthetic corpus is generated whole (its generator is not resumable). */
        char *text = malloc((size_t)synthetic);
        n = (size_t)synthetic;
        if (!text) {
            fprintf(stderr, "tsr-tokenize: no memory for %zu bytes of text\n", n);
            bad = 1;
        } else {
            tsr_data_synthetic_text(seed, n, text);
            rc = append_bytes(w, text, n);
            bad = rc != TSR_OK;
        }
        free(text);
    } else if (!bad) {
        bad = stream_text(fd, argv[optind], size, w, &n);
    }
    if (fd >= 0)
        close(fd);
    if (!bad)
        rc = tsr_dataset_writer_close(&w);
    tsr_dataset_writer_abort(&w);
    if (rc != TSR_OK) {
        fprintf(stderr, "tsr-tokenize: %s\n", tsr_last_error());
        return 1;
    }
    if (bad)
        return 1;
    printf("tsr-tokenize: wrote %zu tokens to %s\n", n, out);
    return 0;
}
