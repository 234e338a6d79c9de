/**
 * @file tessera/pipe.h
 * @brief Pipeline parallelism: schedules, simulator, executor, partitioner, traces (issue 4).
 */
#ifndef TESSERA_PIPE_H
#define TESSERA_PIPE_H

#include <tessera/grid.h>

#endif /* TESSERA_PIPE_H */
