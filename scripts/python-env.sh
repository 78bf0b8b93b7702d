#!/usr/bin/env bash
# Installs the Python environment for the PyTorch/ONNX interop checks: PyTorch on the
# CPU, onnxruntime, onnx, safetensors, tensorboard and numpy, into a venv.
#
# Usage: scripts/python-env.sh [DIR]   (DIR defaults to .venv-interop under the repo root)
# It is idempotent: if DIR/bin/python already imports everything, it is reused as is.
#
# Why torch goes in this way: PyPI has no CPU-only torch for Linux x86_64 (the +cpu
# builds live only on download.pytorch.org, which our machines cannot reach), and
# `pip install torch==2.15.0` pulls ~2.5 GB of nvidia-* CUDA wheels and triton: 5.3 GB
# for torch alone, 63 s. `pip install --no-deps torch` alone does not import: torch's
# own .so files are linked against libcudart, libcublas, libcudnn, libnccl, ... and fail
# to load without them. So the script installs torch with --no-deps plus its pure-Python
# dependencies, then builds tiny no-op stand-ins for just the CUDA sonames torch's .so
# files link against (generated with cc from the symbols those files import, placed in
# torch/lib, which is on their RPATH). Nothing on the CPU path calls them;
# torch.cuda.is_available() is False, device_count() is 0.
# If cc/objdump/readelf are missing, or PYTHON_ENV_REAL_CUDA_LIBS=1, it installs the
# real nvidia runtime wheels torch links against instead (no triton/cusolver): ~4.3 GB.
#
# Measured on this machine (2 cores, no GPU, 2026-11-29), empty pip cache: fresh install
# 1.6 GB in 39 s (torch 1.2 GB of it); reuse path 2 s (one import check). For comparison:
# plain `pip install torch==2.15.0` is 5.3 GB / 63 s for torch alone; the real-CUDA-libs
# fallback below is 4.3 GB / 53 s for the whole env.
set -euo pipefail

cd "$(dirname "$0")/.."
DIR="${1:-.venv-interop}"
CHECK='import torch, onnxruntime, safetensors, tensorboard, numpy, onnx'

if [[ -x "$DIR/bin/python" ]] && "$DIR/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "python env: $DIR (reused)"
    exit 0
fi

start=$(date +%s)
if [[ -e "$DIR" && ! -f "$DIR/pyvenv.cfg" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    echo "python-env: $DIR exists and is not a venv; refusing to clear it" >&2
    exit 1
fi
PYTHON="${PYTHON:-/usr/bin/python3}"
[[ -x "$PYTHON" ]] || PYTHON=python3
"$PYTHON" -m venv --clear "$DIR"
PY="$DIR/bin/python"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
pip_install() {
    # pip warns (on stderr, exit 0) that torch's CUDA requirements are missing; that is
    # intended, so keep pip's output to show only when it fails.
    if ! "$PY" -m pip --disable-pip-version-check -q install "$@" >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
}

# Everything except torch, pinned (torch's pure-Python deps, then the rest with theirs).
pip_install \
    filelock==4.3.1 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 \
    networkx==3.6.1 jinja2==3.1.6 MarkupSafe==3.0.4 fsspec==2026.9.0 setuptools==84.2.1 \
    numpy==2.4.6 onnxruntime==1.32.0 onnx==1.23.2 safetensors==0.8.0 \
    tensorboard==2.21.0 protobuf==7.36.2 flatbuffers==25.12.19 packaging==26.4 \
    ml_dtypes==0.6.0 absl-py==2.5.1 grpcio==1.85.3 Markdown==3.11.3 Werkzeug==3.1.9 \
    pillow==13.0.0 tensorboard-data-server==0.7.2
pip_install --no-deps torch==2.15.0

TORCH_DIR=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')/torch
if [[ "${PYTHON_ENV_REAL_CUDA_LIBS:-0}" != 1 ]] && command -v cc >/dev/null \
    && command -v objdump >/dev/null && command -v readelf >/dev/null; then
    "$PY" - "$TORCH_DIR" <<'EOF'
# Build no-op stand-ins for the CUDA libraries that torch's .so files are linked against.
import glob, os, re, subprocess, sys, tempfile

torch_dir = sys.argv[1]
sos = [p for p in glob.glob(os.path.join(torch_dir, "**", "*.so*"), recursive=True) if os.path.isfile(p)]

def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()

missing, syslibs = set(), set()
for p in sos:
    for line in run("ldd", p):
        m = re.match(r"\s*(\S+) => (.*?) \(", line)
        if "not found" in line:
            missing.add(line.split()[0])
        elif m and not m.group(2).startswith(torch_dir):
            syslibs.add(m.group(2))

def dynsyms(p):
    for line in run("objdump", "-T", p):
        m = re.match(r"^[0-9a-f]+ (.{7}) (\S+)\s+[0-9a-f]+\s+(?:\((\S+)\)|(\S+))?\s*(\S+)$", line)
        if m:
            yield m.group(1), m.group(2), m.group(3) or m.group(4) or "Base", m.group(5)

defined = {n for p in list(syslibs) + sos for _, sec, _, n in dynsyms(p) if sec != "*UND*"}
vermap = {}  # symbol version name -> missing soname that must define it
per = {s: {} for s in missing}  # soname -> version -> {symbol: is_object}
loose = {}  # unversioned symbols defined nowhere: go into every stub
for p in sos:
    lib = None
    for line in run("readelf", "-V", "-W", p):
        m = re.search(r"File: (\S+)", line)
        if m:
            lib = m.group(1)
        elif (m := re.search(r"Name: (\S+)", line)) and lib in missing:
            vermap[m.group(1)] = lib
    for flags, sec, ver, name in dynsyms(p):
        if sec != "*UND*" or "w" in flags:
            continue
        if ver in vermap:
            per[vermap[ver]].setdefault(ver, {})[name] = "O" in flags
        elif ver == "Base" and name not in defined:
            loose[name] = "O" in flags

special = {
    "cudaGetDeviceCount": "int cudaGetDeviceCount(int *n) { if (n) *n = 0; return 100; }",  # cudaErrorNoDevice
    "cudaDriverGetVersion": "int cudaDriverGetVersion(int *v) { if (v) *v = 0; return 0; }",
    "cudaRuntimeGetVersion": "int cudaRuntimeGetVersion(int *v) { if (v) *v = 0; return 0; }",
}
tmp = tempfile.mkdtemp()
for soname, vers in sorted(per.items()):
    syms = {n: o for v in vers.values() for n, o in v.items()}
    syms.update(loose)
    # Generic stub: returns a pointer to a string, which reads as a non-zero (error) status.
    src = ['static const char msg[] __attribute__((aligned(16))) = "\\0CUDA stub: CPU-only torch";']
    for n, obj in sorted(syms.items()):
        if obj:
            src.append(f"char {n}[256] __attribute__((aligned(16)));")
        else:
            src.append(special.get(n, f"const void *{n}(void) {{ return msg + 1; }}"))
    c = os.path.join(tmp, soname + ".c")
    with open(c, "w") as f:
        f.write("\n".join(src) + "\n")
    args = []
    if vers:  # recreate the symbol versions torch's libraries ask for
        vs = os.path.join(tmp, soname + ".map")
        with open(vs, "w") as f:
            f.writelines(f"{v} {{ global: {'; '.join(sorted(ns))}; }};\n" for v, ns in sorted(vers.items()))
        args = [f"-Wl,--version-script,{vs}"]
    subprocess.run(["cc", "-shared", "-fPIC", "-w", "-o", os.path.join(torch_dir, "lib", soname), c,
                    f"-Wl,-soname,{soname}", *args], check=True)
print(f"python-env: built {len(per)} CUDA stub libraries in {os.path.join(torch_dir, 'lib')}")
EOF
else
    echo "python-env: installing the real CUDA runtime wheels torch links against (~2.7 GB)"
    pip_install --no-deps \
        nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 nvidia-cuda-nvrtc==13.2.86 \
        nvidia-cublas==13.4.1.3 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22 \
        nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37 nvidia-cudnn-cu13==9.26.0.51 \
        nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
fi

"$PY" -c "$CHECK"
echo "python env: $DIR (installed: $(du -sh "$DIR" | cut -f1), $(($(date +%s) - start)) s)"
