/* fsutil.c - atomic file replacement, exact reads, path tests and syncs (see fsutil.h).
 * Not a general I/O layer: only what the engine's format readers and writers and the
 * server's model store share. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* writev until every byte of parts is written: write(2) may stop early (signals, pipes,
 * RLIMIT_FSIZE, the 2 GiB per-call cap on Linux), and IOV_MAX bounds one call. */
static int write_all(int fd, const struct iovec *parts, int nparts)
{
    struct iovec cur[64];
    int i = 0;
    size_t done = 0; /* bytes of parts[i] already written */

    while (i < nparts) {
        int n = 0;
        size_t want = 0;
        while (i + n < nparts && n < (int)(sizeof cur / sizeof cur[0]) && n < IOV_MAX) {
            cur[n] = parts[i + n];
            if (n == 0) {
                cur[0].iov_base = (char *)cur[0].iov_base + done;
                cur[0].iov_len -= done;
            }
            want += cur[n].iov_len;
            n++;
        }
        ssize_t w = writev(fd, cur, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        size_t left = (size_t)w;
        /* Advance over the parts this call finished, then into the first unfinished one. */
        while (i < nparts && left >= parts[i].iov_len - done) {
            left -= parts[i].iov_len - done;
            done = 0;
            i++;
        }
        if (i < nparts) done += left;
        if (w == 0 && want > 0) {
            errno = EIO; /* no progress and no error: do not spin */
            return -1;
        }
    }
    return 0;
}

int fs_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int fs_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int fs_sync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    if (rc < 0 && errno == EINVAL) rc = 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* fsync of the directory holding path, so the rename itself survives a crash. */
static int sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else dir = strndup(path, (size_t)(slash - path));
    if (!dir) return -1;
    int rc = fs_sync_path(dir, 1);
    int saved = errno;
    free(dir);
    errno = saved;
    return rc;
}

vt_status fs_write_atomic(const char *path, const struct iovec *parts, int nparts,
                          char *err, size_t errlen)
{
    static const char suffix[] = ".tmp.XXXXXX";
    if (!path || !*path || nparts < 0 || (nparts > 0 && !parts))
        return vt_err(err, errlen, VT_EINVAL, "fs_write_atomic: bad arguments");

    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof suffix);
    if (!tmp) return vt_err(err, errlen, VT_ENOMEM, "out of memory for a temporary name");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);

    /* Keep the replaced file's permissions; mkstemp's 0600 would silently narrow them. */
    mode_t mode = 0644;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) mode = st.st_mode & 07777;

    vt_status s = VT_EIO;
    const char *step;
    int rc;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        vt_err(err, errlen, VT_EIO, "cannot create a temporary file for '%s': %s", path,
               strerror(errno));
        free(tmp);
        return VT_EIO;
    }
    step = "set the mode of";
    if (fchmod(fd, mode) < 0) goto fail;
    step = "write";
    if (write_all(fd, parts, nparts) < 0) goto fail;
    step = "fsync";
    if (fsync(fd) < 0) goto fail;
    step = "close";
    rc = close(fd);
    fd = -1;
    if (rc < 0) goto fail;
    step = "rename";
    if (rename(tmp, path) < 0) goto fail;
    free(tmp);

    if (sync_parent_dir(path) < 0)
        return vt_err(err, errlen, VT_EIO,
                      "'%s' was written but its directory could not be synced: %s", path,
                      strerror(errno));
    return VT_OK;

fail:
    s = vt_err(err, errlen, VT_EIO, "cannot %s temporary file '%s' (for '%s'): %s", step, tmp,
               path, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return s;
}

vt_status fs_read_at(int fd, void *buf, size_t n, off_t off, char *err, size_t errlen)
{
    char *p = buf;
    while (n > 0) {
        size_t chunk = n > (size_t)1 << 30 ? (size_t)1 << 30 : n;
        ssize_t r = pread(fd, p, chunk, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return vt_err(err, errlen, VT_EIO, "read at offset %lld failed: %s",
                          (long long)off, strerror(errno));
        }
        if (r == 0)
            return vt_err(err, errlen, VT_EIO, "unexpected end of file at offset %lld",
                          (long long)off);
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return VT_OK;
}
