/* srv_spool.h - an uploaded proxy data set, streamed from a tar archive into a spool folder.
 *
 * The admin prune call's body is a tar of class folders of images (class/file.jpg|png, the
 * ImageFolder layout). It arrives in chunks of any size; each chunk is parsed as it comes and
 * image entries are written straight to disk, so the archive is never held in memory (at
 * most one 512-byte header plus one long name or pax record is buffered).
 *
 * Formats: POSIX ustar (name + prefix), pax ('x' per-entry records: path, size; 'g' global
 * records are read and ignored), GNU ('L' long names; base-256 sizes), old v7 headers.
 * Two zero blocks end the archive; bytes after them are ignored. A single zero block at the very
 * end is accepted too (nothing is lost); a non-zero block right after a zero block is refused
 * (a concatenated archive would otherwise lose its second part silently).
 *
 * The header block (512 bytes; offset, length):
 *   0 name[100]     NUL-terminated unless full
 *   100 mode[8], 108 uid[8], 116 gid[8]       (not used)
 *   124 size[12]    octal digits (leading spaces, then NUL or space), or GNU base-256: the
 *                   first byte 0x80, the rest big-endian (a negative one is refused)
 *   136 mtime[12]   (not used)
 *   148 chksum[8]   octal sum of the 512 bytes with this field taken as 8 spaces (the sum of
 *                   signed bytes is accepted too, as some old writers made it)
 *   156 typeflag    '0' or NUL file ('\0' with a name ending in '/': v7 folder), '5' folder,
 *                   'x' pax record block for the next entry, 'g' global pax block,
 *                   'L' GNU long name of the next entry (its data, up to a NUL);
 *                   refused: '1' hard link, '2' symlink, 'K' GNU long link name, '3' '4'
 *                   devices, '6' FIFO, anything else ('7', 'S' sparse, 'V', 'M', ...)
 *   157 linkname[100] (named in the error for links)
 *   257 magic[6]    "ustar\0" + version "00": POSIX (prefix below is used);
 *                   "ustar " + " \0": GNU; zeros: v7
 *   265 uname[32], 297 gname[32], 329 devmajor[8], 337 devminor[8]   (not used)
 *   345 prefix[155] POSIX ustar only: the path is prefix "/" name
 * An entry's data follows its header, padded with zeros to a multiple of 512. A pax block holds
 * records "LEN key=value\n" (LEN: the record's decimal length, itself included); "path" and
 * "size" override the next header's, "GNU.sparse.*" is refused, other keys are ignored.
 *
 * What is accepted: regular files ('0' or NUL) whose path, after stripping leading "./", is
 * exactly "class/file" with an image extension (.jpg .jpeg .png, any case); directories
 * (skipped, not counted: folders are created as files need them). Skipped and counted as
 * `ignored`: regular files that are not images or not two levels deep, paths with a component
 * starting with "." (macOS "._x", ".hidden/x.jpg": the folder reader skips those too), pax 'g'
 * headers. Every entry's path is checked, kept or not.
 * What is refused (the whole upload fails, and the spool folder is removed): a bad header
 * checksum, a non-numeric size, an absolute path, a ".." component, an empty component, a
 * NUL inside a pax path, a symbolic or hard link, a character or block device, a FIFO, any
 * other type flag, an entry larger than max_entry_bytes, more than max_entries entries, more
 * than max_total_bytes of archive, and an archive that ends (spool_finish) before its end
 * blocks or in the middle of an entry. The first bytes not being a tar header (e.g. a JPEG,
 * gzip or JSON body) is "not a tar archive". Each error names the entry and the problem.
 * Status: VT_ELIMIT for the limits (including a GNU long name over 4095 bytes and a pax block
 * over 64 KiB), VT_EFORMAT for everything else in the archive, VT_EIO when the disk fails.
 * The limits apply as soon as a header is read: an entry whose size is over max_entry_bytes,
 * or whose data would take the archive past max_total_bytes, is refused before its data.
 * An archive with no image at all is refused by spool_finish.
 *
 * Files are created with O_CREAT|O_EXCL|O_NOFOLLOW under the spool folder only (class folder
 * names and file names are used as given after the checks above; a path that repeats is
 * refused as "duplicate entry"). Nothing is ever written outside dir: every open is an openat
 * relative to descriptors of dir and of the class folder, both opened with O_NOFOLLOW.
 * Modes: folders 0700, files 0600. A name component over 255 bytes is refused.
 *
 * Threads: a spool is used by one thread at a time (MHD's upload chunks of one request).
 */
#ifndef VT_SRV_SPOOL_H
#define VT_SRV_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Every limit must be > 0 (spool_new answers VT_EINVAL otherwise). */
typedef struct {
    uint64_t max_total_bytes;   /* bytes fed (headers, padding and anything after the end) */
    uint64_t max_entry_bytes;   /* one entry's data size (files, pax and long-name blocks) */
    long max_entries;           /* headers of any kind */
} spool_limits;

typedef struct {
    long images;                /* image files written */
    long classes;               /* class folders holding at least one image */
    long ignored;               /* entries skipped (see above) */
    uint64_t bytes;             /* bytes fed, the end blocks and what follows them included */
} spool_stats;

typedef struct spool spool;

/* Creates dir (mode 0700; it must not exist: VT_EIO, and the existing folder is left alone)
 * and a parser writing into it. lim is copied. */
vt_status spool_new(const char *dir, const spool_limits *lim, spool **out, char *err, size_t errlen);

/* Feeds the next n bytes of the archive. After an error every further call returns the same
 * error; the caller answers 400 (413 when the status is VT_ELIMIT). */
vt_status spool_feed(spool *s, const void *data, size_t n, char *err, size_t errlen);

/* The archive is complete: checks it ended properly and at least one image was written, then
 * fills *st (st may be NULL). */
vt_status spool_finish(spool *s, spool_stats *st, char *err, size_t errlen);

/* Frees the parser. remove_dir: delete the spool folder and everything in it. */
void spool_free(spool *s, int remove_dir);

/* Deletes a spool folder made by spool_new (files one level of class folders deep). */
void spool_remove_dir(const char *dir);

#endif
