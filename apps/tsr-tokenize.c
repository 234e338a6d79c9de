/*
 * tsr-tokenize: make byte-level token shards (llm.c's format, vocabulary 256).
 *
 *   tsr-tokenize IN.txt OUT.bin                 one token per byte of IN.txt
 *   tsr-tokenize --synthetic BYTES OUT.bin      the deterministic demo corpus (see --seed)
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tessera.h>

static const char usage[] =
    "Usage: tsr-tokenize [OPTIONS] IN.txt OUT.bin\n"
    "       tsr-tokenize --synthetic BYTES [--seed N] OUT.bin\n"
    "Write a byte-level token shard (llm.c format: 256 int32 header words, then uint16 tokens;\n"
    "vocabulary 256) from a text file, or from Tessera's deterministic synthetic corpus.\n"
    "  --synthetic BYTES  generate BYTES bytes of synthetic English-like text instead of reading IN\n"
    "  --seed N           seed of the synthetic text (default 1)\n"
    "  --help, --version\n";

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"synthetic", required_argument, 0, 's'}, {"seed", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},            {"version", no_argument, 0, 'V'},
        {0},
    };
    long long synthetic = -1;
    unsigned long long seed = 1;
    for (int c; (c = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        char *end;
        switch (c) {
        case 's':
            synthetic = strtoll(optarg, &end, 10);
            if (*end || synthetic < 1) {
                fprintf(stderr, "tsr-tokenize: --synthetic %s: expected a positive number of bytes\n", optarg);
                return 2;
            }
            break;
        case 'S':
            seed = strtoull(optarg, &end, 10);
            if (*end) {
                fprintf(stderr, "tsr-tokenize: --seed %s: expected a non-negative integer\n", optarg);
                return 2;
            }
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
    char *text = NULL;
    size_t n = 0;
    if (synthetic > 0) {
        n = (size_t)synthetic;
        text = malloc(n);
        if (text)
            tsr_data_synthetic_text(seed, n, text);
    } else {
        FILE *f = fopen(argv[optind], "rb");
        if (!f) {
            fprintf(stderr, "tsr-tokenize: %s: %s\n", argv[optind], strerror(errno));
            return 1;
        }
        size_t cap = 1 << 20;
        text = malloc(cap);
        for (size_t got; text && (got = fread(text + n, 1, cap - n, f)) > 0;) {
            n += got;
            if (n == cap) {
                char *grown = realloc(text, cap *= 2);
                if (!grown) {
                    free(text);
                    text = NULL;
                }
                text = grown;
            }
        }
        fclose(f);
    }
    uint16_t *tokens = text ? malloc((n ? n : 1) * sizeof *tokens) : NULL;
    if (!tokens) {
        fprintf(stderr, "tsr-tokenize: out of memory for %zu tokens\n", n);
        free(text);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        tokens[i] = (unsigned char)text[i];
    tsr_status_t rc = tsr_dataset_write(out, tokens, (int64_t)n);
    free(tokens);
    free(text);
    if (rc != TSR_OK) {
        fprintf(stderr, "tsr-tokenize: %s\n", tsr_last_error());
        return 1;
    }
    printf("tsr-tokenize: wrote %zu tokens to %s\n", n, out);
    return 0;
}
