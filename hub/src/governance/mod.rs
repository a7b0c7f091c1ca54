//! Data governance: what each recipient may see of the personal
//! information events carry, enforced by the hub on every path, and a
//! record of every flow.
//!
//! - [`policy`]: the labels (`[[classification]]`: JSON pointers into
//!   `data`, and attributes, with a category and a grade) and the grants
//!   (`[governance.grants.ADAPTER]`, `[governance.viewers]`: an action per
//!   category), both the hub's;
//! - [`functions`]: mask, pseudonymize, generalize, native in the host;
//! - [`view`]: labelling an event on arrival, the view one recipient
//!   gets, and scrubbing log lines and errors.
//!
//! It refuses to fail open: a labelled field a recipient has no grant for
//! is dropped; a recipient whose grant does not load (an unknown category,
//! a pseudonym key that cannot be read) gets nothing at all, its
//! deliveries waiting in the journal, rather than raw data; `core` data
//! never leaves the hub. Adapters never see a label or a grant, and
//! decide nothing.

pub mod functions;
pub mod policy;
pub mod view;

pub use policy::{Action, Category, ClassificationRule, GovernanceConfig, Grade, Grant};
pub use view::{Applied, Field};

use crate::router::grids::GridMap;
use anyhow::Context as _;
use dashmap::DashMap;
use govhub_sdk::Event;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Who reads an event through the hub's APIs.
pub enum Audience<'a> {
    /// Viewers, operators and admins (and everyone on a hub without
    /// principals): `[governance.viewers]`.
    Viewers,
    /// A department: what its adapters may receive, the widest of them.
    Adapters(&'a [String]),
    /// In the clear: what a sender sent, an admin's audited reveal.
    Clear,
}

/// The hub's policy, loaded.
pub struct Governance {
    rules: Vec<policy::Rule>,
    grants: BTreeMap<String, Result<Grant, String>>,
    viewers: Grant,
    key: Result<Vec<u8>, String>,
    version: u32,
    hash: String,
    grids: Option<Arc<GridMap>>,
    keys: DashMap<String, ring::hmac::Key>,
}

/// What a delivery carries to its adapter.
pub enum Outgoing {
    /// The view, and what was done to make it.
    Send(Box<Event>, Applied),
    /// Nothing: `core` data never leaves the hub.
    Withhold(String),
}

impl Governance {
    /// Loads the policy. A rule that does not compile or a viewers' grant
    /// that does not parse stops the start (nothing could be labelled or
    /// read safely); a recipient's grant that does not load only stops
    /// deliveries to that recipient ([`Governance::broken`]). The
    /// pseudonym key comes from `key_env`, else `key_file`, else
    /// `shared_key` (the one a cluster's journal holds for every node,
    /// see [`Governance::new_key`]), else the file `governance.key` in
    /// `default_dir`, made when missing.
    pub fn load(
        rules: &[ClassificationRule],
        config: &GovernanceConfig,
        default_dir: &Path,
        shared_key: Option<&str>,
        grids: Option<Arc<GridMap>>,
    ) -> anyhow::Result<Governance> {
        let compiled = policy::compile_rules(rules)?;
        let viewers = policy::parse_grant(&config.viewers)
            .map_err(|e| anyhow::anyhow!("governance.viewers: {e}"))?;
        if config.key_version == 0 {
            anyhow::bail!("governance.key_version must be at least 1");
        }
        let grants = config
            .grants
            .iter()
            .map(|(name, pairs)| {
                (
                    name.clone(),
                    policy::parse_grant(pairs)
                        .map_err(|e| format!("governance.grants.{name}: {e}")),
                )
            })
            .collect();
        let key = read_key(config, default_dir, shared_key);
        let needs_key = viewers.pseudonymizes()
            || config
                .grants
                .values()
                .any(|g| g.values().any(|a| a == "pseudonymize"));
        if let (Err(e), true) = (&key, needs_key) {
            tracing::error!(
                "governance: {e}: recipients granted pseudonyms get nothing until it is fixed"
            );
        }
        let hash = policy_hash(rules, config);
        Ok(Governance {
            rules: compiled,
            grants,
            viewers,
            key,
            version: config.key_version,
            hash,
            grids,
            keys: DashMap::new(),
        })
    }

    /// A fresh pseudonym key as its stored text (32 random bytes, hex):
    /// what a cluster's first node offers its journal to share.
    pub fn new_key() -> anyhow::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(hex::encode(bytes))
    }

    /// No policy: nothing labelled, every view the event itself.
    pub fn none() -> Governance {
        Governance {
            rules: Vec::new(),
            grants: BTreeMap::new(),
            viewers: Grant::default(),
            key: Err("no key".into()),
            version: 1,
            hash: policy_hash(&[], &GovernanceConfig::default()),
            grids: None,
            keys: DashMap::new(),
        }
    }

    /// Whether any event is labelled at all.
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The policy's hash (its rules, grants and key version), as flow
    /// records name it.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Labels an event on arrival (see [`view::label`]).
    pub fn label(&self, event: &mut Event) {
        if self.enabled() {
            view::label(&self.rules, event);
        }
    }

    /// Why `adapter` gets nothing, when its grant does not load.
    pub fn broken(&self, adapter: &str) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        match self.grants.get(adapter) {
            Some(Err(e)) => Some(e.clone()),
            Some(Ok(g)) if g.pseudonymizes() => self.key.as_ref().err().map(|e| {
                format!("governance.grants.{adapter} pseudonymizes, but the pseudonym key cannot be read: {e}")
            }),
            _ => None,
        }
    }

    /// What `adapter` is granted (an empty grant when none was: every
    /// labelled field dropped).
    pub fn grant(&self, adapter: &str) -> Grant {
        match self.grants.get(adapter) {
            Some(Ok(g)) => g.clone(),
            _ => Grant::default(),
        }
    }

    /// What a manifest's `[clearance]` asks beyond `adapter`'s grant, as
    /// `pi.phone: asks clear, granted mask` lines (an unknown category or
    /// action is named so).
    pub fn requests_beyond(
        &self,
        adapter: &str,
        requested: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let grant = self.grant(adapter);
        requested
            .iter()
            .filter_map(|(category, action)| {
                let Some(c) = Category::parse(category) else {
                    return Some(format!("{category}: not a category the hub knows"));
                };
                let asked: Option<Action> =
                    serde_json::from_value(serde_json::Value::String(action.clone())).ok();
                let granted = grant.action(c);
                match asked {
                    None => Some(format!("{category}: `{action}` is not an action")),
                    Some(a) if a < granted => Some(format!(
                        "{category}: asks {}, granted {}",
                        a.as_str(),
                        granted.as_str()
                    )),
                    Some(_) => None,
                }
            })
            .collect()
    }

    fn key_for(&self, recipient: &str) -> Option<ring::hmac::Key> {
        let master = self.key.as_ref().ok()?;
        Some(
            self.keys
                .entry(recipient.to_string())
                .or_insert_with(|| functions::recipient_key(master, recipient, self.version))
                .clone(),
        )
    }

    fn apply(&self, event: &Event, grant: &Grant, recipient: &str) -> (Event, Applied) {
        let key = grant
            .pseudonymizes()
            .then(|| self.key_for(recipient))
            .flatten();
        let grids = self.grids.clone();
        let grid_of = move |lat: f64, lon: f64| grids.as_ref().map(|m| m.assign(lat, lon).grid);
        let cx = view::Context {
            key: key.as_ref().map(|k| (k, self.version)),
            grid_of: &grid_of,
        };
        view::apply(&self.rules, event, grant, &cx)
    }

    /// What a delivery to `adapter` carries: the event under its grant,
    /// or nothing for `core` data. (A recipient whose grant is
    /// [`Governance::broken`] is not delivered to at all.)
    pub fn outgoing(&self, event: &Event, adapter: &str) -> Outgoing {
        if !self.enabled() {
            return Outgoing::Send(Box::new(event.clone()), Applied::default());
        }
        if view::grade_of(event) == Grade::Core {
            return Outgoing::Withhold("core data never leaves the hub".into());
        }
        let (v, applied) = self.apply(event, &self.grant(adapter), adapter);
        Outgoing::Send(Box::new(v), applied)
    }

    /// The event as `audience` may read it. `core` data is read in the
    /// clear only through an admin's reveal.
    pub fn read(&self, event: &Event, audience: Audience<'_>) -> Event {
        if !self.enabled() {
            return event.clone();
        }
        let core = view::grade_of(event) == Grade::Core;
        let (grant, recipient) = match audience {
            Audience::Clear => return event.clone(),
            // Core data is not shown at all: its labels and grade are.
            _ if core => {
                let (mut v, _) = self.apply(event, &Grant::default(), "viewers");
                v.data = None;
                v.datacontenttype = None;
                return v;
            }
            Audience::Viewers => (self.viewers.clone(), "viewers".to_string()),
            Audience::Adapters(names) => {
                let grants: Vec<Grant> = names
                    .iter()
                    .map(|n| match self.broken(n) {
                        Some(_) => Grant::default(),
                        None => self.grant(n),
                    })
                    .collect();
                let refs: Vec<&Grant> = grants.iter().collect();
                // Pseudonyms under the first adapter's key: what the
                // department received through it.
                (
                    Grant::widest(&refs),
                    names.first().cloned().unwrap_or_default(),
                )
            }
        };
        self.apply(event, &grant, &recipient).0
    }

    /// A CloudEvent's JSON as `audience` may read it (the stream, the
    /// snapshot); unreadable JSON passes as it is, holding nothing the
    /// hub labelled.
    pub fn read_json(&self, json: &str, audience: Audience<'_>) -> String {
        if !self.enabled() {
            return json.to_string();
        }
        match govhub_sdk::cloudevents::from_slice(json.as_bytes()) {
            Ok(e) => {
                let v = self.read(&e, audience);
                String::from_utf8(govhub_sdk::cloudevents::to_vec(&v)).unwrap_or_default()
            }
            Err(_) => json.to_string(),
        }
    }

    /// A flow record: what of `event` went to (or was kept from) a
    /// delivery's target, under which policy, the hash of the exact payload
    /// handed to the adapter; names of fields and actions only, never a
    /// value. `None` without a policy. The journal adds the delivery and
    /// its route, and appends it to the audit chain with the outcome.
    pub fn flow_record(
        &self,
        event: &Event,
        view: Option<&Event>,
        applied: &Applied,
        outcome: &str,
        attempts: u32,
    ) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        use sha2::Digest;
        use std::fmt::Write as _;
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = String::with_capacity(512);
        let _ = write!(
            out,
            "{{\"event\":{},\"source\":{},\"type\":{},\"caseid\":{},\"grade\":\"{}\",\"policy\":\"{}\",\"fields\":{{",
            quote(&event.id),
            quote(&event.source),
            quote(&event.type_),
            event.caseid.as_deref().map(quote).unwrap_or_else(|| "null".into()),
            applied.grade.as_str(),
            self.hash,
        );
        for (i, (f, _, a)) in applied.fields.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(out, "{comma}{}:\"{}\"", quote(&f.name()), a.as_str());
        }
        let _ = write!(
            out,
            "}},\"outcome\":{},\"attempts\":{attempts}",
            quote(outcome)
        );
        if applied.data_dropped {
            out.push_str(",\"data\":\"drop\"");
        }
        if let Some(v) = view {
            // The exact payload: the view as CloudEvents JSON, hashed as
            // it is written (no copy of it kept).
            let mut hasher = HashWriter(sha2::Sha256::new());
            govhub_sdk::cloudevents::write(&mut hasher, v);
            let _ = write!(
                out,
                ",\"payload_sha256\":\"{}\"",
                hex::encode(hasher.0.finalize())
            );
        }
        out.push('}');
        Some(out)
    }

    /// The labelled values of `event` in the clear, with their masks, for
    /// [`Governance::scrub`].
    pub fn clear_values(&self, event: &Event) -> Vec<(String, String)> {
        if !self.enabled() {
            return Vec::new();
        }
        view::clear_values(&self.rules, event)
    }

    /// `text` (a log line, an error) without the values given nor any
    /// phone number, ID number or plate in the clear.
    pub fn scrub(&self, text: &str, values: &[(String, String)]) -> String {
        view::scrub(text, values)
    }
}

/// Feeds what is written to it to SHA-256.
struct HashWriter(sha2::Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The policy's hash: sha256 of its rules, grants and key version as
/// JSON (sorted maps), so a flow record says which policy made it.
fn policy_hash(rules: &[ClassificationRule], config: &GovernanceConfig) -> String {
    use sha2::Digest;
    let text = serde_json::json!({
        "classification": rules.iter().map(|r| serde_json::json!({
            "type": r.type_, "fields": r.fields, "attributes": r.attributes, "grade": r.grade.as_str(),
        })).collect::<Vec<_>>(),
        "grants": config.grants,
        "viewers": config.viewers,
        "key_version": config.key_version,
    })
    .to_string();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The master key of pseudonyms: from the environment variable named by
/// `key_env`, else the key file named, else the one the journal shares
/// between a cluster's nodes, else the default key file (made, 32 random
/// bytes, mode 0600, when missing).
fn read_key(
    config: &GovernanceConfig,
    default_dir: &Path,
    shared: Option<&str>,
) -> Result<Vec<u8>, String> {
    if let Some(var) = &config.key_env {
        let text = std::env::var(var).map_err(|_| {
            format!("the environment variable {var} (governance.key_env) is not set")
        })?;
        return decode_key(&text).map_err(|e| format!("{var} (governance.key_env): {e}"));
    }
    if let (Some(text), None) = (shared, &config.key_file) {
        return decode_key(text).map_err(|e| format!("the cluster's shared key: {e}"));
    }
    let path = config
        .key_file
        .clone()
        .unwrap_or_else(|| default_dir.join("governance.key"));
    if !path.exists() {
        make_key(&path).map_err(|e| format!("{e:#}"))?;
        tracing::info!(file = %path.display(), "governance: made a new pseudonym key");
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {} (governance.key_file): {e}", path.display()))?;
    decode_key(&text).map_err(|e| format!("{} (governance.key_file): {e}", path.display()))
}

fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let t = text.trim();
    let bytes = hex::decode(t)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .ok_or("not hex nor base64")?;
    if bytes.len() < 32 {
        return Err(format!("{} bytes: at least 32 are needed", bytes.len()));
    }
    Ok(bytes)
}

fn make_key(path: &PathBuf) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = Governance::new_key()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {} (governance.key_file)", path.display()))?;
    writeln!(f, "{key}")?;
    Ok(())
}
