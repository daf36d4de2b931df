//! Backend qconfig presets and the map that says which layer gets which config.
//!
//! The presets are PyTorch's (`torch.ao.quantization.get_default_qconfig`), so a user's
//! numbers transfer:
//! - `fbgemm`: activations quint8 with reduce_range (0..=127, because FBGEMM's
//!   `vpmaddubsw` path would saturate on full-range u8 × s8 pairs), Histogram observer;
//!   weights qint8, per-channel symmetric, MinMax.
//! - `qnnpack`: activations quint8 full range, Histogram; weights qint8 per-tensor
//!   symmetric, MinMax.
//! - `vnni`: as fbgemm with full-range activations: `vpdpbusd` accumulates in i32 and
//!   cannot saturate, so the eighth bit is free accuracy.
//!
//! Dynamic quantization uses its own preset ([`QConfig::dynamic`]): PyTorch's
//! `default_dynamic_qconfig` has per-tensor weights; `per_channel_dynamic_qconfig` has
//! per-channel ones.

use std::collections::BTreeMap;

use crate::error::{QuantError, Result};
use crate::observer::ObserverKind;
use crate::qparams::QSpec;

/// The kernel families whose numerics a preset reproduces. One type for the quantizers,
/// the sweep's cells and the results schema; declared in report order, which `Ord`
/// follows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fbgemm,
    Vnni,
    Qnnpack,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Fbgemm, Backend::Vnni, Backend::Qnnpack];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fbgemm => "fbgemm",
            Backend::Qnnpack => "qnnpack",
            Backend::Vnni => "vnni",
        }
    }

    pub fn from_name(name: &str) -> Result<Backend> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| QuantError::Config {
                key: "backend".into(),
                msg: format!("unknown backend {name:?}; valid: fbgemm, vnni, qnnpack"),
            })
    }

    /// Whether activations are kept in 7 bits for this backend's kernels.
    pub fn reduce_range(self) -> bool {
        self == Backend::Fbgemm
    }

    /// Whether weights are quantized per output channel.
    pub fn per_channel_weights(self) -> bool {
        self != Backend::Qnnpack
    }
}

/// An observer and the grid it quantizes onto.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObserverConfig {
    pub observer: ObserverKind,
    pub spec: QSpec,
}

/// How one layer is quantized: its weights, and (static/QAT) its output activations.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QConfig {
    pub activation: ObserverConfig,
    pub weight: ObserverConfig,
}

impl QConfig {
    /// The static-quantization preset of `backend` (module doc).
    pub fn preset(backend: Backend) -> QConfig {
        QConfig {
            activation: ObserverConfig {
                observer: ObserverKind::Histogram { bins: 2048 },
                spec: QSpec::activation_quint8(backend.reduce_range()),
            },
            weight: ObserverConfig {
                observer: ObserverKind::MinMax,
                spec: QSpec::weight_qint8(backend.per_channel_weights().then_some(0)),
            },
        }
    }

    /// The QAT preset of `backend`: moving-average min/max on activations, as PyTorch's
    /// `get_default_qat_qconfig`.
    pub fn qat_preset(backend: Backend) -> QConfig {
        let mut q = Self::preset(backend);
        q.activation.observer = ObserverKind::MovingAverageMinMax {
            averaging_constant: 0.01,
        };
        q
    }

    /// The dynamic preset: weights only (activations are measured on every call);
    /// `per_channel` selects PyTorch's `per_channel_dynamic_qconfig`.
    pub fn dynamic(backend: Backend, per_channel: bool) -> QConfig {
        let mut q = Self::preset(backend);
        q.activation.observer = ObserverKind::MinMax;
        q.weight.spec = QSpec::weight_qint8(per_channel.then_some(0));
        q
    }

    /// The same config with another activation observer.
    pub fn with_activation_observer(mut self, observer: ObserverKind) -> QConfig {
        self.activation.observer = observer;
        self
    }
}

/// Which config each layer gets: the most specific entry wins (layer name, then op type,
/// then global). An entry of `None` keeps matching layers in fp32, as PyTorch users write
/// `model.fc2.qconfig = None`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct QConfigMap {
    pub global: Option<QConfig>,
    /// Keyed by ONNX op type (`Conv`, `Gemm`, `MatMul`, ...).
    pub op_types: BTreeMap<String, Option<QConfig>>,
    /// Keyed by node name.
    pub layers: BTreeMap<String, Option<QConfig>>,
}

impl QConfigMap {
    /// Every layer gets `config`.
    pub fn global(config: QConfig) -> QConfigMap {
        QConfigMap {
            global: Some(config),
            ..QConfigMap::default()
        }
    }

    /// Sets (or with `None` clears) the config of one layer.
    pub fn set_layer(mut self, name: &str, config: Option<QConfig>) -> QConfigMap {
        self.layers.insert(name.to_string(), config);
        self
    }

    /// Sets (or with `None` clears) the config of every layer of an op type.
    pub fn set_op_type(mut self, op_type: &str, config: Option<QConfig>) -> QConfigMap {
        self.op_types.insert(op_type.to_string(), config);
        self
    }

    /// The config for a node, or `None` when it stays in fp32.
    pub fn config_for(&self, name: &str, op_type: &str) -> Option<&QConfig> {
        if let Some(entry) = self.layers.get(name) {
            return entry.as_ref();
        }
        if let Some(entry) = self.op_types.get(op_type) {
            return entry.as_ref();
        }
        self.global.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qparams::Granularity;

    #[test]
    fn presets_match_pytorch() {
        let fb = QConfig::preset(Backend::Fbgemm);
        assert_eq!((fb.activation.spec.qmin, fb.activation.spec.qmax), (0, 127));
        assert_eq!(
            fb.weight.spec.granularity,
            Granularity::PerChannel { axis: 0 }
        );
        let qn = QConfig::preset(Backend::Qnnpack);
        assert_eq!(qn.activation.spec.qmax, 255);
        assert_eq!(qn.weight.spec.granularity, Granularity::PerTensor);
        let vn = QConfig::preset(Backend::Vnni);
        assert_eq!(vn.activation.spec.qmax, 255);
        assert_eq!(
            vn.weight.spec.granularity,
            Granularity::PerChannel { axis: 0 }
        );
        assert!(matches!(
            fb.activation.observer,
            ObserverKind::Histogram { bins: 2048 }
        ));
    }

    #[test]
    fn most_specific_entry_wins_and_none_means_fp32() {
        let map = QConfigMap::global(QConfig::preset(Backend::Fbgemm))
            .set_op_type("Conv", Some(QConfig::preset(Backend::Qnnpack)))
            .set_layer("fc2", None);
        assert_eq!(
            map.config_for("fc1", "Gemm"),
            Some(&QConfig::preset(Backend::Fbgemm))
        );
        assert_eq!(
            map.config_for("c1", "Conv"),
            Some(&QConfig::preset(Backend::Qnnpack))
        );
        assert_eq!(map.config_for("fc2", "Gemm"), None);
        assert!(Backend::from_name("tpu")
            .unwrap_err()
            .to_string()
            .contains("fbgemm"));
    }
}
