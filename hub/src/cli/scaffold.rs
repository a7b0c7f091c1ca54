//! `govhub adapter new NAME`: a buildable adapter crate that passes its own
//! tests, from the templates in `hub/templates/adapter/`.

use crate::runtime::manifest::check_name;
use anyhow::Context;
use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("../../templates/adapter/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../../templates/adapter/lib.rs.tmpl");
const SAMPLE: &str = include_str!("../../templates/adapter/report.json.tmpl");
const MANIFEST: &str = include_str!("../../templates/adapter/manifest.toml.tmpl");
const README: &str = include_str!("../../templates/adapter/README.md.tmpl");

/// The SDK of the source tree this govhub was built from, if it is still
/// there.
fn default_sdk() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").exists())
}

/// `police-2` → `Police2`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Writes the crate and prints what to do next.
pub fn new_adapter(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    check_name(name).map_err(|m| anyhow::anyhow!("adapter name: {m}"))?;
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        anyhow::bail!("adapter name: `{name}` must start with a letter");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!("{} already exists and is not empty", dir.display());
    }
    let sdk = match sdk.or_else(default_sdk) {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--sdk-path {}", p.display()))?,
        None => {
            anyhow::bail!("cannot find the govhub-sdk crate: pass --sdk-path PATH/TO/govhub/sdk")
        }
    };
    if !sdk.join("Cargo.toml").exists() {
        anyhow::bail!("--sdk-path {}: no Cargo.toml there", sdk.display());
    }
    let crate_name = name.replace('-', "_");
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{type}}", &type_name(name))
            .replace("{{sdk}}", &sdk.to_string_lossy())
    };
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("samples"))?;
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("samples/report.json", SAMPLE),
        (&format!("{name}.toml") as &str, MANIFEST),
        ("README.md", README),
    ];
    for (file, template) in files {
        std::fs::write(dir.join(file), fill(template))
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    println!("created the adapter crate {}", dir.display());
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo test                                    # offline harness");
    println!("  cargo build --target wasm32-wasip2 --release  # the component");
    println!(
        "  govhub adapter test target/wasm32-wasip2/release/{crate_name}_adapter.wasm --ingest samples/report.json"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(type_name("police"), "Police");
        assert_eq!(type_name("four-platforms"), "FourPlatforms");
        assert_eq!(type_name("fire-2"), "Fire2");
    }
}
