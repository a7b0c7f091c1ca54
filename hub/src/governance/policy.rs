//! The policy: which fields of which events are personal information of
//! which category (`[[classification]]`), and what each recipient may see
//! of each category (`[governance.grants.ADAPTER]`, `[governance.viewers]`).
//! Labels and grants are the hub's: an adapter's manifest may only ask
//! (`[clearance]`).

use crate::router::TypeGlob;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A kind of personal information. Those PIPL Art. 28 names sensitive
/// (identity, biometrics, whereabouts, minors) are marked so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// A person's name.
    Name,
    /// A phone number.
    Phone,
    /// Another way to reach a person: an e-mail address, a messaging id.
    Contact,
    /// An identity document's number (sensitive).
    Id,
    /// A vehicle's plate.
    Plate,
    /// A face: a camera snapshot, a photo (sensitive: biometrics).
    Face,
    /// Where a person is or was (sensitive: whereabouts).
    Location,
    /// A home or work address.
    Address,
    /// A date of birth.
    Birth,
    /// Free text that may hold any of the above.
    Text,
    /// That a person is a minor, or a minor's details (sensitive).
    Minor,
}

/// What a recipient sees of a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The value as it is.
    Clear,
    /// Masked by character (see `functions`).
    Mask,
    /// A keyed pseudonym, the recipient's own.
    Pseudonymize,
    /// A coarser value: a place's grid, a birth date's year.
    Generalize,
    /// Nothing.
    Drop,
}

impl Action {
    /// Its name in config and flow records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Clear => "clear",
            Action::Mask => "mask",
            Action::Pseudonymize => "pseudonymize",
            Action::Generalize => "generalize",
            Action::Drop => "drop",
        }
    }
}

/// A data grade (GB/T 43697-2024): 一般, 重要, 核心.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// 一般.
    #[default]
    General,
    /// 重要.
    Important,
    /// 核心: never leaves the hub.
    Core,
}

impl Grade {
    /// Its name in config and in the `datagrade` extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::General => "general",
            Grade::Important => "important",
            Grade::Core => "core",
        }
    }
}

impl Category {
    /// Every category, in the order of the README's table.
    pub const ALL: [Category; 11] = [
        Category::Name,
        Category::Phone,
        Category::Contact,
        Category::Id,
        Category::Plate,
        Category::Face,
        Category::Location,
        Category::Address,
        Category::Birth,
        Category::Text,
        Category::Minor,
    ];

    /// Its name in config: `pi.name`, `pi.phone`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Name => "pi.name",
            Category::Phone => "pi.phone",
            Category::Contact => "pi.contact",
            Category::Id => "pi.id",
            Category::Plate => "pi.plate",
            Category::Face => "pi.face",
            Category::Location => "pi.location",
            Category::Address => "pi.address",
            Category::Birth => "pi.birth",
            Category::Text => "pi.text",
            Category::Minor => "pi.minor",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Sensitive personal information (PIPL Art. 28).
    pub fn sensitive(self) -> bool {
        matches!(
            self,
            Category::Id | Category::Face | Category::Location | Category::Minor
        )
    }

    /// The grade a field of this category gives its event at least:
    /// sensitive information is important data.
    pub fn grade(self) -> Grade {
        if self.sensitive() {
            Grade::Important
        } else {
            Grade::General
        }
    }

    /// The actions that mean something for it.
    pub fn actions(self) -> &'static [Action] {
        use Action::*;
        match self {
            Category::Name
            | Category::Phone
            | Category::Contact
            | Category::Id
            | Category::Plate => &[Clear, Mask, Pseudonymize, Drop],
            Category::Face | Category::Minor => &[Clear, Drop],
            Category::Location => &[Clear, Generalize, Drop],
            Category::Address => &[Clear, Mask, Drop],
            Category::Birth => &[Clear, Mask, Generalize, Drop],
            Category::Text => &[Clear, Mask, Drop],
        }
    }
}

fn known_categories() -> String {
    Category::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `[[classification]]` rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassificationRule {
    /// The event types it labels (a glob: `gov.incident.*`).
    #[serde(rename = "type")]
    pub type_: String,
    /// JSON pointers into `data` → category.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Event attributes → category: `lat`, `lon`, `subject`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The grade of events it labels (the event's is the highest of this
    /// and its fields' categories').
    #[serde(default)]
    pub grade: Grade,
}

/// The attributes a rule may label.
pub const ATTRIBUTES: [&str; 3] = ["lat", "lon", "subject"];

/// `[governance]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// What each receiving adapter is granted: category → action.
    pub grants: BTreeMap<String, BTreeMap<String, String>>,
    /// What viewers, operators and admins see in the read APIs, the
    /// stream and the cockpit: category → action.
    pub viewers: BTreeMap<String, String>,
    /// The environment variable holding the master key of pseudonyms
    /// (hex or base64, at least 32 bytes).
    pub key_env: Option<String>,
    /// Or the file holding it; made (mode 0600) at first start when
    /// missing. Default: `governance.key` beside the journal.
    pub key_file: Option<std::path::PathBuf>,
    /// The keys' version: pseudonyms are `ps<version>:…`; a new version
    /// gives every value new pseudonyms.
    pub key_version: u32,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            grants: BTreeMap::new(),
            viewers: BTreeMap::new(),
            key_env: None,
            key_file: None,
            key_version: 1,
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The types it labels.
    pub glob: TypeGlob,
    /// JSON pointer → category.
    pub fields: Vec<(String, Category)>,
    /// Attribute → category.
    pub attributes: Vec<(String, Category)>,
    /// Its grade.
    pub grade: Grade,
}

/// What one recipient may see: an action per category; a category
/// without one is dropped (fail closed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant(pub BTreeMap<Category, Action>);

impl Grant {
    /// The action for `category`: `drop` when none was granted.
    pub fn action(&self, category: Category) -> Action {
        self.0.get(&category).copied().unwrap_or(Action::Drop)
    }

    /// Every category in the clear (an admin's reveal, a sender reading
    /// what it sent).
    pub fn clear() -> Grant {
        Grant(Category::ALL.iter().map(|c| (*c, Action::Clear)).collect())
    }

    /// For each category, the more revealing of the two: a department
    /// bound to two adapters sees what either may receive.
    pub fn widest(grants: &[&Grant]) -> Grant {
        let mut out = BTreeMap::new();
        for c in Category::ALL {
            if let Some(a) = grants.iter().map(|g| g.action(c)).min() {
                if a != Action::Drop {
                    out.insert(c, a);
                }
            }
        }
        Grant(out)
    }

    /// Whether any category needs the pseudonym key.
    pub fn pseudonymizes(&self) -> bool {
        self.0.values().any(|a| *a == Action::Pseudonymize)
    }
}

/// Compiles the rules; an error names the rule and field.
pub fn compile_rules(rules: &[ClassificationRule]) -> anyhow::Result<Vec<Rule>> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("classification[{i}] (type `{}`)", r.type_);
        let glob = TypeGlob::new(&r.type_).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let mut fields = Vec::new();
        for (pointer, category) in &r.fields {
            if !pointer.starts_with('/') || pointer.len() < 2 {
                anyhow::bail!(
                    "{at}: field `{pointer}` is not a JSON pointer into `data` (like `/reporter/phone`)"
                );
            }
            let c = Category::parse(category).ok_or_else(|| {
                anyhow::anyhow!(
                    "{at}: field `{pointer}`: `{category}` is not a category (one of {})",
                    known_categories()
                )
            })?;
            fields.push((pointer.clone(), c));
        }
        let mut attributes = Vec::new();
        for (name, category) in &r.attributes {
            if !ATTRIBUTES.contains(&name.as_str()) {
                anyhow::bail!(
                    "{at}: attribute `{name}` cannot be labelled (only {})",
                    ATTRIBUTES.join(", ")
                );
            }
            let c = Category::parse(category).ok_or_else(|| {
                anyhow::anyhow!(
                    "{at}: attribute `{name}`: `{category}` is not a category (one of {})",
                    known_categories()
                )
            })?;
            attributes.push((name.clone(), c));
        }
        out.push(Rule {
            glob,
            fields,
            attributes,
            grade: r.grade,
        });
    }
    Ok(out)
}

/// Parses one grant (`category = "action"` pairs); an error names the
/// category or the action and what would do.
pub fn parse_grant(pairs: &BTreeMap<String, String>) -> Result<Grant, String> {
    let mut out = BTreeMap::new();
    for (category, action) in pairs {
        let c = Category::parse(category).ok_or_else(|| {
            format!(
                "`{category}` is not a category (one of {})",
                known_categories()
            )
        })?;
        let a: Action = serde_json::from_value(serde_json::Value::String(action.clone()))
            .map_err(|_| {
                format!("{category}: `{action}` is not one of clear, mask, pseudonymize, generalize, drop")
            })?;
        if !c.actions().contains(&a) {
            return Err(format!(
                "{category}: `{action}` means nothing for it; one of {}",
                c.actions()
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.insert(c, a);
    }
    Ok(Grant(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &[(&str, &str)]) -> BTreeMap<String, String> {
        text.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grants_name_what_is_wrong_and_fail_closed() {
        let g = parse_grant(&pairs(&[("pi.phone", "mask"), ("pi.face", "drop")])).unwrap();
        assert_eq!(g.action(Category::Phone), Action::Mask);
        assert_eq!(g.action(Category::Id), Action::Drop, "no grant: dropped");
        for (bad, says) in [
            (("pi.voice", "clear"), "not a category"),
            (("pi.phone", "blur"), "not one of"),
            (("pi.face", "mask"), "means nothing"),
            (("pi.location", "pseudonymize"), "means nothing"),
        ] {
            let e = parse_grant(&pairs(&[bad])).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rules_name_the_field_at_fault() {
        let rule = |fields: &[(&str, &str)], attributes: &[(&str, &str)]| ClassificationRule {
            type_: "gov.incident.*".into(),
            fields: pairs(fields),
            attributes: pairs(attributes),
            grade: Grade::Important,
        };
        assert!(compile_rules(&[rule(
            &[("/reporter/phone", "pi.phone")],
            &[("lat", "pi.location")]
        )])
        .is_ok());
        for (r, says) in [
            (rule(&[("reporter.phone", "pi.phone")], &[]), "JSON pointer"),
            (rule(&[("/x", "pi.voice")], &[]), "pi.voice"),
            (rule(&[], &[("grid", "pi.location")]), "cannot be labelled"),
        ] {
            let e = compile_rules(&[r]).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("classification[0]"), "{e}");
        }
    }

    #[test]
    fn the_widest_of_two_grants_and_the_sensitive_kinds() {
        let a = parse_grant(&pairs(&[("pi.phone", "mask"), ("pi.name", "clear")])).unwrap();
        let b = parse_grant(&pairs(&[("pi.phone", "clear")])).unwrap();
        let w = Grant::widest(&[&a, &b]);
        assert_eq!(w.action(Category::Phone), Action::Clear);
        assert_eq!(w.action(Category::Name), Action::Clear);
        assert_eq!(w.action(Category::Id), Action::Drop);
        let sensitive: Vec<&str> = Category::ALL
            .iter()
            .filter(|c| c.sensitive())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(sensitive, ["pi.id", "pi.face", "pi.location", "pi.minor"]);
    }
}
