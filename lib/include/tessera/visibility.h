/**
 * @file tessera/visibility.h
 * @brief Marks the symbols that libtessera exports.
 *
 * The library is compiled with hidden visibility: only declarations marked #TSR_API are
 * part of the ABI. Functions named tsr__* are private to the library.
 */
#ifndef TESSERA_VISIBILITY_H
#define TESSERA_VISIBILITY_H

#if defined(TSR_BUILDING_LIBRARY) && defined(__GNUC__)
#define TSR_API __attribute__((visibility("default")))
#else
#define TSR_API
#endif

#if defined(__GNUC__)
#define TSR_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define TSR_PRINTF(fmt_index, first_arg)
#endif

#endif /* TESSERA_VISIBILITY_H */
