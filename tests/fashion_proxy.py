"""fashion_proxy.py - real Fashion-MNIST test images (Debian's dataset-fashion-mnist) as PNG
files and as proxy-set tar archives (class folders named by label index), for the admin
tests and benchmarks. Imported by tests/test_admin.py, tests/soak_swap.py and
tests/bench_job_latency.py."""

import gzip
import io
import os
import tarfile

import numpy as np
from PIL import Image

FASHION = "/usr/share/datasets/fashion-mnist"


def idx(path):
    """An IDX file (gzip) as a numpy array."""
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


X = idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
Y = idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))


def png(i):
    """Test image i as PNG bytes."""
    bio = io.BytesIO()
    Image.fromarray(X[i]).save(bio, "PNG")
    return bio.getvalue()


def proxy_tar(per_class, start=0, fmt=tarfile.USTAR_FORMAT):
    """The first per_class test images of each class from index start on, as class/imgNNNNN.png."""
    bio = io.BytesIO()
    count = [0] * 10
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as t:
        for i in range(start, len(Y)):
            c = int(Y[i])
            if count[c] >= per_class:
                continue
            count[c] += 1
            data = png(i)
            ti = tarfile.TarInfo(f"{c}/img{i:05d}.png")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
            if min(count) >= per_class:
                break
    return bio.getvalue()
