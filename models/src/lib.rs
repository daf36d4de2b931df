//! qbench-models: tensors, the graph IR, the fp32 executor, training, file formats and
//! the zoo. Not yet built: see the open models issue.
