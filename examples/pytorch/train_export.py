#!/usr/bin/env python3
"""Train a CryptoNets-size CNN with a degree-2 polynomial activation in PyTorch on Fashion-MNIST,
and export it to ONNX for `cryptodl import`.

    python3 examples/pytorch/train_export.py --out cryptonets.onnx
    cryptodl import cryptonets.onnx --out cryptonets.safetensors
    cryptodl keygen --out keys && cryptodl encrypt --model cryptonets.safetensors --keys keys --out enc
    cryptodl score --model cryptonets.safetensors --eval-keys keys/eval.keys --in enc --out scored
    cryptodl decrypt --keys keys --in scored

Needs torch, onnx and numpy (pip install torch onnx onnxscript numpy); reads the Debian package
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or --data-dir. The input
normalisation is written into the ONNX file's metadata (cryptodl.mean, cryptodl.std), so
`cryptodl import` needs no flags. With --expected FILE it also writes, for the first 16 test
images, their pixels and the logits ONNX Runtime computes (the fixture of tests/onnx.rs).
"""

import argparse
import gzip
import json
import os
import struct

import numpy as np
import onnx
import torch
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels / 255


def read_idx(path):
    """An IDX file (raw or .gz) as a numpy array."""
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    _, _, dtype, ndim = struct.unpack(">BBBB", data[:4])
    assert dtype == 8, f"{path}: not a uint8 IDX file"
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Poly2(nn.Module):
    """c0 + c1 x + c2 x^2: the least-squares fit of ReLU on [-4, 4] (`cryptodl approx`)."""

    def __init__(self, c0=0.375, c1=0.5, c2=0.1171875):
        super().__init__()
        self.c0, self.c1, self.c2 = c0, c1, c2

    def forward(self, x):
        return self.c2 * x * x + self.c1 * x + self.c0


def cryptonets():
    return nn.Sequential(
        nn.Conv2d(1, 5, kernel_size=5, stride=2, padding=1),
        nn.BatchNorm2d(5),
        Poly2(),
        nn.Flatten(),
        nn.Linear(845, 100),
        nn.BatchNorm1d(100),
        Poly2(),
        nn.Linear(100, 10),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="the ONNX file to write")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--expected", help="also write pixels and ONNX Runtime logits of 16 test images")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)

    d = args.data_dir
    train_x = read_idx(f"{d}/train-images-idx3-ubyte")
    train_y = read_idx(f"{d}/train-labels-idx1-ubyte")
    test_x = read_idx(f"{d}/t10k-images-idx3-ubyte")
    test_y = read_idx(f"{d}/t10k-labels-idx1-ubyte")
    norm = lambda x: (torch.tensor(x, dtype=torch.float32)[:, None] / 255.0 - MEAN) / STD

    model = cryptonets()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = norm(train_x), torch.tensor(train_y, dtype=torch.long)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), 128):
            idx = perm[i : i + 128]
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(norm(test_x)).argmax(1).numpy() == test_y).mean()
        print(f"epoch {epoch + 1}: test accuracy {100 * acc:.2f}%")

    model.eval()
    dummy = norm(test_x[:1])
    torch.onnx.export(
        model,
        (dummy,),
        args.out,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    # Add the metadata, leaving the weights where the exporter put them (recent PyTorch writes
    # them to OUT.data beside the graph: keep both files together).
    m = onnx.load(args.out, load_external_data=False)
    for k, v in [
        ("cryptodl.mean", str(MEAN)),
        ("cryptodl.std", str(STD)),
        ("cryptodl.dataset", "fashion-mnist"),
        ("cryptodl.accuracy", f"{acc:.4f}"),
    ]:
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, args.out)
    data = args.out + ".data"
    extra = f" + {data} ({os.path.getsize(data)} bytes)" if os.path.exists(data) else ""
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes){extra}, test accuracy {100 * acc:.2f}%")

    if args.expected:
        import onnxruntime as ort

        pixels = test_x[:16]
        session = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
        logits = session.run(None, {"image": norm(pixels).numpy()})[0]
        with open(args.expected, "w") as f:
            json.dump(
                {
                    "source": "fashion-mnist test images 0..16, logits from ONNX Runtime "
                    + ort.__version__,
                    "pixels": pixels.reshape(16, -1).tolist(),
                    "logits": logits.astype(float).tolist(),
                },
                f,
            )
        print(f"wrote {args.expected}")


if __name__ == "__main__":
    main()
