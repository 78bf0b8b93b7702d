#!/usr/bin/env python3
"""The colour acceptance check of the README: a folder whose three classes differ only in hue
at equal luminance (a blue, an orange or a grey disc on grey noise), and the same Tiny CNN
trained on its RGB pixels in PyTorch, as the reference for `trainer --data`.

    python3 scripts/hue-check.py make DIR [PER_CLASS]   # writes DIR/{blue,grey,orange}/*.png
    python3 scripts/hue-check.py torch DIR              # PyTorch on the RGB pixels (needs torch)

`make` needs only the standard library; `torch` reads the PNGs `make` wrote (8-bit RGB, no
filter) and trains Conv(3,8) ReLU MaxPool Conv(8,16) ReLU AvgPool Linear(16,3) with Adam
(lr 0.006, batch 32, 10 epochs, gradients clipped to 2.0), split 60/20/20 per class, and
prints the test accuracy of the best validation epoch (SEED=N picks PyTorch's seed, 42 by
default).
"""
import os
import random
import struct
import sys
import zlib

SIZE = 24


def write_png(path, pixels):
    raw = b"".join(b"\x00" + bytes(pixels[r * SIZE * 3:(r + 1) * SIZE * 3]) for r in range(SIZE))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def read_png(path):
    data = open(path, "rb").read()[8:]
    idat = b""
    while data:
        (length,) = struct.unpack(">I", data[:4])
        if data[4:8] == b"IDAT":
            idat += data[8:8 + length]
        data = data[12 + length:]
    raw = zlib.decompress(idat)
    row = SIZE * 3 + 1
    return [raw[r * row + 1 + i] for r in range(SIZE) for i in range(SIZE * 3)]


def make(root, per_class):
    def equal_luma(r, b):  # green such that 0.2126 R + 0.7152 G + 0.0722 B = 128
        return (r, round((128 - 0.2126 * r - 0.0722 * b) / 0.7152), b)

    colours = {"blue": equal_luma(40, 250), "grey": (128, 128, 128), "orange": equal_luma(250, 20)}
    rng = random.Random(3)
    for name, colour in colours.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            cx, cy, radius = rng.randint(6, 17), rng.randint(6, 17), rng.randint(4, 6)
            pixels = []
            for y in range(SIZE):
                for x in range(SIZE):
                    noise = rng.randint(-25, 25)
                    if (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius:
                        pixels += [max(0, min(255, c + noise // 3)) for c in colour]
                    else:
                        pixels += [max(0, min(255, 128 + noise))] * 3
            write_png(os.path.join(root, name, f"{i:03}.png"), pixels)
    print(f"{root}: {per_class} images of {SIZE}x{SIZE} in each of {', '.join(colours)}")


def train(root):
    import torch
    from torch import nn

    torch.manual_seed(int(os.environ.get("SEED", "42")))
    classes = sorted(os.listdir(root))
    parts = {"train": [], "val": [], "test": []}
    rng = random.Random(42)
    for label, name in enumerate(classes):
        files = sorted(os.listdir(os.path.join(root, name)))
        rng.shuffle(files)
        n_train, n_val = round(0.6 * len(files)), round(0.2 * len(files))
        for j, f in enumerate(files):
            part = "train" if j < n_train else "val" if j < n_train + n_val else "test"
            pixels = torch.tensor(read_png(os.path.join(root, name, f)), dtype=torch.float32)
            parts[part].append((pixels.view(SIZE, SIZE, 3).permute(2, 0, 1) / 255.0, label))
    stack = {k: (torch.stack([x for x, _ in v]), torch.tensor([y for _, y in v])) for k, v in parts.items()}
    mean = stack["train"][0].mean(dim=(0, 2, 3), keepdim=True)
    std = stack["train"][0].std(dim=(0, 2, 3), keepdim=True)
    stack = {k: ((x - mean) / std, y) for k, (x, y) in stack.items()}
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, len(classes)),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.006)
    x_train, y_train = stack["train"]
    best = (-1.0, None)
    for _ in range(10):
        model.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val = (model(stack["val"][0]).argmax(1) == stack["val"][1]).float().mean().item()
            test = (model(stack["test"][0]).argmax(1) == stack["test"][1]).float().mean().item()
        if val > best[0]:
            best = (val, test)
    print(f"pytorch_rgb_val_acc: {best[0]:.3f}")
    print(f"pytorch_rgb_test_accuracy: {best[1]:.3f}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 40)
    elif len(sys.argv) == 3 and sys.argv[1] == "torch":
        train(sys.argv[2])
    else:
        sys.exit(__doc__)
