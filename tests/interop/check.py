#!/usr/bin/env python3
"""The interop check of tests/interop.rs: a pack's exports opened by the real clients.

    check.py make DIR CHANNELS PER_CLASS SIZE   # a folder of 3 classes of PNGs (1 or 3 channels)
    check.py check TRAINER PACK                 # PyTorch, onnxruntime and TensorBoard on PACK
    check.py recipes TRAINER DIR [BACKEND]      # trainer's recipes against PyTorch's, same start

`check` reads the pack's test split from checkpoints/best_model.json, asks `TRAINER predict
--json` for trainer's logits on those files, and checks that
- PyTorch, with the Sequential of the safetensors metadata and its weights, gives logits within
  1e-4 of trainer's and the recorded test accuracy;
- onnxruntime, fed the raw pixels, gives the same predictions (and logits within 1e-4);
- TensorBoard's EventAccumulator finds every scalar of every model's run, equal to
  outputs/training_log.csv, and the two images.
`recipes` trains the CNN on a folder it makes in DIR with one full-batch step an epoch (so
the batch order cannot differ), for each recipe (optimizers, schedules, warm-up, label
smoothing), and checks that PyTorch with the same recipe (torch.optim.AdamW, SGD(momentum,
nesterov), CosineAnnealingLR, OneCycleLR(cycle_momentum=False), MultiStepLR, a linear
warm-up, CrossEntropyLoss(label_smoothing)), from the same initial weights (a run at lr
1e-30, exported, with batch norm for the batch-norm recipe), gives every epoch's training loss within RECIPE_RTOL (5e-6) relative
(trainer's losses read at full precision from its TensorBoard run; measured: at most 5.4e-7).
One-cycle runs twice: with PyTorch's 30% rising phase (over by the second of the 6 steps)
and with --warmup-epochs 4 (pct_start 4/6), whose steps 1 and 2 are on the rising cosine
(a third and two thirds of the way up, where a linear rise would differ).
Prints one line per check; exits 1 with the reason on the first failure.
"""
import csv
import json
import os
import random
import struct
import subprocess
import sys
import zlib

CLASSES = ("bars", "rings", "speckle")


def write_png(path, rows, size, channels):
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", size, size, 8, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def read_png(path):
    """The (C, H, W) float32 pixels in [0, 1] of a PNG `make` wrote (8-bit, filter 0)."""
    import numpy as np

    data = open(path, "rb").read()[8:]
    idat, width, height, colour = b"", 0, 0, 0
    while data:
        (length,) = struct.unpack(">I", data[:4])
        kind, body = data[4:8], data[8:8 + length]
        if kind == b"IHDR":
            width, height, _, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        data = data[12 + length:]
    channels = {0: 1, 2: 3}[colour]
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    rows = [raw[r * stride + 1:(r + 1) * stride] for r in range(height)]
    pixels = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, channels)
    return (pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)).copy()


def make(folder, channels, per_class, size):
    rng = random.Random(7)
    for k, name in enumerate(CLASSES):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in range(per_class):
            tint = [rng.uniform(0.5, 1.0) for _ in range(channels)]
            phase = rng.randrange(4)
            rows = []
            for y in range(size):
                row = []
                for x in range(size):
                    if k == 0:
                        on = (x + phase) % 4 < 2
                    elif k == 1:
                        on = int(((x - size / 2) ** 2 + (y - size / 2) ** 2) ** 0.5 + phase) % 4 < 2
                    else:
                        on = rng.random() < 0.5
                    for c in range(channels):
                        v = (0.8 if on else 0.2) * tint[c] + rng.uniform(-0.1, 0.1)
                        row.append(max(0, min(255, int(v * 255))))
                rows.append(row)
            write_png(os.path.join(folder, name, f"{i:03d}.png"), rows, size, channels)


def fail(message):
    print(f"interop: FAIL: {message}")
    sys.exit(1)


def test_split(pack):
    meta = json.load(open(os.path.join(pack, "checkpoints", "best_model.json")))
    folder = meta["data"]["folder"]
    files = [f["file"] for f in meta["data_manifest"]["files"] if f["part"] == "test"]
    paths = [os.path.join(folder, f) for f in files]
    labels = [meta["classes"].index(f.split("/")[0]) for f in files]
    return meta, paths, labels


def trainer_logits(trainer, pack, paths):
    import numpy as np

    out = subprocess.run([trainer, "predict", "--backend", "cpu", "--json", "--checkpoint", pack, *paths],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"trainer predict exited {out.returncode}: {out.stderr.strip()}")
    return np.array([p["logits"] for p in json.loads(out.stdout)], dtype=np.float32)


def check_torch(pack, meta, images, labels, expected):
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch import nn

    path = os.path.join(pack, "checkpoints", "best_model.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    model = eval(metadata["torch_sequential"], {"nn": nn})
    model.load_state_dict(load_file(path))
    model.eval()
    norm = json.loads(metadata["normalization"])
    c = int(metadata["channels"])
    mean = torch.tensor(norm["mean"]).view(1, c, 1, 1)
    std = torch.tensor(norm["std"]).view(1, c, 1, 1)
    with torch.no_grad():
        logits = model((torch.from_numpy(images) - mean) / std).numpy()
    gap = float(np.abs(logits - expected).max())
    if gap > 1e-4:
        fail(f"PyTorch logits differ from trainer's by {gap:.3g} (> 1e-4)")
    accuracy = float((logits.argmax(1) == np.array(labels)).mean())
    if abs(accuracy - meta["test_accuracy"]) > 1e-4:
        fail(f"PyTorch test accuracy {accuracy:.4f}, recorded {meta['test_accuracy']}")
    print(f"interop: pytorch {metadata['model']}: logits within {gap:.2g} of trainer's, "
          f"test accuracy {accuracy:.4f} (recorded {meta['test_accuracy']})")


def check_onnx(pack, images, expected):
    import numpy as np
    import onnx
    import onnxruntime as ort

    path = os.path.join(pack, "checkpoints", "best_model.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        fail(f"ONNX opset {opset} < 13")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    if not (logits.argmax(1) == expected.argmax(1)).all():
        fail("onnxruntime's predictions differ from trainer's")
    gap = float(np.abs(logits - expected).max())
    if gap > 1e-4:
        fail(f"onnxruntime logits differ from trainer's by {gap:.3g} (> 1e-4)")
    print(f"interop: onnxruntime opset {opset}: same predictions, logits within {gap:.2g}")


def check_tensorboard(pack):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = list(csv.DictReader(open(os.path.join(pack, "outputs", "training_log.csv"), newline="")))
    columns = {"loss/train": "train_loss", "loss/validation": "val_loss",
               "accuracy/train": "train_acc", "accuracy/validation": "val_acc"}
    runs = sorted(os.listdir(os.path.join(pack, "tensorboard")))
    names = {r["model"] for r in rows}
    if len(runs) != len(names):
        fail(f"tensorboard has runs {runs} for the models {sorted(names)}")
    for run in runs:
        # "cnn-16-32-64" is "CNN 16-32-64", "cnn-6-8-flatten-h12" is "CNN 6-8 flatten-h12".
        name = {"baseline": "Flatten baseline", "cnn": "Tiny CNN"}.get(run)
        mine = [r for r in rows if r["model"] == name or r["model"].lower().replace(" ", "-") == run]
        events = EventAccumulator(os.path.join(pack, "tensorboard", run), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        tags = events.Tags()
        for tag, column in columns.items():
            got = [(e.step, e.value) for e in events.Scalars(tag)]
            want = [(int(r["epoch"]), float(r[column])) for r in mine]
            if [s for s, _ in got] != [s for s, _ in want] or any(abs(g - w) > 1e-4 for (_, g), (_, w) in zip(got, want)):
                fail(f"tensorboard {run} {tag}: {got} against training_log.csv {want}")
        speeds = [e.value for e in events.Scalars("throughput/train_samples_per_sec")]
        if len(speeds) != len(mine) or min(speeds) <= 0:
            fail(f"tensorboard {run}: samples/s {speeds}")
        if sorted(tags["images"]) != ["confusion_matrix", "review_grid"]:
            fail(f"tensorboard {run}: images {tags['images']}")
        print(f"interop: tensorboard {run}: {len(mine)} epochs of 5 scalars match training_log.csv, 2 images")


def check(trainer, pack):
    import numpy as np

    meta, paths, labels = test_split(pack)
    images = np.stack([read_png(p) for p in paths])
    expected = trainer_logits(trainer, pack, paths)
    check_torch(pack, meta, images, labels, expected)
    check_onnx(pack, images, expected)
    check_tensorboard(pack)


RECIPES = [
    ("adam", []),
    ("adamw", ["--optimizer", "adamw", "--weight-decay", "0.05"]),
    ("sgd", ["--optimizer", "sgd", "--lr-cnn", "0.05"]),
    ("sgd-nesterov", ["--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--weight-decay", "0.001", "--lr-cnn", "0.05"]),
    ("cosine", ["--schedule", "cosine"]),
    ("onecycle", ["--schedule", "onecycle"]),
    ("onecycle-rising", ["--schedule", "onecycle", "--warmup-epochs", "4"]),
    ("step", ["--schedule", "step"]),
    ("warmup", ["--warmup-epochs", "2"]),
    ("smoothing", ["--label-smoothing", "0.1"]),
    # Batch statistics in training, from a start with batch norm (PyTorch's model in train mode).
    ("batch-norm", ["--batch-norm"]),
]
EPOCHS = 6
# Ten times the largest gap measured (5.4e-7, cpu and wgpu): a schedule or an optimizer off
# by one step's rate moves the loss by 1e-3 or more.
RECIPE_RTOL = 5e-6


def train_pack(trainer, data, pack, args, epochs=EPOCHS, backend="cpu"):
    cmd = [trainer, "--backend", backend, "--quiet", "--data", data, "--out", pack, "--models", "cnn",
           "--image-size", "16", "--epochs-cnn", str(epochs), "--batch-size", "54", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 3):
        fail(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")


def flag(args, name, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


def torch_losses(pack0, data, args):
    """PyTorch's training loss of each epoch (one full-batch step each) under the recipe."""
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch import nn

    path = os.path.join(pack0, "checkpoints", "best_model.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    model = eval(metadata["torch_sequential"], {"nn": nn})
    model.load_state_dict(load_file(path))
    meta = json.load(open(os.path.join(pack0, "checkpoints", "best_model.json")))
    files = [f["file"] for f in meta["data_manifest"]["files"] if f["part"] == "train"]
    images = torch.from_numpy(np.stack([read_png(os.path.join(data, f)) for f in files]))
    labels = torch.tensor([meta["classes"].index(f.split("/")[0]) for f in files])
    norm = json.loads(metadata["normalization"])
    c = len(norm["mean"])
    x = (images - torch.tensor(norm["mean"]).view(1, c, 1, 1)) / torch.tensor(norm["std"]).view(1, c, 1, 1)
    lr = flag(args, "--lr-cnn", 0.006)
    wd = flag(args, "--weight-decay", 0.0)
    optimizer = {
        "adam": lambda: torch.optim.Adam(model.parameters(), lr=lr),
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd),
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=lr, momentum=flag(args, "--momentum", 0.0),
                                       nesterov="--nesterov" in args, weight_decay=wd),
    }[flag(args, "--optimizer", "adam")]()
    schedule = flag(args, "--schedule", "constant")
    warmup = flag(args, "--warmup-epochs", 0.0)
    scheduler = {
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS),
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=EPOCHS,
                                                                cycle_momentum=False,
                                                                pct_start=warmup / EPOCHS if warmup > 0 else 0.3),
        "step": lambda: torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(0.5 * EPOCHS), int(0.75 * EPOCHS)], gamma=0.1),
        "constant": lambda: torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0),
    }[schedule]()
    criterion = nn.CrossEntropyLoss(label_smoothing=flag(args, "--label-smoothing", 0.0))
    losses = []
    for _ in range(EPOCHS):
        optimizer.zero_grad()
        loss = criterion(model(x), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=2.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def trainer_losses(pack):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The CNN's one run: "cnn", or "cnn-8-16-bn" with batch norm.
    (run,) = os.listdir(os.path.join(pack, "tensorboard"))
    events = EventAccumulator(os.path.join(pack, "tensorboard", run), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars("loss/train")]


def recipes(trainer, workdir, backend="cpu"):
    data = os.path.join(workdir, "data")
    make(data, 1, 30, 16)
    starts = {}
    for name, args in RECIPES:
        # The start has the recipe's shape (batch norm or not): its weights are the same.
        shape = tuple(a for a in args if a == "--batch-norm")
        if shape not in starts:
            starts[shape] = os.path.join(workdir, "start" + "".join(shape))
            train_pack(trainer, data, starts[shape], ["--lr-cnn", "1e-30", *shape], epochs=1)
        pack0 = starts[shape]
        pack = os.path.join(workdir, name)
        # A batch-norm step of the WGSL kernels runs the whole batch (54 images here) in one
        # invocation: past llvmpipe's loop cap, so on wgpu this recipe takes burn's layers
        # (tests/gpu_kernels.rs checks the batch-norm kernels against autodiff).
        extra = ["--no-gpu-kernels"] if backend == "wgpu" and "--batch-norm" in args else []
        train_pack(trainer, data, pack, [*args, *extra], backend=backend)
        mine, theirs = trainer_losses(pack), torch_losses(pack0, data, args)
        gaps = [abs(a - b) / abs(b) for a, b in zip(mine, theirs)]
        if len(mine) != EPOCHS or max(gaps) > RECIPE_RTOL:
            fail(f"recipe {name}: trainer {mine} against PyTorch {theirs}")
        print(f"interop: recipe {name} ({backend}): {EPOCHS} epochs' training loss within {max(gaps):.1e} relative of PyTorch's "
              f"(first {mine[0]:.6f}, last {mine[-1]:.6f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["make"] and len(sys.argv) == 6:
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 4:
        check(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["recipes"] and len(sys.argv) in (4, 5):
        recipes(*sys.argv[2:])
    else:
        sys.exit(__doc__)
