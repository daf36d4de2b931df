//! Tokenization for the BERT sentence encoders with the `tokenizers` crate from the
//! model's own `tokenizer.json` (normaliser, pre-tokeniser, WordPiece, [CLS]/[SEP]
//! template): no hand-written WordPiece.
//!
//! One override: sentence-transformers truncates at its `max_seq_length`
//! (`sentence_bert_config.json`, 256 for all-MiniLM-L6-v2), not at the 128 tokens and
//! fixed padding that `tokenizer.json` itself carries, so [`SentenceTokenizer::from_dir`]
//! sets truncation to `max_seq_length` and turns padding off; batches are padded here to
//! their longest sentence with an attention mask, as sentence-transformers does.

use std::path::Path;

use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{ModelError, Result};
use crate::tensor::Tensor;

/// A tokenizer configured as sentence-transformers uses it.
pub struct SentenceTokenizer {
    inner: Tokenizer,
    max_seq_length: usize,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// A padded batch: ids and mask as the graph takes them (f32 `[N, S]`).
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
}

impl SentenceTokenizer {
    /// Reads `tokenizer.json` and `sentence_bert_config.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<SentenceTokenizer> {
        let cfg_path = dir.join("sentence_bert_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
            file: cfg_path.clone(),
            source,
        })?;
        let cfg: SentenceBertConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Graph {
                file: cfg_path.display().to_string(),
                msg: e.to_string(),
            })?;
        Self::new(&dir.join("tokenizer.json"), cfg.max_seq_length)
    }

    /// Loads `tokenizer.json`, truncating at `max_seq_length` tokens (with [CLS] and
    /// [SEP]) and not padding.
    pub fn new(path: &Path, max_seq_length: usize) -> Result<SentenceTokenizer> {
        let err = |msg: String| ModelError::Graph {
            file: path.display().to_string(),
            msg,
        };
        let mut inner =
            Tokenizer::from_file(path).map_err(|e| err(format!("not a usable tokenizer: {e}")))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| err(format!("truncation at {max_seq_length}: {e}")))?;
        inner.with_padding(None);
        Ok(SentenceTokenizer {
            inner,
            max_seq_length,
        })
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Token ids of one sentence, with [CLS] and [SEP].
    pub fn encode(&self, sentence: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(sentence, true)
            .map_err(|e| ModelError::Tensor(format!("tokenizing {sentence:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenizes `sentences` and pads them to the longest (pad id 0, mask 0).
    pub fn batch(&self, sentences: &[&str]) -> Result<Batch> {
        let ids = sentences
            .iter()
            .map(|s| self.encode(s))
            .collect::<Result<Vec<_>>>()?;
        Ok(pad(&ids))
    }
}

/// Pads token id lists to the longest with 0 and builds the mask (f32 `[N, S]`).
pub fn pad(ids: &[Vec<u32>]) -> Batch {
    let s = ids.iter().map(Vec::len).max().unwrap_or(0);
    let n = ids.len();
    let mut x = vec![0f32; n * s];
    let mut m = vec![0f32; n * s];
    for (i, row) in ids.iter().enumerate() {
        for (j, &t) in row.iter().enumerate() {
            x[i * s + j] = t as f32;
            m[i * s + j] = 1.0;
        }
    }
    Batch {
        input_ids: Tensor::new(vec![n, s], x).expect("n·s values"),
        attention_mask: Tensor::new(vec![n, s], m).expect("n·s values"),
    }
}
