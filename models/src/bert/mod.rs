//! A sentence-transformers BERT encoder (all-MiniLM-L6-v2 and its kin) as an IR graph:
//! read `config.json`, `1_Pooling/config.json` and `model.safetensors` from a model
//! directory and build BERT → mean pooling over the attention mask → L2 normalisation
//! out of ordinary ONNX ops, so the executor, the ONNX export and tract all see one graph.
//!
//! Graph inputs (both f32 `[N, S]`, S free): `input_ids` (token ids; exact in f32 below
//! 2^24, and Cast to int64 before the embedding Gather, because the IR's graph inputs are
//! f32) and `attention_mask` (1 for tokens, 0 for padding). Output: `sentence_embedding`
//! `[N, hidden]`, unit length. Token type ids are all 0 for single sentences, so row 0 of
//! the token type table is added as a constant.
//!
//! Every Linear is `MatMul(x, W) + b` with `W` an initializer holding the PyTorch weight
//! transposed (`[in, out]`, named `<layer>.weight_t`): exactly the "MatMul with a constant
//! B" that dynamic quantization replaces, with nothing else to recognise. Tokenization is
//! in [`tokenize`].

pub mod tokenize;
pub mod weights;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::ir::{CastTo, Dim, Graph, Node, Op, ValueInfo};
use crate::tensor::Tensor;
use weights::Weights;

/// Names of the graph's inputs and output.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const OUTPUT: &str = "sentence_embedding";

/// The fields of a Hugging Face BERT `config.json` the graph depends on.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

/// sentence-transformers' `1_Pooling/config.json`.
#[derive(Clone, Debug, Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Graph {
        file: path.display().to_string(),
        msg: e.to_string(),
    })
}

impl BertConfig {
    /// Reads `config.json` and refuses what the graph does not build.
    pub fn read(path: &Path) -> Result<BertConfig> {
        let c: BertConfig = read_json(path)?;
        let bad = |key: &str, msg: String| ModelError::Graph {
            file: path.display().to_string(),
            msg: format!("{key}: {msg}"),
        };
        if c.hidden_act != "gelu" {
            return Err(bad(
                "hidden_act",
                format!("{:?}: only \"gelu\" (erf) is built", c.hidden_act),
            ));
        }
        if c.position_embedding_type != "absolute" {
            return Err(bad(
                "position_embedding_type",
                format!("{:?}: only \"absolute\"", c.position_embedding_type),
            ));
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    c.num_attention_heads, c.hidden_size
                ),
            ));
        }
        if c.type_vocab_size == 0 || c.vocab_size == 0 || c.vocab_size >= 1 << 24 {
            return Err(bad(
                "vocab_size",
                format!(
                    "{} (ids must be exact in f32, below 2^24) and type_vocab_size {} > 0",
                    c.vocab_size, c.type_vocab_size
                ),
            ));
        }
        Ok(c)
    }
}

/// Builds the sentence-embedding graph from a model directory (`config.json`,
/// `1_Pooling/config.json`, `model.safetensors`).
pub fn load_graph(dir: &Path) -> Result<Graph> {
    let config = BertConfig::read(&dir.join("config.json"))?;
    let pooling_path = dir.join("1_Pooling").join("config.json");
    let pooling: PoolingConfig = read_json(&pooling_path)?;
    if !pooling.pooling_mode_mean_tokens
        || pooling.pooling_mode_cls_token
        || pooling.pooling_mode_max_tokens
        || pooling.pooling_mode_mean_sqrt_len_tokens
        || pooling.word_embedding_dimension != config.hidden_size
    {
        return Err(ModelError::Graph {
            file: pooling_path.display().to_string(),
            msg: format!(
                "only mean pooling over {} dims is built; found {pooling:?}",
                config.hidden_size
            ),
        });
    }
    let weights = Weights::read(&dir.join("model.safetensors"))?;
    build_graph(&config, &weights)
}

/// Appends nodes and initializers with unique names.
struct Builder {
    g: Graph,
}

impl Builder {
    fn init(&mut self, name: &str, t: Tensor) -> String {
        self.g.initializers.insert(name.to_string(), t);
        name.to_string()
    }

    /// Adds `op(inputs)` with one output named `out`; returns `out`.
    fn op(&mut self, op: Op, inputs: &[&str], out: &str) -> String {
        self.g.nodes.push(Node {
            name: out.to_string(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.to_string()],
        });
        out.to_string()
    }

    /// `x·Wᵀ + b` for the PyTorch Linear `key` (`key.weight` is `[out, in]`).
    fn linear(
        &mut self,
        w: &Weights,
        x: &str,
        key: &str,
        inp: usize,
        out: usize,
    ) -> Result<String> {
        let wt = w
            .f32(&format!("{key}.weight"), &[out, inp])?
            .transposed(&[1, 0])?;
        let wname = self.init(&format!("{key}.weight_t"), wt);
        let bname = self.init(
            &format!("{key}.bias"),
            w.f32(&format!("{key}.bias"), &[out])?,
        );
        let mm = self.op(Op::MatMul, &[x, &wname], &format!("{key}/matmul"));
        Ok(self.op(Op::Add, &[&mm, &bname], &format!("{key}/out")))
    }

    fn layer_norm(
        &mut self,
        w: &Weights,
        x: &str,
        key: &str,
        h: usize,
        eps: f32,
    ) -> Result<String> {
        let g = self.init(
            &format!("{key}.weight"),
            w.f32(&format!("{key}.weight"), &[h])?,
        );
        let b = self.init(&format!("{key}.bias"), w.f32(&format!("{key}.bias"), &[h])?);
        Ok(self.op(
            Op::LayerNorm {
                axis: -1,
                epsilon: eps,
            },
            &[x, &g, &b],
            &format!("{key}/out"),
        ))
    }
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_i64s(v.to_vec())
}

fn i64_scalar(v: i64) -> Tensor {
    Tensor::new_i64(vec![], vec![v]).expect("one value")
}

/// Builds the graph from a config and the checkpoint's tensors (Hugging Face names).
pub fn build_graph(c: &BertConfig, w: &Weights) -> Result<Graph> {
    let (h, heads, ffn) = (c.hidden_size, c.num_attention_heads, c.intermediate_size);
    let head_dim = h / heads;
    let seq = |n: &str| ValueInfo {
        name: n.into(),
        dims: vec![Dim::Symbolic("N".into()), Dim::Symbolic("S".into())],
    };
    let mut b = Builder {
        g: Graph {
            name: "bert-sentence-embedding".into(),
            inputs: vec![seq(INPUT_IDS), seq(ATTENTION_MASK)],
            outputs: vec![ValueInfo {
                name: OUTPUT.into(),
                dims: vec![Dim::Symbolic("N".into()), Dim::Fixed(h)],
            }],
            initializers: BTreeMap::new(),
            nodes: Vec::new(),
        },
    };

    // Embeddings: word[ids] + position[0..S) + token_type[0], then LayerNorm.
    let e = "embeddings";
    let word = b.init(
        &format!("{e}.word_embeddings.weight"),
        w.f32(&format!("{e}.word_embeddings.weight"), &[c.vocab_size, h])?,
    );
    let pos_table = b.init(
        &format!("{e}.position_embeddings.weight"),
        w.f32(
            &format!("{e}.position_embeddings.weight"),
            &[c.max_position_embeddings, h],
        )?,
    );
    let tt = w.f32(
        &format!("{e}.token_type_embeddings.weight"),
        &[c.type_vocab_size, h],
    )?;
    let tt0 = Tensor::new(vec![h], tt.f32s()?[..h].to_vec())?;
    let tt0 = b.init(&format!("{e}.token_type_embeddings.row0"), tt0);
    let ids = b.op(Op::Cast { to: CastTo::I64 }, &[INPUT_IDS], "ids_i64");
    let we = b.op(Op::Gather { axis: 0 }, &[&word, &ids], "word_emb");
    let shape = b.op(Op::Shape, &[INPUT_IDS], "ids_shape");
    let one = b.init("const_i64_1", i64_scalar(1));
    let zero = b.init("const_i64_0", i64_scalar(0));
    let s_len = b.op(Op::Gather { axis: 0 }, &[&shape, &one], "seq_len");
    let positions = b.op(Op::Range, &[&zero, &s_len, &one], "positions");
    let pe = b.op(Op::Gather { axis: 0 }, &[&pos_table, &positions], "pos_emb");
    let x = b.op(Op::Add, &[&we, &pe], "emb_word_pos");
    let x = b.op(Op::Add, &[&x, &tt0], "emb_sum");
    let mut x = b.layer_norm(w, &x, &format!("{e}.LayerNorm"), h, c.layer_norm_eps)?;

    // The additive attention mask, [N, 1, 1, S]: 0 where attended, the most negative f32
    // where padded (as transformers does), so padded keys get exactly zero weight.
    let f_one = b.init("const_f32_1", Tensor::scalar(1.0));
    let f_min = b.init("const_f32_min", Tensor::scalar(f32::MIN));
    let inv = b.op(Op::Sub, &[&f_one, ATTENTION_MASK], "mask_inverted");
    let neg = b.op(Op::Mul, &[&inv, &f_min], "mask_additive");
    let ext = b.op(
        Op::Unsqueeze {
            axes: Some(vec![1, 2]),
        },
        &[&neg],
        "mask_additive_4d",
    );
    let split = b.init(
        "shape_split_heads",
        i64s(&[0, 0, heads as i64, head_dim as i64]),
    );
    let merge = b.init("shape_merge_heads", i64s(&[0, 0, h as i64]));
    let scale = b.init("attention_scale", Tensor::scalar((head_dim as f32).sqrt()));

    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let heads_of = |b: &mut Builder, t: &str, perm: &[usize], name: &str| {
            let r = b.op(Op::Reshape, &[t, &split], &format!("{p}/{name}_split"));
            b.op(
                Op::Transpose {
                    perm: Some(perm.to_vec()),
                },
                &[&r],
                &format!("{p}/{name}_heads"),
            )
        };
        let q = b.linear(w, &x, &format!("{p}.attention.self.query"), h, h)?;
        let k = b.linear(w, &x, &format!("{p}.attention.self.key"), h, h)?;
        let v = b.linear(w, &x, &format!("{p}.attention.self.value"), h, h)?;
        let q = heads_of(&mut b, &q, &[0, 2, 1, 3], "q"); // [N, heads, S, d]
        let k = heads_of(&mut b, &k, &[0, 2, 3, 1], "k"); // [N, heads, d, S]
        let v = heads_of(&mut b, &v, &[0, 2, 1, 3], "v"); // [N, heads, S, d]
        let s = b.op(Op::MatMul, &[&q, &k], &format!("{p}/scores"));
        let s = b.op(Op::Div, &[&s, &scale], &format!("{p}/scores_scaled"));
        let s = b.op(Op::Add, &[&s, &ext], &format!("{p}/scores_masked"));
        let a = b.op(
            Op::Softmax {
                axis: -1,
                legacy: false,
            },
            &[&s],
            &format!("{p}/probs"),
        );
        let ctx = b.op(Op::MatMul, &[&a, &v], &format!("{p}/context_heads"));
        let ctx = b.op(
            Op::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            },
            &[&ctx],
            &format!("{p}/context_t"),
        );
        let ctx = b.op(Op::Reshape, &[&ctx, &merge], &format!("{p}/context"));
        let o = b.linear(w, &ctx, &format!("{p}.attention.output.dense"), h, h)?;
        let r = b.op(Op::Add, &[&o, &x], &format!("{p}/attention_residual"));
        let x1 = b.layer_norm(
            w,
            &r,
            &format!("{p}.attention.output.LayerNorm"),
            h,
            c.layer_norm_eps,
        )?;
        let i = b.linear(w, &x1, &format!("{p}.intermediate.dense"), h, ffn)?;
        let i = b.op(Op::Gelu { tanh: false }, &[&i], &format!("{p}/gelu"));
        let o = b.linear(w, &i, &format!("{p}.output.dense"), ffn, h)?;
        let r = b.op(Op::Add, &[&o, &x1], &format!("{p}/ffn_residual"));
        x = b.layer_norm(w, &r, &format!("{p}.output.LayerNorm"), h, c.layer_norm_eps)?;
    }

    // Mean pooling over the attention mask, then L2 normalisation (sentence-transformers:
    // sum(h·m) / clamp(sum(m), 1e-9), then F.normalize).
    let m3 = b.op(
        Op::Unsqueeze {
            axes: Some(vec![2]),
        },
        &[ATTENTION_MASK],
        "mask_3d",
    );
    let masked = b.op(Op::Mul, &[&x, &m3], "pool_masked");
    let sum_axes = |keep| Op::ReduceSum {
        axes: Some(vec![1]),
        keepdims: keep,
        noop_with_empty_axes: false,
    };
    let num = b.op(sum_axes(false), &[&masked], "pool_sum");
    let den = b.op(sum_axes(false), &[&m3], "pool_count");
    let den = b.op(
        Op::Clip {
            min: Some(1e-9),
            max: None,
        },
        &[&den],
        "pool_count_clamped",
    );
    let mean = b.op(Op::Div, &[&num, &den], "pool_mean");
    b.op(Op::LpNormalization { axis: -1, p: 2 }, &[&mean], OUTPUT);
    b.g.validate("bert graph")?;
    Ok(b.g)
}
