#!/usr/bin/env python3
"""Splits MNIST's 60,000 training images into a training split and a held-out test split, written
as IDX files that every cryptodl command reads (`--data-dir OUT`):

    OUT/train-images-idx3-ubyte, OUT/train-labels-idx1-ubyte   the first 60,000 - HOLDOUT
    OUT/t10k-images-idx3-ubyte,  OUT/t10k-labels-idx1-ubyte    the last HOLDOUT (default 10,000)

For machines that have the training files but not the official test set (this project's shared
data): accuracies measured on OUT are on the held-out split, and must say so.

    python3 examples/mnist/holdout.py ../shared/data/mnist /tmp/mnist-holdout
"""

import gzip
import os
import struct
import sys


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, kind, nd = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    body = data[4 + 4 * nd:]
    per = 1
    for d in dims[1:]:
        per *= d
    if len(body) != dims[0] * per:
        sys.exit(f"{path}: {len(body)} bytes of data, the header says {dims}")
    return dims, per, body


def write_idx(path, dims, body):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, len(dims)))
        f.write(struct.pack(">" + "I" * len(dims), *dims))
        f.write(body)
    os.replace(tmp, path)


def find(src, name):
    for candidate in (name, name + ".gz"):
        p = os.path.join(src, candidate)
        if os.path.exists(p):
            return p
    sys.exit(f"{src}: no {name}[.gz]")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    holdout = int(sys.argv[3]) if len(sys.argv) == 4 else 10_000
    os.makedirs(out, exist_ok=True)
    idims, iper, images = read_idx(find(src, "train-images-idx3-ubyte"))
    ldims, _, labels = read_idx(find(src, "train-labels-idx1-ubyte"))
    n = idims[0]
    if ldims[0] != n or not 0 < holdout < n:
        sys.exit(f"{n} images, {ldims[0]} labels, holdout {holdout}: nothing to split")
    k = n - holdout
    write_idx(os.path.join(out, "train-images-idx3-ubyte"), (k,) + idims[1:], images[: k * iper])
    write_idx(os.path.join(out, "train-labels-idx1-ubyte"), (k,), labels[:k])
    write_idx(os.path.join(out, "t10k-images-idx3-ubyte"), (holdout,) + idims[1:], images[k * iper:])
    write_idx(os.path.join(out, "t10k-labels-idx1-ubyte"), (holdout,), labels[k:])
    print(f"{out}: {k} training images, the last {holdout} held out as the test split")


if __name__ == "__main__":
    main()
