//! GPU-free checks: every WGSL file parses and validates with naga in every variant, and
//! every shader has a launcher and a GPU test.

use infer_kernels::{SHADERS, shader_source, with_tokens, with_x_broadcast, x_broadcast_dtype};
use infer_tensor::DType;

fn validate(label: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{label}: WGSL parse error:\n{}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{label}: validation error: {e:?}"));
}

#[test]
fn every_shader_validates_in_every_variant() {
    let mut n = 0;
    for s in SHADERS {
        if s.weights {
            for d in DType::ALL {
                let src = shader_source(s, Some(d)).expect("weight variant");
                validate(&format!("{}_{d}", s.name), &src);
                n += 1;
                if let Some(src) = with_tokens(&src, 4) {
                    validate(&format!("{}_{d}_tok4", s.name), &src);
                }
                // matvec's and matvec_glu's x shared over subgroups.
                if x_broadcast_dtype(d) && matches!(s.name, "matvec" | "matvec_glu") {
                    let xsg = with_x_broadcast(&src).expect("an XUNIT block");
                    assert!(xsg.contains("subgroupBroadcast"), "{}_{d}: no swap", s.name);
                    validate(&format!("{}_{d}_xsg", s.name), &xsg);
                    if let Some(tok) = with_tokens(&xsg, 4) {
                        validate(&format!("{}_{d}_xsg_tok4", s.name), &tok);
                    }
                    n += 1;
                }
            }
        } else {
            let src = shader_source(s, None).expect("plain shader");
            validate(s.name, &src);
            n += 1;
            // Kernels with a variant number (attention_split_sg: 1..=1024).
            if with_tokens(&src, 2).is_some() {
                for tok in 2..=1024 {
                    let v = with_tokens(&src, tok).expect("variant");
                    validate(&format!("{}_tok{tok}", s.name), &v);
                }
            }
        }
    }
    assert!(n >= SHADERS.len());
    let matvec = SHADERS.iter().find(|s| s.name == "matvec").expect("matvec");
    assert!(
        with_tokens(matvec.source, 4).is_some(),
        "matvec has no TOKENS block"
    );
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
    let mut registered: Vec<String> = SHADERS.iter().map(|s| s.name.to_string()).collect();
    registered.sort();
    assert_eq!(files, registered, "shaders/*.wgsl and SHADERS differ");
    let launchers = include_str!("../src/launchers.rs");
    let tests = include_str!("kernels.rs");
    for s in SHADERS {
        assert!(
            launchers.contains(&format!("\"{}\"", s.name)),
            "shader {} has no launcher in src/launchers.rs",
            s.name
        );
        let tested = tests.lines().any(|l| {
            l.trim_start()
                .strip_prefix("fn ")
                .is_some_and(|f| f.split('(').next().unwrap_or("").contains(s.name))
        });
        assert!(
            tested,
            "shader {} has no GPU test (a test fn whose name contains it) in tests/kernels.rs",
            s.name
        );
    }
}
