#!/usr/bin/env python3
"""Makes an image folder as public datasets come: class folders with long names, tens of
thousands of small pictures, and optionally the dirt of real downloads (mixed sizes and modes,
byte-identical copies within and across classes, corrupt files) and a pre-split layout.

    python3 scripts/make-dataset.py OUT [--images 60000] [--size 32] [--mode rgb|gray]
        [--pre-split] [--dirty] [--seed 1]

Needs Pillow and numpy (the interop venv has both: .venv-interop/bin/python). The pictures
are procedural (a class-coloured shape at a random place on noise) so a small CNN can learn
them. Never commit what it writes.
"""

import argparse
import os
import random

import numpy as np
from PIL import Image

CLASSES = [
    "t-shirt-top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]


def picture(rng, label, size, mode):
    """One size x size picture of class `label`: noise and a shape whose place varies."""
    img = rng.normal(0.35, 0.12, (size, size, 3))
    hue = np.array([(label * 37 % 10) / 10, (label * 61 % 10) / 10, (label * 83 % 10) / 10])
    r0, c0 = rng.integers(0, size // 2, 2)
    extent = size // 3 + label % 4
    if label % 2 == 0:
        img[r0:r0 + extent, c0:c0 + 2 + label // 2] += hue
    else:
        img[r0:r0 + 2 + label // 2, c0:c0 + extent] += hue
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    picture = Image.fromarray(img, "RGB")
    return picture.convert("L") if mode == "gray" else picture


def oddity(picture, rng, size):
    """A mixed size or mode, as real folders have."""
    kind = rng.integers(0, 5)
    if kind == 0:
        return picture.resize((size * 2, size + 3))
    if kind == 1:
        return picture.convert("RGBA")
    if kind == 2:
        return picture.convert("P")
    if kind == 3:
        return picture.convert("L")
    return Image.fromarray(np.asarray(picture.convert("L"), dtype=np.uint16) * 257)


def write_split(root, count, size, mode, rng, dirty, start):
    """`count` pictures spread over the classes under root/<class>/; returns the paths."""
    paths = []
    for i in range(count):
        label = i % len(CLASSES)
        folder = os.path.join(root, CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        pic = picture(rng, label, size, mode)
        if dirty and rng.random() < 0.02:
            pic = oddity(pic, rng, size)
        path = os.path.join(folder, f"{start + i:06d}.png")
        pic.save(path)
        paths.append(path)
    return paths


def dirty_up(paths, rng, root):
    """Copies within a class, copies across classes, corrupt files: a few of each."""
    pyrng = random.Random(int(rng.integers(0, 2**31)))
    n = max(1, len(paths) // 1000)
    for path in pyrng.sample(paths, n):
        base, ext = os.path.splitext(path)
        with open(path, "rb") as src, open(base + " (1)" + ext, "wb") as dst:
            dst.write(src.read())
    for path in pyrng.sample(paths, n):
        own = os.path.basename(os.path.dirname(path))
        other = pyrng.choice([c for c in CLASSES if c != own])
        with open(path, "rb") as src:
            data = src.read()
        with open(os.path.join(root, other, "copied-" + os.path.basename(path)), "wb") as dst:
            dst.write(data)
    for k in range(n):
        with open(os.path.join(root, pyrng.choice(CLASSES), f"corrupt-{k}.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + bytes(pyrng.getrandbits(8) for _ in range(64)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--images", type=int, default=60000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--mode", choices=["rgb", "gray"], default="rgb")
    parser.add_argument("--pre-split", action="store_true", help="train/ and test/ (6:1)")
    parser.add_argument("--dirty", action="store_true", help="odd sizes/modes, copies, corrupt files")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.pre_split:
        test = args.images // 7
        train_root = os.path.join(args.out, "train")
        test_root = os.path.join(args.out, "test")
        paths = write_split(train_root, args.images - test, args.size, args.mode, rng, args.dirty, 0)
        test_paths = write_split(test_root, test, args.size, args.mode, rng, args.dirty, len(paths))
        if args.dirty:
            dirty_up(paths, rng, train_root)
            # A test picture also in train: must not leak.
            for path in test_paths[:3]:
                label = os.path.basename(os.path.dirname(path))
                with open(path, "rb") as src, open(
                    os.path.join(train_root, label, "leaked-" + os.path.basename(path)), "wb"
                ) as dst:
                    dst.write(src.read())
    else:
        paths = write_split(args.out, args.images, args.size, args.mode, rng, args.dirty, 0)
        if args.dirty:
            dirty_up(paths, rng, args.out)
    print(f"wrote {args.images} pictures under {args.out}")


if __name__ == "__main__":
    main()
