#!/usr/bin/env python3
"""Encrypted inference from Python: the client makes keys and encrypts Fashion-MNIST test
images, the server scores them with the evaluation keys only, the client decrypts the logits,
and the predictions are checked against the plaintext model. The same files as the CLI's
(`keygen`, `encrypt`, `score`, `decrypt` could take over at any step).

    python examples/python/score.py --images 16 --out /tmp/job

Needs the wheel (see the README) and numpy; reads /usr/share/datasets/fashion-mnist
(`apt-get install dataset-fashion-mnist`, or --data-dir), else uses random images.
"""

import argparse
import gzip
import os
import sys
import time

import numpy as np

import cryptodl


def fashion_mnist(data_dir, n):
    """The first `n` test images (uint8, N x 28 x 28) and labels, or None without the files."""
    images = os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        return None
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--out", required=True, help="a new directory for keys, job and logits")
    args = ap.parse_args()

    model = cryptodl.Model.demo()  # the embedded cryptonets network (n8192, 128-bit)
    data = fashion_mnist(args.data_dir, args.images)
    if data is None:
        print(f"no Fashion-MNIST in {args.data_dir}: random images", file=sys.stderr)
        x = (np.random.default_rng(0).random((args.images, 28, 28)) * 255).astype(np.uint8)
        y = None
    else:
        x, y = data
    os.makedirs(args.out, exist_ok=True)
    keys, job, scored = (os.path.join(args.out, d) for d in ("keys", "job", "scored"))
    model_file = os.path.join(args.out, "model.safetensors")
    model.save(model_file)

    # Client: keys (the secret key stays in `keys`), then the encrypted job.
    cryptodl.keygen(keys, model=model)
    client = cryptodl.Client(keys)
    client.encrypt(model, x, job, labels=y)
    # Server: the model and keys/eval.keys only.
    t = time.perf_counter()
    done = cryptodl.Server(model_file, os.path.join(keys, "eval.keys"), device=args.device).score(job, scored)
    print(f"server: {done['images']} images in {time.perf_counter() - t:.2f} s on {done['device']}")
    # Client: logits, N x 10.
    logits = client.decrypt(scored)
    same = (logits.argmax(1) == model.predict(x).argmax(1)).mean()
    print(f"{100 * same:.1f}% same argmax as the plaintext model")
    if y is not None:
        print(f"accuracy {100 * (logits.argmax(1) == y).mean():.1f}% on {len(y)} test images")
    return 0 if same == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
