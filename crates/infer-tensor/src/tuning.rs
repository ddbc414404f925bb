//! [`Tuning`]: every code-path choice that depends on the adapter, in one value.
//!
//! The defaults come from the adapter's type and capabilities (measured choices: see
//! `BENCHMARKS.md` and `bench/gpu/`); the environment can override each one for tests and
//! measurements. This module is the only place an `INFER_*` variable is read, apart from
//! adapter selection (`INFER_BACKEND`, `INFER_ADAPTER` in [`crate::device`]). An unknown or
//! malformed value is an error naming the variable and the values it accepts, never
//! ignored.
//!
//! | variable | field | values |
//! |---|---|---|
//! | `INFER_WEIGHT_GROUP` | [`Tuning::weight_group`] | `1`, `8` |
//! | `INFER_MATVEC` | [`Tuning::matvec`] | `rows`, `coalesced` |
//! | `INFER_MATVEC_X` | [`Tuning::x_broadcast`] | `load`, `broadcast` |
//! | `INFER_ATTENTION` | [`Tuning::attention`], [`Tuning::paged_attention`] | `split`, `split_heads`, `split_sg`, `lane`, `tiled` |
//! | `INFER_GREEDY_AHEAD` | [`Tuning::greedy_ahead`] | `0` ..= `3` |
//! | `INFER_PROFILE` | [`Tuning::profile`] | `0`, `1` |
//! | `INFER_PIPELINE_CACHE_DIR` | [`Tuning::pipeline_cache`] | a directory, or `off` |

use std::path::PathBuf;

use crate::device::Caps;
use crate::error::{Result, TensorError};

/// How matvec lays work out over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatvecLayout {
    /// One invocation walks whole rows (`matvec`, `matvec_glu`): CPU adapters.
    Rows,
    /// A workgroup per 4 rows, lanes across the row (`matvec_coalesced`): GPUs.
    Coalesced,
}

/// A forced choice of the contiguous-cache attention kernel (`None` in
/// [`Tuning::attention`]: chosen per step from its shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionChoice {
    Split,
    SplitHeads,
    SplitSg,
    Lane,
    Tiled,
}

/// The paged (serving) attention kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagedAttentionChoice {
    /// One invocation per (row, head): any adapter.
    Lane,
    /// 8 lanes across head_dim with subgroup sums: CPU adapters with subgroups.
    Sg,
    /// A workgroup per (row, query heads of a KV head): GPUs.
    Heads,
}

/// Where compiled pipelines are kept between runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineCache {
    /// `INFER_PIPELINE_CACHE_DIR`, else `$XDG_CACHE_HOME/infer`, else `~/.cache/infer`.
    Dir(PathBuf),
    Off,
}

/// Most greedy steps a model chains ahead of the host ([`Tuning::greedy_ahead`]).
pub const MAX_GREEDY_AHEAD: usize = 3;

/// Every adapter-dependent code-path choice. Built once per device ([`Tuning::from_env`]);
/// tests build their own ([`Tuning::for_adapter`], [`Tuning::gpu_choices`]) to run a
/// path directly instead of through the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// The adapter is a CPU (software) adapter such as lavapipe, where the "GPU" is the
    /// host's own cores: layouts favour few long-running invocations.
    pub cpu: bool,
    /// Rows per group of the weight layout: 8 on CPU adapters (one invocation walks 8 rows,
    /// so interleaving them makes its loads contiguous), 1 on GPUs (lanes walk along a row).
    pub weight_group: u32,
    pub matvec: MatvecLayout,
    /// Invocations per workgroup of the row-walking matvec: 8 on CPU adapters (more, smaller
    /// workgroups spread better over the driver's threads), 64 on GPUs.
    pub matvec_wg: u32,
    /// matvec and matvec_glu share each quantized unit's x over the subgroup instead of
    /// every invocation loading it (needs subgroups of >= 8; the same bits).
    pub x_broadcast: bool,
    /// A forced contiguous-cache attention kernel; `None`: per step, by shape.
    pub attention: Option<AttentionChoice>,
    pub paged_attention: PagedAttentionChoice,
    /// Positions per chunk of the split (flash-decoding) attention kernels: 256 on CPU
    /// adapters (smaller chunks only add workgroups and partials there), 128 on GPUs (more
    /// workgroups per head at short contexts). Caches past 16384 positions use 256 anyway,
    /// so the merge stays short.
    pub split_chunk: usize,
    /// Fewest items one stage-0 invocation of topk scans (at least k): 1024 on CPU adapters
    /// (few workgroups, each costing barriers and lists to merge), 16 on GPUs (parallelism).
    pub topk_items: usize,
    /// Greedy steps chained ahead of the host: GPUs 3 (recording, submission and read-back
    /// overlap the GPU's step), CPU adapters 0 (host and "GPU" share the cores).
    pub greedy_ahead: usize,
    /// GPU timestamps per kernel, printed per step (a development tool).
    pub profile: bool,
    pub pipeline_cache: PipelineCache,
}

/// Whether the adapter has subgroups wide enough for the x broadcast and the subgroup
/// attention kernels.
pub fn subgroups_of_8(caps: &Caps) -> bool {
    caps.subgroup && caps.subgroup_min_size >= 8
}

impl Tuning {
    /// The defaults for an adapter of `kind` with `caps`, with nothing read from the
    /// environment (the pipeline cache in its default directory).
    pub fn for_adapter(kind: wgpu::DeviceType, caps: &Caps) -> Tuning {
        let cpu = kind == wgpu::DeviceType::Cpu;
        let sg = subgroups_of_8(caps);
        Tuning {
            cpu,
            weight_group: if cpu { 8 } else { 1 },
            matvec: if cpu {
                MatvecLayout::Rows
            } else {
                MatvecLayout::Coalesced
            },
            matvec_wg: if cpu { 8 } else { 64 },
            x_broadcast: sg,
            attention: None,
            paged_attention: match (cpu, sg) {
                (false, _) => PagedAttentionChoice::Heads,
                (true, true) => PagedAttentionChoice::Sg,
                (true, false) => PagedAttentionChoice::Lane,
            },
            split_chunk: if cpu { 256 } else { 128 },
            topk_items: if cpu { 1024 } else { 16 },
            greedy_ahead: if cpu { 0 } else { MAX_GREEDY_AHEAD },
            profile: false,
            pipeline_cache: default_cache_dir(&|k| std::env::var(k).ok()),
        }
    }

    /// What discrete and integrated GPUs run, on any adapter (tests run the GPU paths on
    /// lavapipe this way): the plain weight layout, the coalesced matvec, split_heads
    /// decode attention and the heads paged kernel. The rest stays as it was.
    pub fn gpu_choices(&self) -> Tuning {
        Tuning {
            weight_group: 1,
            matvec: MatvecLayout::Coalesced,
            attention: Some(AttentionChoice::SplitHeads),
            paged_attention: PagedAttentionChoice::Heads,
            ..self.clone()
        }
    }

    /// [`Tuning::for_adapter`] with the `INFER_*` overrides of the process environment.
    pub fn from_env(kind: wgpu::DeviceType, caps: &Caps) -> Result<Tuning> {
        Self::from_vars(kind, caps, &|k| std::env::var(k).ok())
    }

    /// [`Tuning::from_env`] with the variables looked up through `var` (unset: `None`; an
    /// empty value counts as unset).
    pub fn from_vars(
        kind: wgpu::DeviceType,
        caps: &Caps,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Tuning> {
        let mut t = Tuning::for_adapter(kind, caps);
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        if let Some(v) = get("INFER_WEIGHT_GROUP") {
            t.weight_group = match v.as_str() {
                "1" => 1,
                "8" => 8,
                _ => return Err(bad("INFER_WEIGHT_GROUP", &v, "1 or 8")),
            };
        }
        if let Some(v) = get("INFER_MATVEC") {
            t.matvec = match v.as_str() {
                "rows" => MatvecLayout::Rows,
                "coalesced" => MatvecLayout::Coalesced,
                _ => return Err(bad("INFER_MATVEC", &v, "rows or coalesced")),
            };
        }
        if let Some(v) = get("INFER_MATVEC_X") {
            t.x_broadcast = match v.as_str() {
                "load" => false,
                "broadcast" if subgroups_of_8(caps) => true,
                "broadcast" => {
                    return Err(TensorError::Env(format!(
                        "INFER_MATVEC_X=broadcast needs subgroups of >= 8 invocations \
                         (adapter: {}..={}, feature {})",
                        caps.subgroup_min_size, caps.subgroup_max_size, caps.subgroup
                    )));
                }
                _ => return Err(bad("INFER_MATVEC_X", &v, "load or broadcast")),
            };
        }
        if let Some(v) = get("INFER_ATTENTION") {
            let sg = subgroups_of_8(caps);
            let (a, paged) = match v.as_str() {
                "split" => (AttentionChoice::Split, PagedAttentionChoice::Heads),
                "split_heads" => (AttentionChoice::SplitHeads, PagedAttentionChoice::Heads),
                "tiled" => (AttentionChoice::Tiled, PagedAttentionChoice::Heads),
                "lane" => (AttentionChoice::Lane, PagedAttentionChoice::Lane),
                "split_sg" if sg => (AttentionChoice::SplitSg, PagedAttentionChoice::Sg),
                "split_sg" => {
                    return Err(TensorError::Env(
                        "INFER_ATTENTION=split_sg needs subgroups of >= 8 invocations".into(),
                    ));
                }
                _ => {
                    return Err(bad(
                        "INFER_ATTENTION",
                        &v,
                        "split, split_heads, split_sg, lane or tiled",
                    ));
                }
            };
            t.attention = Some(a);
            t.paged_attention = paged;
        }
        if let Some(v) = get("INFER_GREEDY_AHEAD") {
            t.greedy_ahead = match v.parse::<usize>() {
                Ok(n) if n <= MAX_GREEDY_AHEAD => n,
                _ => return Err(bad("INFER_GREEDY_AHEAD", &v, "0, 1, 2 or 3")),
            };
        }
        if let Some(v) = get("INFER_PROFILE") {
            t.profile = match v.as_str() {
                "0" => false,
                "1" => true,
                _ => return Err(bad("INFER_PROFILE", &v, "0 or 1")),
            };
        }
        t.pipeline_cache = default_cache_dir(&get);
        Ok(t)
    }
}

fn bad(var: &str, value: &str, accepted: &str) -> TensorError {
    TensorError::Env(format!("{var} must be {accepted}, got `{value}`"))
}

fn default_cache_dir(var: &dyn Fn(&str) -> Option<String>) -> PipelineCache {
    let get = |k: &str| var(k).filter(|v| !v.is_empty());
    match get("INFER_PIPELINE_CACHE_DIR") {
        Some(d) if d == "off" => return PipelineCache::Off,
        Some(d) => return PipelineCache::Dir(d.into()),
        None => {}
    }
    if let Some(d) = get("XDG_CACHE_HOME") {
        return PipelineCache::Dir(PathBuf::from(d).join("infer"));
    }
    match get("HOME") {
        Some(h) => PipelineCache::Dir(PathBuf::from(h).join(".cache/infer")),
        None => PipelineCache::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::DeviceType::{Cpu, DiscreteGpu, IntegratedGpu};

    fn sg_caps() -> Caps {
        Caps {
            subgroup: true,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            ..Caps::default()
        }
    }

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_follow_the_adapter_kind() {
        let cpu = Tuning::for_adapter(Cpu, &sg_caps());
        assert_eq!(
            (cpu.weight_group, cpu.matvec, cpu.matvec_wg),
            (8, MatvecLayout::Rows, 8)
        );
        assert_eq!(cpu.paged_attention, PagedAttentionChoice::Sg);
        assert_eq!(cpu.greedy_ahead, 0);
        assert_eq!((cpu.split_chunk, cpu.topk_items), (256, 1024));
        assert!(cpu.x_broadcast);
        let cpu_nosg = Tuning::for_adapter(Cpu, &Caps::default());
        assert_eq!(cpu_nosg.paged_attention, PagedAttentionChoice::Lane);
        assert!(!cpu_nosg.x_broadcast);
        for kind in [DiscreteGpu, IntegratedGpu] {
            let gpu = Tuning::for_adapter(kind, &Caps::default());
            assert_eq!(
                (gpu.weight_group, gpu.matvec, gpu.matvec_wg),
                (1, MatvecLayout::Coalesced, 64)
            );
            assert_eq!(gpu.paged_attention, PagedAttentionChoice::Heads);
            assert_eq!(gpu.greedy_ahead, MAX_GREEDY_AHEAD);
            assert_eq!((gpu.split_chunk, gpu.topk_items), (128, 16));
        }
    }

    #[test]
    fn environment_overrides_each_choice() {
        let t = Tuning::from_vars(
            Cpu,
            &sg_caps(),
            &with(&[
                ("INFER_WEIGHT_GROUP", "1"),
                ("INFER_MATVEC", "coalesced"),
                ("INFER_MATVEC_X", "load"),
                ("INFER_ATTENTION", "split_heads"),
                ("INFER_GREEDY_AHEAD", "2"),
                ("INFER_PROFILE", "1"),
                ("INFER_PIPELINE_CACHE_DIR", "off"),
            ]),
        )
        .unwrap();
        assert_eq!(t.weight_group, 1);
        assert_eq!(t.matvec, MatvecLayout::Coalesced);
        assert!(!t.x_broadcast);
        assert_eq!(t.attention, Some(AttentionChoice::SplitHeads));
        assert_eq!(t.paged_attention, PagedAttentionChoice::Heads);
        assert_eq!(t.greedy_ahead, 2);
        assert!(t.profile);
        assert_eq!(t.pipeline_cache, PipelineCache::Off);
        let lane = Tuning::from_vars(Cpu, &sg_caps(), &with(&[("INFER_ATTENTION", "lane")]));
        assert_eq!(lane.unwrap().paged_attention, PagedAttentionChoice::Lane);
        let empty = Tuning::from_vars(Cpu, &sg_caps(), &with(&[("INFER_MATVEC", "")]));
        assert_eq!(empty.unwrap().matvec, MatvecLayout::Rows);
    }

    #[test]
    fn unknown_values_name_the_variable_and_the_accepted_values() {
        for (var, value, accepted) in [
            ("INFER_WEIGHT_GROUP", "4", "1 or 8"),
            ("INFER_MATVEC", "fast", "rows or coalesced"),
            ("INFER_MATVEC_X", "yes", "load or broadcast"),
            (
                "INFER_ATTENTION",
                "flash",
                "split, split_heads, split_sg, lane or tiled",
            ),
            ("INFER_GREEDY_AHEAD", "4", "0, 1, 2 or 3"),
            ("INFER_GREEDY_AHEAD", "-1", "0, 1, 2 or 3"),
            ("INFER_PROFILE", "yes", "0 or 1"),
        ] {
            let e = Tuning::from_vars(Cpu, &sg_caps(), &with(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(var) && e.contains(accepted) && e.contains(value),
                "{e}"
            );
        }
        let e = Tuning::from_vars(
            Cpu,
            &Caps::default(),
            &with(&[("INFER_ATTENTION", "split_sg")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("INFER_ATTENTION") && e.contains("subgroups"),
            "{e}"
        );
    }

    #[test]
    fn gpu_choices_keep_the_rest() {
        let cpu = Tuning::for_adapter(Cpu, &sg_caps());
        let g = cpu.gpu_choices();
        assert_eq!(g.weight_group, 1);
        assert_eq!(g.matvec, MatvecLayout::Coalesced);
        assert_eq!(g.attention, Some(AttentionChoice::SplitHeads));
        assert_eq!(g.paged_attention, PagedAttentionChoice::Heads);
        assert_eq!((g.cpu, g.matvec_wg, g.greedy_ahead), (true, 8, 0));
    }
}
