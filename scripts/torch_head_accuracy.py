# PyTorch's same network and recipe on a class folder (argv: DIR EPOCHS HEAD HIDDEN DROPOUT): stratified 60/20/20 split
# (its own permutation), normalized by the training part's mean/std, Adam 0.001, batch 128.
import os, sys, random
import numpy as np, torch
from torch import nn
from PIL import Image
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
from torch_throughput import tiny_cnn
root, epochs, head, hidden, dropout = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
torch.manual_seed(42); rng = random.Random(42)
classes = sorted(os.listdir(root)); parts = {"train": [], "val": [], "test": []}
for c, name in enumerate(classes):
    files = sorted(os.listdir(os.path.join(root, name))); rng.shuffle(files)
    n = len(files); a, b = round(n * 0.6), round(n * 0.8)
    for part, chunk in (("train", files[:a]), ("val", files[a:b]), ("test", files[b:])):
        parts[part] += [(np.asarray(Image.open(os.path.join(root, name, f)).convert("L"), np.float32) / 255, c) for f in chunk]
def tensors(part):
    return torch.tensor(np.stack([x for x, _ in parts[part]]))[:, None], torch.tensor([y for _, y in parts[part]])
(xtr, ytr), (xva, yva), (xte, yte) = tensors("train"), tensors("val"), tensors("test")
mean, std = xtr.mean(), xtr.std(); xtr, xva, xte = [(x - mean) / std for x in (xtr, xva, xte)]
model = tiny_cnn(len(classes), 1, (32, 64), xtr.shape[-1], False, head, hidden, dropout)
opt = torch.optim.Adam(model.parameters(), 1e-3); loss_fn = nn.CrossEntropyLoss()
best = (-1, 0)
for epoch in range(epochs):
    model.train(); perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 128):
        idx = perm[i:i + 128]; opt.zero_grad(); loss_fn(model(xtr[idx]), ytr[idx]).backward(); opt.step()
    model.eval()
    with torch.no_grad():
        val = (model(xva).argmax(1) == yva).float().mean().item(); test = (model(xte).argmax(1) == yte).float().mean().item()
    if val > best[0]: best = (val, test)
print(f"torch {head} h{hidden} d{dropout} {epochs} epochs: best val {best[0]:.3f}, its test {best[1]:.3f}")
