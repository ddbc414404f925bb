//! `infer devices`: every adapter with its backend, type, driver, limits and features.

use anyhow::{Result, bail};
use infer_tensor::{Device, DeviceOptions};

use infer_tensor::wgpu::Features as wgpu_features;

use crate::args::DeviceArgs;

pub fn devices(args: DeviceArgs) -> Result<()> {
    let opts = DeviceOptions {
        backend: args.backend.clone(),
        adapter: args.adapter.clone(),
    }
    .with_env();
    let list = infer_tensor::device::enumerate(&opts)?;
    if list.is_empty() {
        bail!(
            "no GPU adapter found (on a machine without a GPU, install Mesa's lavapipe: mesa-vulkan-drivers)"
        );
    }
    let chosen = Device::new(&opts).ok().map(|d| d.info.clone());
    for (i, a) in list.iter().enumerate() {
        let info = &a.info;
        let mark = if chosen
            .as_ref()
            .is_some_and(|c| c.name == info.name && c.backend == info.backend)
        {
            " (default)"
        } else {
            ""
        };
        println!("[{i}] {}{mark}", info.name);
        println!(
            "    backend: {:?}   type: {:?}",
            info.backend, info.device_type
        );
        println!("    driver: {} {}", info.driver, info.driver_info);
        let l = &a.limits;
        println!(
            "    limits: max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, \
             workgroup storage {} KiB, invocations/workgroup {}, workgroups/dim {}, \
             storage buffers/stage {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
        );
        let f = a.features;
        let names: Vec<&str> = [
            (wgpu_features::SHADER_F16, "SHADER_F16"),
            (wgpu_features::SUBGROUP, "SUBGROUP"),
            (wgpu_features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
            (wgpu_features::PIPELINE_CACHE, "PIPELINE_CACHE"),
            (wgpu_features::SHADER_INT64, "SHADER_INT64"),
        ]
        .iter()
        .filter(|(bit, _)| f.contains(*bit))
        .map(|(_, n)| *n)
        .collect();
        println!(
            "    features: {}   subgroup size {}..{}",
            names.join(" "),
            info.subgroup_min_size,
            info.subgroup_max_size
        );
    }
    Ok(())
}
