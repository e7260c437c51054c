/* fsutil.h - small file-system helpers shared by the engine's file formats.
 *
 * fs_write_atomic is the one place vitd replaces a file on disk (checkpoints, .npy files):
 * it writes a temporary file "path.tmp.XXXXXX" in the same directory, fsyncs it, renames it
 * over path and fsyncs the directory. A crash or an error leaves either the old file or the
 * new one, never a half-written one, and an error removes the temporary file.
 * The new file gets the mode of the file it replaces, or 0644 when there was none.
 * fs_read_at reads exactly n bytes at an offset, retrying short reads.
 * Thread-safe: no shared state (two writers racing on one path: the last rename wins).
 */
#ifndef VT_FSUTIL_H
#define VT_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "status.h"

/* Writes the concatenation of parts[0..nparts) to path atomically. The parts are borrowed
 * for the call; a part may have iov_len 0. VT_EIO (with the failing step in err) on any
 * failure; path is then untouched, except in the one case err reports that the data is in
 * place but the directory could not be synced. */
vt_status fs_write_atomic(const char *path, const struct iovec *parts, int nparts,
                          char *err, size_t errlen);

/* Reads exactly n bytes at offset off of fd into buf. VT_EIO on error or early EOF. */
vt_status fs_read_at(int fd, void *buf, size_t n, off_t off, char *err, size_t errlen);

#endif
