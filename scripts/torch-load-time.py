#!/usr/bin/env python3
"""PyTorch's ImageFolder-style load of an image folder, timed: the peer that trainer's loader
is measured against (README, "Loading real folders").

    .venv-interop/bin/python scripts/torch-load-time.py FOLDER [--size 32] [--workers N]

torchvision is not in the interop venv, so this is ImageFolder written out with the same
steps: sorted class folders, every file opened with Pillow, converted to RGB, resized
(bilinear) and made a tensor, through a torch.utils.data.DataLoader with `--workers`
processes (default: every core), until every image is a tensor in memory, as trainer holds
them before training.
"""

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


class ImageFolder(Dataset):
    """torchvision.datasets.ImageFolder's walk and loader, with ToTensor after a resize."""

    def __init__(self, root, size):
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.samples = []
        for label, name in enumerate(self.classes):
            for folder, _, files in sorted(os.walk(os.path.join(root, name))):
                for f in sorted(files):
                    if f.lower().endswith(EXTENSIONS):
                        self.samples.append((os.path.join(folder, f), label))
        self.size = size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        img = img.resize((self.size, self.size), Image.BILINEAR)
        array = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1), label


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    start = time.perf_counter()
    dataset = ImageFolder(args.folder, args.size)
    loader = DataLoader(dataset, batch_size=256, num_workers=args.workers)
    images = [batch for batch, _ in loader]
    total = sum(b.shape[0] for b in images)
    seconds = time.perf_counter() - start
    print(f"pytorch imagefolder: {total} images in {seconds:.2f} s ({args.workers} workers)")


if __name__ == "__main__":
    main()
