#!/usr/bin/python3
"""test_spool_tar.py - the streaming tar extractor (server/srv_spool.c) on archives made by real
tools, through `build/tests/test_spool --extract ARCHIVE DIR`.

  1. Python's tarfile in USTAR, GNU and PAX formats (long names, unicode names, a prefix split,
     files of every size around the 512-byte block) and GNU tar (`tar --format=gnu|oldgnu|
     posix|ustar|v7` of a folder on disk): every image lands in the spool folder byte for byte,
     nothing else does, and the counts (images, classes, ignored, bytes) are right; fed in
     64 KiB, 1-byte and random chunks.
  2. Hostile archives made with tarfile (symlink to /etc, symlinked class folder, '../../x',
     absolute path, hard links, character device, FIFO) and with GNU tar (a symlink and a FIFO
     on disk): refused as format errors, the spool folder removed, and nothing written
     anywhere else (the whole temporary tree is compared before and after).
  3. Bodies that are not tars (gzip-compressed tar, a JPEG) and the limits (--max-entry,
     --max-entries, --max-total: "over limit").
Exits non-zero on failure, printing every case that failed.
"""
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("BUILD", "build")
TOOL = os.path.join(ROOT, BUILD, "tests", "test_spool") if not os.path.isabs(BUILD) else os.path.join(BUILD, "tests", "test_spool")
PHOTO = os.path.join(HERE, "data", "photos", "butterfly.jpg")
IMAGE_EXT = (".jpg", ".jpeg", ".png")

failures = []
checks = 0


def check(cond, msg):
    global checks
    checks += 1
    if not cond:
        failures.append(msg)
        print("FAIL " + msg)


def extract(archive, spool, *opts):
    """Runs the extractor; returns (exit code, output line)."""
    p = subprocess.run([TOOL, "--extract", archive, spool, *opts], capture_output=True, text=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


def tree(top):
    """Every path under top (relative) with its kind and content, symlinks not followed."""
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, top)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", None)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read())
            else:
                out[rel] = ("other", None)
    return out


def expected_images(files):
    """The entries the extractor keeps: class/file with an image extension, no dot names."""
    keep = {}
    for name, data in files.items():
        parts = name.split("/")
        if len(parts) == 2 and not any(c.startswith(".") for c in parts) and parts[1].lower().endswith(IMAGE_EXT):
            keep[name] = data
    return keep


def expect_ok(what, archive, files, ignored, work):
    want = expected_images(files)
    classes = len({n.split("/")[0] for n in want})
    size = os.path.getsize(archive)
    for chunk in ("65536", "1", "0"):
        spool = os.path.join(work, "spool")
        rc, out = extract(archive, spool, "--chunk", chunk)
        label = "%s (chunk %s)" % (what, chunk)
        check(rc == 0, "%s: exit %d: %s" % (label, rc, out))
        if rc != 0:
            shutil.rmtree(spool, ignore_errors=True)
            continue
        stats = dict(kv.split("=") for kv in out.split()[1:])
        check(int(stats["images"]) == len(want), "%s: %s images, expected %d" % (label, stats["images"], len(want)))
        check(int(stats["classes"]) == classes, "%s: %s classes, expected %d" % (label, stats["classes"], classes))
        check(int(stats["ignored"]) == ignored, "%s: %s ignored, expected %d" % (label, stats["ignored"], ignored))
        check(int(stats["bytes"]) == size, "%s: %s bytes, expected %d" % (label, stats["bytes"], size))
        got = {k: v[1] for k, v in tree(spool).items() if v[0] == "file"}
        others = {k for k, v in tree(spool).items() if v[0] not in ("file", "dir")}
        check(set(got) == set(want), "%s: files %s, expected %s" % (label, sorted(got)[:5], sorted(want)[:5]))
        check(all(got.get(k) == v for k, v in want.items()), "%s: some file's bytes differ" % label)
        check(not others, "%s: non-files in the spool: %s" % (label, others))
        shutil.rmtree(spool)


def refused(what, archive, work, status="format error", needle="", opts=()):
    before = tree(work)
    spool = os.path.join(work, "spool")
    for chunk in ("65536", "1", "0"):
        rc, out = extract(archive, spool, "--chunk", chunk, *opts)
        label = "%s (chunk %s)" % (what, chunk)
        check(rc == 1 and out.startswith("refused: " + status), "%s: expected refused with %s, got exit %d: %s" % (label, status, rc, out))
        check(needle in out, "%s: message lacks %r: %s" % (label, needle, out))
        check(not os.path.exists(spool), "%s: the spool folder was left behind" % label)
        check(tree(work) == before, "%s: something changed outside the spool folder" % label)
        shutil.rmtree(spool, ignore_errors=True)


def blob(n, seed):
    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))


def tarfile_archive(path, fmt, files, extra=()):
    """files: name -> bytes (folders added for the classes); extra: TarInfo, data pairs."""
    with tarfile.open(path, "w", format=fmt, encoding="utf-8") as t:
        for d in sorted({n.split("/")[0] for n in files if "/" in n}):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
        for ti, data in extra:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)


def sample_files(long_names, unicode_names):
    with open(PHOTO, "rb") as f:
        photo = f.read()
    files = {
        "cat/a.jpg": blob(1000, 1),
        "cat/b.PNG": blob(512, 2),
        "cat/c.jpeg": blob(513, 3),
        "cat/empty.png": b"",
        "dog/one.jpg": blob(1, 4),
        "dog/photo.jpg": photo,
        "dog/big.png": blob(70000, 5),
        "README.txt": b"hello\n",           # ignored: top level
        "cat/._a.jpg": blob(80, 6),          # ignored: dot name
        "cat/notes.txt": b"x" * 700,         # ignored: not an image
        "cat/deeper/x.jpg": blob(90, 7),     # ignored: three levels
    }
    ignored = 4
    # a name that needs ustar's prefix (90-byte class folder, 60-byte file name)
    files["k" * 90 + "/" + "f" * 56 + ".jpg"] = blob(600, 8)
    if long_names:
        files["longclass/" + "n" * 150 + ".png"] = blob(1500, 9)
        files["c" * 200 + "/" + "p" * 200 + ".jpg"] = blob(2100, 10)
    if unicode_names:
        files["été/猫.png"] = blob(333, 11)
        files["ünïcödé/ファイル.JPG"] = blob(4096, 12)
    return files, ignored


def test_tarfile(work):
    cases = [("USTAR", tarfile.USTAR_FORMAT, False, False),
             ("GNU", tarfile.GNU_FORMAT, True, True),
             ("PAX", tarfile.PAX_FORMAT, True, True)]
    for name, fmt, long_names, unicode_names in cases:
        files, ignored = sample_files(long_names, unicode_names)
        archive = os.path.join(work, "tarfile-%s.tar" % name)
        tarfile_archive(archive, fmt, files)
        expect_ok("tarfile " + name, archive, files, ignored, work)
        os.unlink(archive)
    # PAX with a global header (ignored) and a pax size record on every entry
    files, ignored = sample_files(True, True)
    archive = os.path.join(work, "tarfile-pax-global.tar")
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as t:
        for n, data in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            ti.pax_headers = {"size": str(len(data)), "comment": "per file"}
            t.addfile(ti, io.BytesIO(data))
    expect_ok("tarfile PAX + global header", archive, files, ignored + 1, work)
    os.unlink(archive)


def test_gnu_tar(work):
    for fmt in ("gnu", "oldgnu", "posix", "ustar", "v7"):
        long_ok = fmt in ("gnu", "oldgnu", "posix")
        files, ignored = sample_files(long_ok, long_ok)
        if fmt == "v7":  # names under 100 bytes only
            files = {k: v for k, v in files.items() if len(k.encode()) < 99}
        src = os.path.join(work, "src")
        for n, data in files.items():
            p = os.path.join(src, n)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        archive = os.path.join(work, "gnutar-%s.tar" % fmt)
        env = dict(os.environ, LC_ALL="C.UTF-8")
        p = subprocess.run(["tar", "--format=" + fmt, "-cf", archive, "-C", src, "."], capture_output=True, text=True, env=env)
        check(p.returncode == 0, "tar --format=%s: %s" % (fmt, p.stderr))
        shutil.rmtree(src)
        if p.returncode == 0:
            # GNU tar writes the folders too ("./", "./cat/", ...): skipped, not counted
            expect_ok("GNU tar --format=" + fmt, archive, files, ignored, work)
        os.unlink(archive)


def hostile_tarfile(work, outside):
    def ti(name, type_, linkname="", size=0):
        t = tarfile.TarInfo(name)
        t.type = type_
        t.linkname = linkname
        t.size = size
        return t

    good = {"cat/ok.jpg": blob(100, 20)}
    cases = [
        ("symlink to /etc", [(ti("cat/etc", tarfile.SYMTYPE, "/etc"), None), (ti("cat/etc/passwd.jpg", tarfile.REGTYPE, size=5), b"owned")], "symbolic link"),
        ("symlinked class folder", [(ti("evil", tarfile.SYMTYPE, outside), None), (ti("evil/x.jpg", tarfile.REGTYPE, size=5), b"owned")], "symbolic link"),
        ("../../x", [(ti("../../x.jpg", tarfile.REGTYPE, size=5), b"owned")], "'..'"),
        ("cat/../../x", [(ti("cat/../../x.jpg", tarfile.REGTYPE, size=5), b"owned")], "'..'"),
        ("absolute path", [(ti(os.path.join(outside, "abs.jpg"), tarfile.REGTYPE, size=5), b"owned")], "absolute path"),
        ("absolute /tmp/x", [(ti("/tmp/x", tarfile.REGTYPE, size=5), b"owned")], "absolute path"),
        ("hard link", [(ti("cat/h.jpg", tarfile.LNKTYPE, "cat/ok.jpg"), None)], "hard link"),
        ("hard link to /etc/passwd", [(ti("cat/p.jpg", tarfile.LNKTYPE, "/etc/passwd"), None)], "hard link"),
        ("character device", [(ti("cat/null", tarfile.CHRTYPE), None)], "character device"),
        ("block device", [(ti("cat/sda", tarfile.BLKTYPE), None)], "block device"),
        ("fifo", [(ti("cat/fifo", tarfile.FIFOTYPE), None)], "FIFO"),
    ]
    for fmt_name, fmt in (("GNU", tarfile.GNU_FORMAT), ("PAX", tarfile.PAX_FORMAT)):
        for what, extra, needle in cases:
            archive = os.path.join(work, "hostile.tar")
            tarfile_archive(archive, fmt, good, extra)
            refused("tarfile %s %s" % (fmt_name, what), archive, work, needle=needle)
            os.unlink(archive)


def hostile_gnu_tar(work):
    src = os.path.join(work, "src")
    os.makedirs(os.path.join(src, "cat"))
    with open(os.path.join(src, "cat", "ok.jpg"), "wb") as f:
        f.write(blob(100, 30))
    archive = os.path.join(work, "hostile.tar")
    os.symlink("/etc", os.path.join(src, "cat", "etc.jpg"))
    subprocess.run(["tar", "-cf", archive, "-C", src, "."], check=True)
    os.unlink(os.path.join(src, "cat", "etc.jpg"))
    refused("GNU tar symlink", archive, work, needle="symbolic link")
    os.mkfifo(os.path.join(src, "cat", "fifo"))
    subprocess.run(["tar", "--format=posix", "-cf", archive, "-C", src, "."], check=True)
    refused("GNU tar fifo", archive, work, needle="FIFO")
    os.unlink(archive)
    shutil.rmtree(src)


def not_tars_and_limits(work):
    files = {"cat/a.jpg": blob(2000, 40), "cat/b.jpg": blob(100, 41), "dog/c.png": blob(100, 42)}
    plain = os.path.join(work, "plain.tar")
    tarfile_archive(plain, tarfile.PAX_FORMAT, files)
    gz = os.path.join(work, "x.tar.gz")
    with tarfile.open(gz, "w:gz") as t:
        t.add(plain, arcname="cat/plain.jpg")
    refused("gzip-compressed tar", gz, work, needle="gzip")
    os.unlink(gz)
    refused("a JPEG", PHOTO, work, needle="JPEG")
    refused("entry over --max-entry", plain, work, status="over limit", needle="cat/a.jpg", opts=("--max-entry", "1999"))
    refused("--max-entries", plain, work, status="over limit", needle="entries", opts=("--max-entries", "3"))
    refused("--max-total", plain, work, status="over limit", needle="limit", opts=("--max-total", "4000"))
    os.unlink(plain)


def main():
    if not os.access(TOOL, os.X_OK):
        print("missing %s (make %s/tests/test_spool)" % (TOOL, BUILD))
        return 1
    base = tempfile.mkdtemp(prefix="vitd-test-spool-")
    try:
        # the spool folder sits two levels down, so '../../x' would land inside base
        work = os.path.join(base, "a", "b")
        outside = os.path.join(base, "outside")
        os.makedirs(work)
        os.makedirs(outside)
        test_tarfile(work)
        test_gnu_tar(work)
        before, tmp_x = tree(base), os.path.lexists("/tmp/x")
        hostile_tarfile(work, outside)
        hostile_gnu_tar(work)
        check(tree(base) == before, "the temporary tree changed during the hostile cases")
        check(os.path.lexists("/tmp/x") == tmp_x, "/tmp/x appeared")
        not_tars_and_limits(work)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("test_spool_tar: %d checks, %d failed" % (checks, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
