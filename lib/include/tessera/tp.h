/**
 * @file tessera/tp.h
 * @brief Tensor parallelism: distributed matrices, SUMMA, layer operations (issue 3).
 */
#ifndef TESSERA_TP_H
#define TESSERA_TP_H

#include <tessera/grid.h>

#endif /* TESSERA_TP_H */
