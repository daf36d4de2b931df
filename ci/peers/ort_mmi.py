# ONNX Runtime's MLAS int8 GEMM (MatMulInteger, u8 x s8 -> i32, activation zero point
# 128), single thread, wall-clock medians over 2 s per shape, at the shapes of
# `qbench bench-gemm`: the peer figures of README "qbench against MLAS".
# Needs `pip install onnxruntime onnx numpy`; not part of CI.
import numpy as np, onnx, onnxruntime as ort, time
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
rng = np.random.default_rng(0)
for (M, N, K) in [(1,768,768),(16,768,768),(128,768,768),(128,3072,768),(512,512,512),(1024,1024,1024)]:
    B8 = rng.integers(-128, 128, (K, N), dtype=np.int8)
    g = h.make_graph([h.make_node("MatMulInteger", ["A", "B", "azp"], ["Y"])], "g",
        [h.make_tensor_value_info("A", TP.UINT8, [M, K])], [h.make_tensor_value_info("Y", TP.INT32, [M, N])],
        [nh.from_array(B8, "B"), nh.from_array(np.array(128, np.uint8), "azp")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)]); m.ir_version = 8
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {"A": rng.integers(0, 256, (M, K), dtype=np.uint8)}
    for _ in range(10): s.run(None, feeds)
    ops = 2*M*N*K; ts = []
    t_end = time.perf_counter() + 2.0
    while time.perf_counter() < t_end or len(ts) < 15:
        t0 = time.perf_counter(); s.run(None, feeds); ts.append(time.perf_counter()-t0)
    print(f"{M}x{N}x{K}: MLAS {ops/np.median(ts)/1e9:.1f} GOP/s (median of {len(ts)})", flush=True)
