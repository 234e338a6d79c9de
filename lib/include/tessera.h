/**
 * @file tessera.h
 * @brief Tessera: training transformers across a cluster. Include this one header.
 *
 * Modules, bottom up (each has its own header under tessera/):
 *   - core:   status.h (errors), log.h, timer.h, memory.h (tracked allocator), rng.h,
 *             options.h (checked parsing of option values)
 *   - device: device.h (CPU via CBLAS, CUDA via cuBLAS)
 *   - comm:   comm.h (collectives and point-to-point, byte counters)
 *   - grid:   grid.h (dp × pp × tp process grid)
 *   - tp:     tp.h (distributed matrices, SUMMA, layer operations; 2D and 1D)
 *   - pipe:   pipe.h (pipeline schedules, simulator, executor, partitioner)
 *   - zero:   zero.h (ZeRO-sharded optimizers, clipping, loss scaling)
 *   - ps:     ps.h (parameter servers, asynchronous push/pull, bounded staleness)
 *   - ckpt:   ckpt.h (checkpoints in parallel HDF5: global datasets, atomic commit)
 *   - data:   data.h (llm.c token shards, the step-indexed loader)
 * config.h tells the version and which optional backends this installation has.
 */
#ifndef TESSERA_H
#define TESSERA_H

#include <tessera/config.h>
#include <tessera/status.h>
#include <tessera/dtype.h>
#include <tessera/log.h>
#include <tessera/timer.h>
#include <tessera/memory.h>
#include <tessera/rng.h>
#include <tessera/options.h>
#include <tessera/device.h>
#include <tessera/kernels.h>
#include <tessera/comm.h>
#include <tessera/grid.h>
#include <tessera/tp.h>
#include <tessera/pipe.h>
#include <tessera/zero.h>
#include <tessera/ps.h>
#include <tessera/ckpt.h>
#include <tessera/data.h>
#include <tessera/model.h>
#include <tessera/prof.h>

#endif /* TESSERA_H */
