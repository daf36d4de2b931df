//! qbench-quantizers: quantization parameters, observers, backend qconfigs, fusion and the
//! dynamic, static and QAT pipelines. Not yet built: see the open quantizers issue.
