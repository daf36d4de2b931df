# ONNX Runtime on all-MiniLM-L6-v2, on `threads` threads (default 1): fp32, and dynamic int8 as ORT's
# quantize_dynamic makes it (weights QInt8, per tensor by default and per channel), on the
# very graph qbench runs (`qbench bench-minilm --save-onnx FILE` writes it). Wall-clock
# medians over 3 s per variant, variants interleaved round by round, batch x tokens of
# ordinary token ids; also each int8 variant's cosine to ORT's own fp32 on that input.
# The peer figures of README "MiniLM: against ONNX Runtime on this machine".
# Usage: python3 ci/peers/ort_minilm.py FILE.onnx [batch] [tokens] [threads]
# Needs `pip install onnxruntime onnx numpy`; not part of CI.
import sys, tempfile, os, time
import numpy as np, onnxruntime as ort
from onnxruntime.quantization import quantize_dynamic, QuantType

path = sys.argv[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 128
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
tmp = tempfile.mkdtemp()
variants = {"ort-fp32": path}
for name, per_channel in [("ort-int8-per-tensor", False), ("ort-int8-per-channel", True)]:
    out = os.path.join(tmp, name + ".onnx")
    quantize_dynamic(path, out, weight_type=QuantType.QInt8, per_channel=per_channel)
    variants[name] = out

so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
sessions = {k: ort.InferenceSession(v, so, providers=["CPUExecutionProvider"]) for k, v in variants.items()}
rng = np.random.default_rng(0)
ids = rng.integers(1000, 30000, (batch, tokens)).astype(np.float32)
ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
feeds = {"input_ids": ids, "attention_mask": np.ones((batch, tokens), np.float32)}
ref = sessions["ort-fp32"].run(None, feeds)[0]
for k, s in sessions.items():
    y = s.run(None, feeds)[0]
    cos = (y * ref).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"{k}: worst cosine to ort-fp32 on this input {cos.min():.5f}", flush=True)
times = {k: [] for k in sessions}
t_end = time.perf_counter() + 3.0 * len(sessions)
while time.perf_counter() < t_end or min(len(v) for v in times.values()) < 10:
    for k, s in sessions.items():
        t0 = time.perf_counter(); s.run(None, feeds); times[k].append(time.perf_counter() - t0)
base = np.median(times["ort-fp32"])
for k, ts in times.items():
    m = np.median(ts)
    print(f"{k} {batch}x{tokens}: median {m*1e3:.2f} ms (p10 {np.percentile(ts,10)*1e3:.2f}, p90 {np.percentile(ts,90)*1e3:.2f}, {len(ts)} samples), {base/m:.2f}x ort-fp32", flush=True)
