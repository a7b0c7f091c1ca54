//! `govhub adapters …` (the admin API of a running hub), `govhub adapter
//! keygen|sign` (signing for integrators) and `govhub audit verify`.

use crate::admin::{audit, signing};
use crate::client::Http;
use crate::config::Config;
use crate::journal::sqlite::{SqliteConfig, SqliteJournal};
use anyhow::Context;
use base64::Engine as _;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Where the hub is and how to authenticate.
#[derive(Args)]
pub struct HubArgs {
    /// The hub's base URL.
    #[arg(long, env = "GOVHUB_URL", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// The environment variable holding the admin token.
    #[arg(long, default_value = "GOVHUB_ADMIN_TOKEN")]
    token_env: String,
}

impl HubArgs {
    fn client(&self) -> anyhow::Result<Http> {
        let token = std::env::var(&self.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .with_context(|| {
                format!(
                    "set {} to the hub's admin token (the value of the variable its auth.admin_token_env names)",
                    self.token_env
                )
            })?;
        Ok(Http::new().with_bearer(token))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.hub.trim_end_matches('/'))
    }
}

/// `govhub adapters …`.
#[derive(Subcommand)]
pub enum AdaptersCommand {
    /// List the loaded adapters, their versions and health.
    List {
        #[command(flatten)]
        hub: HubArgs,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a manifest and its module (and `MODULE.wasm.sig` if present)
    /// as a new version, swapped in once it passes its self-check.
    Load {
        /// The manifest (TOML); its `wasm` is read relative to it.
        manifest: PathBuf,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Take an adapter out; its deliveries wait in the journal.
    Unload {
        /// The adapter's manifest name.
        name: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Go back to the version before the one serving.
    Rollback {
        /// The adapter's manifest name.
        name: String,
        #[command(flatten)]
        hub: HubArgs,
    },
}

/// `govhub audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; exit 1 on a changed, removed or
    /// reordered record.
    Verify {
        /// The hub's config file (its journal holds the log).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a case's flow records: what of its events went to each
    /// department, what each was withheld, under which policy.
    Flows {
        /// The hub's config file (its journal holds the log).
        #[arg(long, short)]
        config: PathBuf,
        /// The case.
        #[arg(long = "case")]
        caseid: String,
        /// Print the records as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// The journal of a config, opened to read its audit chain, and where it
/// is (for messages).
struct Opened {
    journal: std::sync::Arc<dyn crate::journal::Journal>,
    sqlite: Option<std::sync::Arc<SqliteJournal>>,
    place: String,
}

impl Opened {
    fn close(self) {
        if let Some(j) = self.sqlite {
            j.close();
        }
    }
}

/// Opens the journal of `config` (`storage.backend`) for reading the audit
/// chain. On NATS it connects as a reader, taking no part in the work.
async fn open_journal(config: &Path) -> anyhow::Result<Opened> {
    let config = Config::load(config)?;
    if config.storage.backend == "nats" {
        let nats = config.storage.nats(&config.stream);
        let journal = crate::journal::nats::NatsJournal::connect_reader(&nats)
            .await
            .with_context(|| format!("the NATS journal at {}", nats.url))?;
        return Ok(Opened {
            journal: std::sync::Arc::new(journal),
            sqlite: None,
            place: format!("the NATS journal `{}` at {}", nats.prefix, nats.url),
        });
    }
    let path = config.storage.path.clone();
    if !path.exists() {
        anyhow::bail!("no journal at {} (storage.path)", path.display());
    }
    let journal = SqliteJournal::open(&SqliteConfig {
        max_group: 1,
        ..SqliteConfig::at(&path)
    })
    .with_context(|| format!("journal {}", path.display()))?;
    let journal = std::sync::Arc::new(journal);
    Ok(Opened {
        journal: journal.clone(),
        sqlite: Some(journal),
        place: path.display().to_string(),
    })
}

/// `govhub auth …`.
#[derive(Subcommand)]
pub enum AuthCommand {
    /// Make a fresh token for a principal: prints the token (give it to
    /// the principal; it is not stored anywhere) and the `[[auth.principals]]`
    /// lines holding its hash.
    Token {
        /// The principal's name.
        #[arg(long)]
        name: String,
        /// Its role, for the lines printed.
        #[arg(long, value_parser = ["department", "viewer", "operator", "admin"], default_value = "department")]
        role: String,
    },
}

/// Runs `govhub auth …`.
pub fn auth(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Token { name, role } => {
            crate::auth::check_name(&name)?;
            let token = crate::auth::principal::new_token()?;
            let hash = hex::encode(crate::auth::principal::token_hash(&token));
            println!("token: {token}");
            println!(
                "(give it to `{name}`: the hub keeps only its hash, so it cannot be shown again)"
            );
            println!();
            println!("[[auth.principals]]");
            println!("name = \"{name}\"");
            println!("role = \"{role}\"");
            println!("token_sha256 = \"{hash}\"");
            if role == "department" {
                println!("sources = [\"urn:govhub:{name}\"]   # the source prefixes it may send");
                println!("adapters = [\"{name}\"]              # its raw ingest, and whose deliveries it reads");
            }
            Ok(())
        }
    }
}

async fn answer(
    http: &Http,
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let (status, v) = http.send(method, url, body).await?;
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let detail = v
        .get("detail")
        .and_then(|d| d.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    anyhow::bail!("the hub answered {status}: {detail}")
}

/// Runs `govhub adapters …`.
pub async fn adapters(command: AdaptersCommand) -> anyhow::Result<()> {
    match command {
        AdaptersCommand::List { hub, json } => {
            let v = answer(&hub.client()?, "GET", &hub.url("/v1/adapters"), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let empty = Vec::new();
            let list = v["adapters"].as_array().unwrap_or(&empty);
            if list.is_empty() {
                println!("no adapters loaded");
            }
            for a in list {
                let state = match a["quarantined"].as_str() {
                    Some(reason) => format!("QUARANTINED ({reason})"),
                    None => "serving".into(),
                };
                println!(
                    "{:<24} v{} {} {} sha256 {}… from {} at {}{}; queue {}; {} versions",
                    a["name"].as_str().unwrap_or("?"),
                    a["version_id"],
                    a["describe"]["version"].as_str().unwrap_or("?"),
                    state,
                    a["sha256"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                    a["origin"].as_str().unwrap_or("?"),
                    a["loaded_at"].as_str().unwrap_or("?"),
                    if a["signed"].as_bool() == Some(true) {
                        ", signed"
                    } else {
                        ""
                    },
                    a["queue_depth"],
                    a["versions"].as_array().map(Vec::len).unwrap_or(0),
                );
            }
            Ok(())
        }
        AdaptersCommand::Load { manifest, hub } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("manifest {}", manifest.display()))?;
            let parsed = crate::runtime::Manifest::parse(&text, &manifest)?;
            let module = std::fs::read(&parsed.wasm)
                .with_context(|| format!("module {}", parsed.wasm.display()))?;
            let signature = signing::signature_beside(&parsed.wasm);
            let body = serde_json::json!({
                "manifest": text,
                "module": base64::engine::general_purpose::STANDARD.encode(&module),
                "signature": signature,
            });
            eprintln!(
                "uploading {} ({} KiB{})…",
                parsed.wasm.display(),
                module.len() / 1024,
                if signature.is_some() { ", signed" } else { "" }
            );
            let url = hub.url(&format!("/v1/adapters/{}", parsed.name));
            let v = answer(&hub.client()?, "PUT", &url, Some(body)).await?;
            println!(
                "adapter {} now serves version {} (sha256 {}) after {:.1} ms{}",
                parsed.name,
                v["version_id"],
                v["sha256"].as_str().unwrap_or("?"),
                v["load_ms"].as_f64().unwrap_or(0.0),
                if v["cached"].as_bool() == Some(true) {
                    ", compile cache hit"
                } else {
                    ""
                }
            );
            Ok(())
        }
        AdaptersCommand::Unload { name, hub } => {
            let url = hub.url(&format!("/v1/adapters/{name}"));
            answer(&hub.client()?, "DELETE", &url, None).await?;
            println!("adapter {name} unloaded; its deliveries wait in the journal");
            Ok(())
        }
        AdaptersCommand::Rollback { name, hub } => {
            let url = hub.url(&format!("/v1/adapters/{name}/rollback"));
            let v = answer(&hub.client()?, "POST", &url, None).await?;
            println!(
                "adapter {name} rolled back to version {} (sha256 {})",
                v["version_id"],
                v["sha256"].as_str().unwrap_or("?")
            );
            Ok(())
        }
    }
}

/// `govhub adapter keygen`: writes the secret key to `out` (mode 0600) and
/// the public key to `out.pub`.
pub fn keygen(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        anyhow::bail!("{} exists; pass --force to replace it", out.display());
    }
    let (secret, public) = signing::keygen()?;
    write_private(out, &secret)?;
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    std::fs::write(&public_path, format!("{public}\n"))?;
    println!("secret key: {} (keep it private)", out.display());
    println!("public key: {}", Path::new(&public_path).display());
    println!("trust it in the hub's config:\n\n[signing]\ntrusted_keys = [\"{public}\"]");
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// `govhub adapter sign`: writes `MODULE.wasm.sig`.
pub fn sign(module: &Path, key: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(module).with_context(|| format!("module {}", module.display()))?;
    let secret = std::fs::read_to_string(key).with_context(|| format!("key {}", key.display()))?;
    let signature = signing::sign(&bytes, &secret)?;
    let mut sig = module.as_os_str().to_owned();
    sig.push(".sig");
    std::fs::write(&sig, format!("{signature}\n"))?;
    println!(
        "signed {} → {}",
        module.display(),
        Path::new(&sig).display()
    );
    Ok(())
}

/// Runs `govhub audit …`.
pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { config } => {
            let opened = open_journal(&config).await?;
            // The head first: records a running hub appends after it are
            // left for the next check, not taken for a cut.
            let head = opened.journal.audit_head().await?;
            let mut log = opened.journal.audit_log().await?;
            let head_seq = head
                .as_deref()
                .and_then(|h| h.split(' ').next()?.parse::<i64>().ok())
                .unwrap_or(0);
            log.retain(|r| r.seq <= head_seq || head.is_none());
            let place = opened.place.clone();
            opened.close();
            match audit::verify_with_head(&log, head.as_deref()) {
                Ok(n) => {
                    println!("audit log of {place}: {n} records, chain intact");
                    Ok(())
                }
                Err(e) => anyhow::bail!("audit log of {place} is NOT intact: {e}"),
            }
        }
        AuditCommand::Flows {
            config,
            caseid,
            json,
        } => {
            let opened = open_journal(&config).await?;
            let records = opened
                .journal
                .audit_query(&crate::journal::AuditQuery {
                    action: Some("flow".into()),
                    caseid: Some(caseid.clone()),
                    limit: usize::MAX >> 1,
                    ..Default::default()
                })
                .await?;
            opened.close();
            if records.is_empty() {
                println!("no flows recorded for case {caseid}");
            }
            for r in records {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                    continue;
                }
                let d: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
                let fields: Vec<String> = d["fields"]
                    .as_object()
                    .map(|f| {
                        f.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "#{} {} {} → {:<16} {:<9} {} ({}) route `{}`; {}; payload sha256 {}",
                    r.seq,
                    crate::journal::rfc3339_ms(r.at_ms),
                    d["event"].as_str().unwrap_or("?"),
                    r.target,
                    d["outcome"].as_str().unwrap_or("?"),
                    d["type"].as_str().unwrap_or("?"),
                    d["grade"].as_str().unwrap_or("?"),
                    d["route"].as_str().unwrap_or("?"),
                    if fields.is_empty() {
                        "no labelled fields".to_string()
                    } else {
                        fields.join(" ")
                    },
                    d["payload_sha256"]
                        .as_str()
                        .map(|h| &h[..h.len().min(16)])
                        .unwrap_or("none (withheld)"),
                );
            }
            Ok(())
        }
    }
}
