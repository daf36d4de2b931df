# qbench's int8 GEMM rungs against ONNX Runtime's MLAS (MatMulInteger, u8 x s8 -> i32,
# activation zero point 128) in one run: rounds alternate `qbench bench-gemm --json`
# (every rung this CPU runs, and the fp32 baseline, interleaved inside qbench) and MLAS
# at the same shapes on the same thread count; each figure is the median over rounds of
# that round's median. Prints one table: every rung, our best, MLAS, best / MLAS.
# Usage: python3 ci/peers/gemm_vs_ort.py QBENCH_BINARY [rounds] [threads] [MxNxK,...]
# Needs `pip install onnxruntime onnx numpy`; not part of CI.
import json, subprocess, sys, time
import numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, TensorProto as TP, numpy_helper as nh

qbench = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
spec = sys.argv[4] if len(sys.argv) > 4 else "1x768x768,16x768x768,128x768x768,128x3072x768,512x512x512,1024x1024x1024"
shapes = [tuple(int(d) for d in s.split("x")) for s in spec.split(",")]

rng = np.random.default_rng(0)
sessions = {}
for (M, N, K) in shapes:
    B8 = rng.integers(-128, 128, (K, N), dtype=np.int8)
    g = h.make_graph([h.make_node("MatMulInteger", ["A", "B", "azp"], ["Y"])], "g",
        [h.make_tensor_value_info("A", TP.UINT8, [M, K])], [h.make_tensor_value_info("Y", TP.INT32, [M, N])],
        [nh.from_array(B8, "B"), nh.from_array(np.array(128, np.uint8), "azp")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)]); m.ir_version = 8
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    sessions[(M, N, K)] = (s, {"A": rng.integers(0, 256, (M, K), dtype=np.uint8)})

def mlas_gops(shape, secs=1.0):
    s, feeds = sessions[shape]
    for _ in range(5): s.run(None, feeds)
    ts, t_end = [], time.perf_counter() + secs
    while time.perf_counter() < t_end or len(ts) < 15:
        t0 = time.perf_counter(); s.run(None, feeds); ts.append(time.perf_counter() - t0)
    M, N, K = shape
    return 2 * M * N * K / np.median(ts) / 1e9

ours = {}   # (shape, impl) -> [GOP/s per round]
kernel = {} # (shape, impl) -> kernel name
mlas = {shape: [] for shape in shapes}
for r in range(rounds):
    out = subprocess.run([qbench, "bench-gemm", "--json", "--threads", str(threads), "--shapes", spec],
                         check=True, capture_output=True, text=True).stdout
    for row in json.loads(out):
        key = ((row["m"], row["n"], row["k"]), row["impl"])
        ours.setdefault(key, []).append(row["gops"])
        kernel[key] = row["kernel"]
    for shape in shapes:
        mlas[shape].append(mlas_gops(shape))
    print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

impls = sorted({i for (_, i) in ours if i != "fp32-gemm"})
print(f"| M×N×K | {' | '.join(impls)} | best | MLAS | best / MLAS |")
print("|---" * (len(impls) + 4) + "|")
for shape in shapes:
    med = {i: float(np.median(ours[(shape, i)])) for i in impls if (shape, i) in ours}
    best = max(med, key=med.get)
    peer = float(np.median(mlas[shape]))
    cells = " | ".join(f"{med[i]:.0f}" if i in med else "n/a" for i in impls)
    print(f"| {'x'.join(map(str, shape))} | {cells} | {best} ({kernel[(shape, best)]}) {med[best]:.0f} | {peer:.0f} | {med[best] / peer:.2f}× |")
print(f"\nGOP/s = 2·M·N·K / median; {threads} thread(s); median over {rounds} rounds; "
      f"onnxruntime {ort.__version__}, numpy {np.__version__}, onnx {onnx.__version__}")
