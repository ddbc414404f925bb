//! GPU-free checks: every kernel's WGSL parses and validates with naga in every variant it
//! accepts, with its generated parameter block; every shader file is registered, launched
//! and tested.

use infer_kernels::{Kernel, Variant};
use infer_tensor::DType;

fn validate(label: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{label}: WGSL parse error:\n{}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{label}: validation error: {e:?}"));
    module
}

/// The weight dtypes a kernel's pipelines are built for (`None`: it reads no weights).
fn dtypes(k: Kernel) -> Vec<Option<DType>> {
    if k.reads_weights() {
        DType::ALL.iter().map(|&d| Some(d)).collect()
    } else {
        vec![None]
    }
}

#[test]
fn every_kernel_validates_in_every_variant() {
    let mut n = 0;
    for &k in Kernel::ALL {
        for d in dtypes(k) {
            for v in k.variants(d) {
                let src = k.source_for(d, v).expect("a variant the kernel lists");
                let label = format!(
                    "{k}{}{}",
                    d.map(|d| format!("_{d}")).unwrap_or_default(),
                    v.label()
                );
                validate(&label, &src);
                if let Variant::Matvec {
                    x_broadcast: true, ..
                } = v
                {
                    assert!(src.contains("subgroupBroadcast"), "{label}: no x broadcast");
                }
                n += 1;
            }
        }
    }
    assert!(n >= Kernel::ALL.len());
    assert!(
        Kernel::Matvec
            .variants(Some(DType::F32))
            .contains(&Variant::Matvec {
                tokens: 4,
                x_broadcast: false
            }),
        "matvec has no 4-token variant"
    );
}

#[test]
fn the_uniform_block_is_the_rust_params_struct() {
    for &k in Kernel::ALL {
        // The kernel files declare no parameter block of their own: the registry prepends
        // the one generated from the Rust struct the launcher uploads.
        for (i, text) in std::iter::once(k.source())
            .chain(k.common().iter().copied())
            .enumerate()
        {
            assert!(
                !text.contains("struct Params"),
                "{k}: file {i} (0: the kernel, then its common snippets) declares struct Params"
            );
        }
        // The compiled module's binding 0 is that struct, its members in order.
        let d = dtypes(k)[0];
        let v = k.variants(d)[0];
        let module = validate(k.name(), &k.source_for(d, v).expect("variant"));
        let p = module
            .global_variables
            .iter()
            .find(|(_, g)| {
                g.binding
                    .as_ref()
                    .is_some_and(|b| b.group == 0 && b.binding == 0)
            })
            .map(|(_, g)| g)
            .unwrap_or_else(|| panic!("{k}: no binding 0"));
        assert_eq!(
            p.space,
            naga::AddressSpace::Uniform,
            "{k}: binding 0 is not uniform"
        );
        let naga::TypeInner::Struct { members, .. } = &module.types[p.ty].inner else {
            panic!("{k}: binding 0 is not a struct");
        };
        let names: Vec<String> = members.iter().filter_map(|m| m.name.clone()).collect();
        let wgsl = k.params_wgsl();
        let declared: Vec<String> = wgsl
            .lines()
            .filter_map(|l| Some(l.trim().split_once(':')?.0.to_string()))
            .collect();
        assert_eq!(
            names, declared,
            "{k}: binding 0 is not the generated Params"
        );
    }
}

#[test]
fn every_shader_file_is_registered_launched_and_tested() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("shaders dir")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "wgsl").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    files.sort();
    let mut registered: Vec<String> = Kernel::ALL.iter().map(|k| k.name().to_string()).collect();
    registered.sort();
    assert_eq!(files, registered, "shaders/*.wgsl and Kernel::ALL differ");
    let launchers = [
        include_str!("../src/attention.rs"),
        include_str!("../src/elementwise.rs"),
        include_str!("../src/linear.rs"),
        include_str!("../src/matvec.rs"),
        include_str!("../src/norm.rs"),
        include_str!("../src/paged.rs"),
        include_str!("../src/rope_kv.rs"),
        include_str!("../src/select.rs"),
    ]
    .concat();
    let tests = include_str!("kernels.rs");
    for &k in Kernel::ALL {
        let variant = format!("{k:?}");
        let named = |s: &str| {
            s.match_indices(&format!("Kernel::{variant}"))
                .any(|(i, m)| !s[i + m.len()..].starts_with(|c: char| c.is_alphanumeric()))
        };
        assert!(named(&launchers), "kernel {k} has no launcher in src/");
        let tested = tests.lines().any(|l| {
            l.trim_start()
                .strip_prefix("fn ")
                .is_some_and(|f| f.split('(').next().unwrap_or("").contains(k.name()))
        });
        assert!(
            tested,
            "kernel {k} has no GPU test (a test fn whose name contains it) in tests/kernels.rs"
        );
    }
}
