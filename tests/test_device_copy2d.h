/*
 * test_device_copy2d.h: the checks of tsr_device_copy_2d shared by test_device_cpu and
 * test_device_cuda: a block of rows copied host to device, device to device and device to
 * host between buffers of three different pitches, every byte outside the rows untouched;
 * no rows or empty rows do nothing; a pitch below the row length or a NULL buffer is refused.
 * Include after tap.h and tessera.h.
 */
#ifndef TESSERA_TEST_DEVICE_COPY2D_H
#define TESSERA_TEST_DEVICE_COPY2D_H

enum { C2_ROWS = 7, C2_ROW = 13, C2_SRC_PITCH = 37, C2_DEV_PITCH = 21, C2_DEV2_PITCH = 16, C2_OUT_PITCH = 29 };

/* Whether buf (rows x pitch bytes) holds row r of src (pitch src_pitch) in its first row_bytes
 * bytes and fill everywhere else. */
static int copy2d_holds(const unsigned char *buf, size_t pitch, const unsigned char *src, size_t src_pitch,
                        unsigned char fill)
{
    int good = 1;
    for (size_t r = 0; r < C2_ROWS; r++)
        for (size_t c = 0; c < pitch; c++)
            good &= buf[r * pitch + c] == (c < C2_ROW ? src[r * src_pitch + c] : fill);
    return good;
}

static void check_copy_2d(tsr_device_t d)
{
    const char *name = tsr_device_kind_name(tsr_device_kind(d));
    unsigned char src[C2_ROWS * C2_SRC_PITCH], out[C2_ROWS * C2_OUT_PITCH], back[C2_ROWS * C2_DEV_PITCH];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(i * 11 + 5);
    void *d1 = NULL, *d2 = NULL;
    tsr_status_t rc = tsr_device_alloc(d, TSR_MEM_WORKSPACE, C2_ROWS * C2_DEV_PITCH, &d1);
    rc = rc ? rc : tsr_device_alloc(d, TSR_MEM_WORKSPACE, C2_ROWS * C2_DEV2_PITCH, &d2);
    rc = rc ? rc : tsr_device_memset(d, d1, 0xcd, C2_ROWS * C2_DEV_PITCH);
    rc = rc ? rc : tsr_device_memset(d, d2, 0x5a, C2_ROWS * C2_DEV2_PITCH);
    is_int(rc, TSR_OK, "%s: two buffers for 2D copies", name);

    rc = tsr_device_copy_2d(d, d1, C2_DEV_PITCH, src, C2_SRC_PITCH, C2_ROW, C2_ROWS, TSR_COPY_HOST_TO_DEVICE);
    tsr_device_copy(d, back, d1, sizeof back, TSR_COPY_DEVICE_TO_HOST);
    ok(rc == TSR_OK && copy2d_holds(back, C2_DEV_PITCH, src, C2_SRC_PITCH, 0xcd),
       "%s: 2D copy host to device, %d rows of %d bytes, pitch %d to %d", name, C2_ROWS, C2_ROW, C2_SRC_PITCH,
       C2_DEV_PITCH);

    rc = tsr_device_copy_2d(d, d2, C2_DEV2_PITCH, d1, C2_DEV_PITCH, C2_ROW, C2_ROWS, TSR_COPY_DEVICE_TO_DEVICE);
    tsr_device_copy(d, back, d2, C2_ROWS * C2_DEV2_PITCH, TSR_COPY_DEVICE_TO_HOST);
    ok(rc == TSR_OK && copy2d_holds(back, C2_DEV2_PITCH, src, C2_SRC_PITCH, 0x5a),
       "%s: 2D copy device to device, pitch %d to %d", name, C2_DEV_PITCH, C2_DEV2_PITCH);

    memset(out, 0x77, sizeof out);
    rc = tsr_device_copy_2d(d, out, C2_OUT_PITCH, d2, C2_DEV2_PITCH, C2_ROW, C2_ROWS, TSR_COPY_DEVICE_TO_HOST);
    ok(rc == TSR_OK && copy2d_holds(out, C2_OUT_PITCH, src, C2_SRC_PITCH, 0x77),
       "%s: 2D copy device to host, pitch %d to %d", name, C2_DEV2_PITCH, C2_OUT_PITCH);

    /* Pitch equal to the row: one contiguous block. */
    memset(out, 0x77, sizeof out);
    rc = tsr_device_copy_2d(d, out, C2_ROW, d2, C2_DEV2_PITCH, C2_ROW, C2_ROWS, TSR_COPY_DEVICE_TO_HOST);
    int packed = rc == TSR_OK && out[C2_ROWS * C2_ROW] == 0x77;
    for (size_t r = 0; r < C2_ROWS; r++)
        packed &= memcmp(out + r * C2_ROW, src + r * C2_SRC_PITCH, C2_ROW) == 0;
    ok(packed, "%s: 2D copy into rows packed at pitch = row length", name);

    memset(out, 0x77, sizeof out);
    rc = tsr_device_copy_2d(d, out, C2_OUT_PITCH, d2, C2_DEV2_PITCH, C2_ROW, 0, TSR_COPY_DEVICE_TO_HOST);
    tsr_status_t rc2 =
        tsr_device_copy_2d(d, out, C2_OUT_PITCH, d2, C2_DEV2_PITCH, 0, C2_ROWS, TSR_COPY_DEVICE_TO_HOST);
    ok(rc == TSR_OK && rc2 == TSR_OK && out[0] == 0x77,
       "%s: 2D copies of no rows or empty rows succeed and copy nothing", name);

    tsr_clear_error();
    rc = tsr_device_copy_2d(d, out, C2_ROW - 1, d2, C2_DEV2_PITCH, C2_ROW, C2_ROWS, TSR_COPY_DEVICE_TO_HOST);
    is_int(rc, TSR_ERR_INVALID_ARG, "%s: 2D copy with dst pitch below the row length is refused", name);
    rc = tsr_device_copy_2d(d, out, C2_OUT_PITCH, d2, C2_ROW - 1, C2_ROW, C2_ROWS, TSR_COPY_DEVICE_TO_HOST);
    is_int(rc, TSR_ERR_INVALID_ARG, "%s: 2D copy with src pitch below the row length is refused", name);
    rc = tsr_device_copy_2d(d, NULL, C2_OUT_PITCH, d2, C2_DEV2_PITCH, C2_ROW, C2_ROWS, TSR_COPY_DEVICE_TO_HOST);
    is_int(rc, TSR_ERR_INVALID_ARG, "%s: 2D copy to NULL is refused", name);
    rc = tsr_device_copy_2d(d, out, C2_OUT_PITCH, d2, C2_DEV2_PITCH, C2_ROW, C2_ROWS, (tsr_copy_dir_t)3);
    is_int(rc, TSR_ERR_INVALID_ARG, "%s: 2D copy in direction 3 is refused", name);
    ok(out[0] == 0x77, "%s: refused 2D copies write nothing", name);
    tsr_clear_error();

    tsr_device_free(d, &d1);
    tsr_device_free(d, &d2);
}

#endif /* TESSERA_TEST_DEVICE_COPY2D_H */
