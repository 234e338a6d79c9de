/*
 * cpu_threads.c: how many threads a rank's CPU kernels and GEMMs use, chosen once, when the
 * first CPU device opens (tsr_device_cpu_threads() in tessera/device.h says how).
 *
 * One pool of threads, OpenMP's, does everything: the kernels of cpu_*.c and the GEMMs, which
 * cpu.c splits over the threads, each calling a one-thread BLAS on its slice. A BLAS with threads
 * of its own would leave them spinning (OpenBLAS's pthread build yields in a loop for about a
 * tenth of a second after each call) while OpenMP's threads run the kernels between GEMMs, two
 * pools on the same cores. Without OpenMP the kernels run on one thread and the BLAS gets the
 * rank's threads.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <cblas.h>

#include "config.h"
#include "core/internal.h"
#include "device/cpu_math.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int threads = 1;
static char why[128] = "default";

/* A positive integer environment variable, else 0. */
static int env_count(const char *name)
{
    const char *s = getenv(name);
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : 0;
    return s && end != s && *end == '\0' && v > 0 && v < 1 << 20 ? (int)v : 0;
}

/* The ranks on this node as the launcher tells them (MPICH's hydra, Open MPI, Slurm); 1 if none. */
static int local_ranks(void)
{
    static const char *const vars[] = {"MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        int n = env_count(vars[i]);
        if (n)
            return n;
    }
    return 1;
}

static int choose(void)
{
    int n = env_count("OMP_NUM_THREADS");
    if (n) {
        snprintf(why, sizeof why, "OMP_NUM_THREADS=%d", n);
        return n;
    }
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mask = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)(online > 0 ? online : 1);
    int ranks = local_ranks();
    if (mask == online && ranks > 1) {
        /* not bound by the launcher: the ranks of the node share its CPUs */
        n = mask / ranks > 0 ? mask / ranks : 1;
        snprintf(why, sizeof why, "%d CPUs shared by %d ranks of the node", mask, ranks);
        return n;
    }
    snprintf(why, sizeof why, "affinity mask of %d CPU%s", mask, mask == 1 ? "" : "s");
    return mask > 0 ? mask : 1;
}

static void setup(void)
{
    threads = choose();
#ifdef _OPENMP
    omp_set_num_threads(threads);
#if HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#endif
#else
    /* the kernels on one thread; the BLAS gets the rank's threads */
#if HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(threads);
    snprintf(why, sizeof why, "no OpenMP in this build; OpenBLAS has %d thread%s", threads, threads == 1 ? "" : "s");
#else
    snprintf(why, sizeof why, "no OpenMP in this build; the BLAS chooses its own threads");
#endif
    threads = 1;
#endif
}

void tsr__cpu_threads_init(void)
{
    pthread_once(&once, setup);
}

int tsr_device_cpu_threads(const char **how)
{
    tsr__cpu_threads_init();
    if (how)
        *how = why;
    return threads;
}
