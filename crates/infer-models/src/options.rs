//! How to load a model: the options every loader and the [`Runner`](crate::Runner) read.

use infer_tensor::DType;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// What `--quant` re-encodes weight matrices in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// Every weight matrix in this dtype. A K-quant falls back where rows are not whole
    /// 256-element super-blocks as llama.cpp's quantizer does (Q4_K to Q5_0, Q5_K to Q5_1,
    /// Q6_K to Q8_0); another dtype keeps such a matrix as stored.
    To(DType),
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output head (the token embeddings
    /// when they are tied to it) and for the v projection and the MLP down projection of
    /// the layers `use_more_bits` picks (the first and last eighth and every third between),
    /// Q5_K for a fused q/k/v weight; the same fallbacks.
    Q4KM,
}

impl From<DType> for Quant {
    fn from(d: DType) -> Quant {
        Quant::To(d)
    }
}

/// Which layers llama.cpp's mixes give more bits (`use_more_bits`).
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2
}

/// llama.cpp's fallback for a K-quant whose rows are not whole super-blocks.
fn fallback(dtype: DType, cols: usize) -> Option<DType> {
    if dtype.bytes_for(cols).is_some() {
        return Some(dtype);
    }
    match dtype {
        DType::Q4_K => Some(DType::Q5_0),
        DType::Q5_K => Some(DType::Q5_1),
        DType::Q6_K => Some(DType::Q8_0),
        _ => None,
    }
    .filter(|d| d.bytes_for(cols).is_some())
}

/// What a weight matrix is, for a mix's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightRole {
    /// The output head, or the token embeddings tied to it.
    Output,
    /// The token (or position) embeddings of a model with its own output head.
    Embedding,
    /// A fused q/k/v projection.
    Qkv,
    /// The v projection of layer `.0`.
    V(usize),
    /// The MLP down projection of layer `.0`.
    Down(usize),
    Other,
}

impl WeightRole {
    /// The role of the tensor llama.cpp names `gguf` (`output.weight`,
    /// `blk.3.attn_v.weight`); `tied`: the token embeddings serve as the output head.
    pub fn of_gguf_name(gguf: &str, tied: bool) -> WeightRole {
        match gguf {
            "output.weight" => return WeightRole::Output,
            "token_embd.weight" if tied => return WeightRole::Output,
            "token_embd.weight" | "position_embd.weight" => return WeightRole::Embedding,
            _ => {}
        }
        let Some((layer, tail)) = gguf
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, t)| Some((l.parse::<usize>().ok()?, t)))
        else {
            return WeightRole::Other;
        };
        match tail {
            "attn_v.weight" => WeightRole::V(layer),
            "ffn_down.weight" => WeightRole::Down(layer),
            "attn_qkv.weight" => WeightRole::Qkv,
            _ => WeightRole::Other,
        }
    }
}

impl Quant {
    /// The names `--quant` takes.
    pub const NAMES: &'static str =
        "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m";

    /// Parses a `--quant` value (case-insensitive). Q2_K, Q3_K, IQ4_NL and IQ4_XS are
    /// loaded from files but not produced: infer has no llama.cpp quantizer for them.
    pub fn parse(s: &str) -> Option<Quant> {
        if s.eq_ignore_ascii_case("q4_k_m") {
            return Some(Quant::Q4KM);
        }
        let d = DType::parse(s)?;
        let produced = !d.is_quantized() || d.ggml_quant().is_none_or(|k| k.can_quantize());
        (produced && d != DType::U32).then_some(Quant::To(d))
    }

    /// The dtype a weight matrix of rows of `cols` elements in `role` gets in a model of
    /// `n_layers`; `None` keeps it as stored (its rows are not whole blocks of the dtype).
    pub fn dtype_for(self, role: WeightRole, cols: usize, n_layers: usize) -> Option<DType> {
        let d = match self {
            Quant::To(d) => d,
            Quant::Q4KM => match role {
                WeightRole::Output => DType::Q6_K,
                WeightRole::Qkv => DType::Q5_K,
                WeightRole::V(i) | WeightRole::Down(i) if use_more_bits(i, n_layers) => DType::Q6_K,
                _ => DType::Q4_K,
            },
        };
        fallback(d, cols)
    }
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Re-encode weight matrices on load (`--quant`): every one in a dtype, or a mix.
    pub quant: Option<Quant>,
    /// Context length (KV cache capacity); default min(model's, 4096).
    pub context: Option<usize>,
    /// Most tokens in one prefill step (longer prompts go in chunks).
    pub max_batch: usize,
    /// Show a progress bar while uploading weights.
    pub progress: bool,
    /// Most greedy steps [`Model::greedy_next`] chains ahead of the host (at most
    /// [`MAX_CHAIN`] - 1); `None`: by adapter type ([`chain_ahead`]).
    pub chain: Option<usize>,
}

impl LoadOptions {
    /// Positions the KV cache and the rope table cover.
    pub fn capacity(&self, cfg: &ModelConfig) -> usize {
        self.context.unwrap_or(cfg.max_position.min(4096)).max(1)
    }

    /// Most rows of one step: what the activation buffers hold.
    pub fn rows(&self, cfg: &ModelConfig) -> usize {
        self.max_batch.clamp(1, self.capacity(cfg))
    }

    /// Checks the options against the model and the adapter's largest buffer before
    /// anything is sized from them: a context and a step of at least one position, and a
    /// context whose KV cache of one layer, and rope table, fit one buffer (a context of a
    /// billion positions is an error here, not a 256 GB host allocation).
    pub fn check(&self, cfg: &ModelConfig, max_binding: u64) -> Result<()> {
        if self.context == Some(0) {
            return Err(ModelError::Invalid(
                "context 0: the KV cache needs at least 1 position".into(),
            ));
        }
        if self.max_batch == 0 {
            return Err(ModelError::Invalid(
                "max_batch 0: a step needs at least 1 row".into(),
            ));
        }
        let cap = self.capacity(cfg) as u64;
        let kv = cap * (cfg.n_kv_heads * cfg.head_dim * 4) as u64;
        let rope = cap * (cfg.rotary_dim * 4) as u64;
        for (what, bytes) in [("one layer's K cache", kv), ("the rope table", rope)] {
            if bytes > max_binding {
                return Err(ModelError::Invalid(format!(
                    "context {cap}: {what} needs {bytes} bytes, over the adapter's largest \
                     buffer ({max_binding} bytes); use a shorter context"
                )));
            }
        }
        Ok(())
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            quant: None,
            context: None,
            max_batch: 256,
            progress: false,
            chain: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Q4_K_M mix of Gemma 3 270M (18 layers, hidden 640, MLP 2048) as llama.cpp made
    /// the file `cargo xtask model gemma3-270m` fetches: per layer, `6` Q6_K, `4` Q4_K,
    /// `8` Q8_0 (Q6_K's fallback for rows of 640), `5` Q5_0 (Q4_K's).
    #[test]
    fn q4_k_m_picks_the_types_llama_cpp_picked_for_gemma3_270m() {
        let code = |d: Option<DType>| match d.unwrap() {
            DType::Q6_K => '6',
            DType::Q4_K => '4',
            DType::Q8_0 => '8',
            DType::Q5_0 => '5',
            d => panic!("unexpected {d}"),
        };
        let row = |tail: &str, cols: usize| -> String {
            (0..18)
                .map(|i| {
                    let role = WeightRole::of_gguf_name(&format!("blk.{i}.{tail}"), true);
                    code(Quant::Q4KM.dtype_for(role, cols, 18))
                })
                .collect()
        };
        assert_eq!(row("attn_v.weight", 640), "885585585585585888");
        assert_eq!(row("ffn_down.weight", 2048), "664464464464464666");
        assert_eq!(row("attn_q.weight", 640), "5".repeat(18));
        assert_eq!(row("attn_output.weight", 1024), "4".repeat(18));
        assert_eq!(row("ffn_up.weight", 640), "5".repeat(18));
        let embd = WeightRole::of_gguf_name("token_embd.weight", true);
        assert_eq!(Quant::Q4KM.dtype_for(embd, 640, 18), Some(DType::Q8_0));
        let untied = WeightRole::of_gguf_name("token_embd.weight", false);
        assert_eq!(Quant::Q4KM.dtype_for(untied, 512, 18), Some(DType::Q4_K));
        let qkv = WeightRole::of_gguf_name("blk.0.attn_qkv.weight", false);
        assert_eq!(Quant::Q4KM.dtype_for(qkv, 512, 18), Some(DType::Q5_K));
    }

    #[test]
    fn single_types_fall_back_like_llama_cpp_or_keep_the_stored_type() {
        let q = |s: &str| Quant::parse(s).unwrap();
        assert_eq!(
            q("Q4_K").dtype_for(WeightRole::Other, 576, 30),
            Some(DType::Q5_0)
        );
        assert_eq!(
            q("q5_k").dtype_for(WeightRole::Other, 576, 30),
            Some(DType::Q5_1)
        );
        assert_eq!(
            q("q6_k").dtype_for(WeightRole::Other, 576, 30),
            Some(DType::Q8_0)
        );
        assert_eq!(q("q6_k").dtype_for(WeightRole::Other, 40, 30), None);
        assert_eq!(
            q("q4_k").dtype_for(WeightRole::Other, 512, 30),
            Some(DType::Q4_K)
        );
        assert_eq!(q("q8_0").dtype_for(WeightRole::Other, 37, 30), None);
        for no in ["q2_k", "q3_k", "iq4_nl", "iq4_xs", "u32", "q4_k_s", ""] {
            assert_eq!(Quant::parse(no), None, "{no}");
        }
    }
}
