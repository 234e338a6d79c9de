/**
 * @file tessera/zero.h
 * @brief ZeRO optimizer sharding: optimizers, stages 0-3, clipping, loss scaling (issue 5).
 */
#ifndef TESSERA_ZERO_H
#define TESSERA_ZERO_H

#include <tessera/grid.h>

#endif /* TESSERA_ZERO_H */
