/* fsutil.h - small file-system helpers shared by the engine's file formats and the model store.
 *
 * fs_write_atomic is the one place vitd replaces a file on disk (checkpoints, .npy files):
 * it writes a temporary file "path.tmp.XXXXXX" in the same directory, fsyncs it, renames it
 * over path and fsyncs the directory. A crash or an error leaves either the old file or the
 * new one, never a half-written one, and an error removes the temporary file.
 * The new file gets the mode of the file it replaces, or 0644 when there was none.
 * fs_read_at reads exactly n bytes at an offset, retrying short reads.
 * fs_is_dir / fs_is_file ask what a path is (following links); fs_sync_path fsyncs a file or
 * folder by path, for code that builds a tree of files itself and renames it into place.
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

/* 1 when path names a folder (fs_is_dir) or a regular file (fs_is_file), after following
 * symbolic links; 0 otherwise, including when path does not exist or cannot be stat'ed. */
int fs_is_dir(const char *path);
int fs_is_file(const char *path);

/* fsync of path, opened as a folder when dir is nonzero (then path must be one), else as a
 * file. 0 on success, -1 with errno set on failure. A filesystem that cannot sync a folder
 * says EINVAL; that counts as success, since there is nothing more to do there. */
int fs_sync_path(const char *path, int dir);

#endif
