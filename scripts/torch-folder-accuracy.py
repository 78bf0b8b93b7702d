#!/usr/bin/env python3
"""PyTorch's side of an accuracy comparison on an image folder, on the SAME split as a
trainer run: reads the run's checkpoints/best_model.json (its data manifest names every
file's part), trains the peer's network of the same shape (../shared/peers/torch_throughput.py
`tiny_cnn`) with the same recipe (Adam, batch, epochs; inputs normalized by the training
part's mean and std), and prints the test accuracy of the epoch with the best validation
accuracy, as the trainer's pack keeps it.

  python scripts/torch-folder-accuracy.py RUN_DIR DATA_DIR [--epochs 5] [--lr 0.001]
      [--batch 128] [--seed 0] [--batch-norm]

The shape (widths, head, hidden, dropout, image size) is read from the checkpoint."""
import argparse, json, os, sys, time

import numpy as np
import torch
from torch import nn
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
from torch_throughput import tiny_cnn  # noqa: E402  (the peer's network definition)


def load(data_dir, files, size, channels):
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), channels, size, size), np.float32)
    for i, name in enumerate(files):
        img = Image.open(os.path.join(data_dir, name)).convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        a = np.asarray(img, np.float32) / 255.0
        out[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir"); p.add_argument("data_dir")
    p.add_argument("--epochs", type=int, default=5); p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=128); p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-norm", action="store_true")
    a = p.parse_args()
    ck = json.load(open(os.path.join(a.run_dir, "checkpoints", "best_model.json")))
    size, classes = ck["image_size"], ck["classes"]
    channels = len(ck["normalization"]["mean"]) if isinstance(ck["normalization"].get("mean"), list) else 1
    parts = {"train": [], "val": [], "test": []}
    for f in ck["data_manifest"]["files"]:
        parts[f["part"]].append(f["file"])
    index = {c: i for i, c in enumerate(classes)}
    torch.manual_seed(a.seed); torch.set_num_threads(os.cpu_count() or 1)
    x, y = {}, {}
    for part, files in parts.items():
        x[part] = torch.from_numpy(load(a.data_dir, files, size, channels))
        y[part] = torch.tensor([index[f.split("/")[0]] for f in files])
    mean, std = x["train"].mean(), x["train"].std()
    for part in x:
        x[part] = (x[part] - mean) / std
    widths = tuple(ck["cnn_widths"])
    model = tiny_cnn(len(classes), channels, widths, size, a.batch_norm, ck.get("head", "gap"),
                     ck.get("hidden", 0) or 0, ck.get("dropout", 0.0) or 0.0)
    opt = torch.optim.Adam(model.parameters(), a.lr); loss_fn = nn.CrossEntropyLoss()
    best = (-1.0, 0.0, 0)
    started = time.time()
    for epoch in range(1, a.epochs + 1):
        model.train(); perm = torch.randperm(len(x["train"]))
        for i in range(0, len(perm), a.batch):
            idx = perm[i:i + a.batch]
            opt.zero_grad(); loss_fn(model(x["train"][idx]), y["train"][idx]).backward(); opt.step()
        model.eval()
        with torch.no_grad():
            acc = {k: (torch.cat([model(x[k][i:i + 1024]) for i in range(0, len(x[k]), 1024)]).argmax(1) == y[k]).float().mean().item()
                   for k in ("val", "test")}
        print(f"epoch {epoch}: val {acc['val']:.4f} test {acc['test']:.4f} ({time.time() - started:.0f} s)", flush=True)
        if acc["val"] > best[0]:
            best = (acc["val"], acc["test"], epoch)
    print(f"torch {ck['model_name']}: {len(x['train'])} train / {len(x['val'])} val / {len(x['test'])} test images, "
          f"best val {best[0]:.4f} (epoch {best[2]}), its test accuracy {best[1]:.4f}")


if __name__ == "__main__":
    main()
