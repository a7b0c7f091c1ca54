//! The case model, without storage: how events move a case through its
//! lifecycle, when it is overdue, and when it escalates. Pure functions of
//! (case, event, time), so the rules are tested without a journal.

use crate::config::CasesConfig;
use govhub_sdk::{Event, Severity};
use serde::{Deserialize, Serialize};

/// How far a department (or a whole case) has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Reported, no department assigned yet.
    Reported,
    /// Sent to the department.
    Dispatched,
    /// The department took it on.
    Accepted,
    /// Someone is there.
    OnScene,
    /// The department reports it handled.
    Resolved,
    /// The case is over.
    Closed,
}

impl Stage {
    /// The stage an event type reports, for department stages.
    pub fn of_event_type(ty: &str) -> Option<Stage> {
        Some(match ty {
            "gov.incident.dispatched" => Stage::Dispatched,
            "gov.incident.accepted" => Stage::Accepted,
            "gov.incident.on-scene" => Stage::OnScene,
            "gov.incident.resolved" => Stage::Resolved,
            _ => return None,
        })
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Reported => "reported",
            Stage::Dispatched => "dispatched",
            Stage::Accepted => "accepted",
            Stage::OnScene => "on-scene",
            Stage::Resolved => "resolved",
            Stage::Closed => "closed",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Stage> {
        [
            Stage::Reported,
            Stage::Dispatched,
            Stage::Accepted,
            Stage::OnScene,
            Stage::Resolved,
            Stage::Closed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// What kind of case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Something a department must act on.
    Incident,
    /// A dispute, mediated at grid, community or street level.
    Dispute,
}

/// The three mediation rooms, lowest first.
pub const MEDIATION_LEVELS: [&str; 3] = ["grid", "community", "street"];

/// Names of the escalation levels: the case's own grid, its community
/// grid, the street command center.
pub const ESCALATION_LEVELS: [&str; 3] = ["sub-grid", "community", "street"];

/// One department's part in a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Department {
    /// The adapter (department system) name.
    pub name: String,
    /// How far it has come.
    pub stage: Stage,
    /// When it was dispatched (unix ms).
    pub dispatched_ms: Option<i64>,
    /// When it accepted.
    pub accepted_ms: Option<i64>,
    /// When it was on scene.
    pub on_scene_ms: Option<i64>,
    /// When it resolved.
    pub resolved_ms: Option<i64>,
}

/// One step of a case's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When (unix ms, hub clock).
    pub at_ms: i64,
    /// The event type, or a hub action (`escalated`, `closed`).
    pub what: String,
    /// The event's source.
    pub source: String,
    /// The department concerned, if any.
    pub department: Option<String>,
    /// The event id.
    pub event_id: String,
    /// A note (the reason of an escalation, a mediation outcome).
    pub note: Option<String>,
}

/// A mediation step of a dispute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mediation {
    /// `grid`, `community` or `street`.
    pub level: String,
    /// `mediated`, `referred` or `failed`.
    pub outcome: String,
    /// When (unix ms).
    pub at_ms: i64,
}

/// A case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The case id (the events' `caseid`).
    pub id: String,
    /// Incident or dispute.
    pub kind: Kind,
    /// The taxonomy category of the report.
    pub category: Option<String>,
    /// The report's severity.
    pub severity: Option<Severity>,
    /// The case's grid (finest known).
    pub grid: Option<String>,
    /// Where the whole case stands: the least advanced department, or
    /// `closed`.
    pub stage: Stage,
    /// When the first report arrived (unix ms, hub clock).
    pub opened_ms: i64,
    /// Acceptance due (unix ms).
    pub accept_due_ms: i64,
    /// Resolution due (unix ms).
    pub resolve_due_ms: i64,
    /// Escalation level: 0 the case's grid, 1 community, 2 street.
    pub level: u8,
    /// When the current escalation level runs out (levels 1 and up).
    pub level_due_ms: Option<i64>,
    /// When it closed.
    pub closed_ms: Option<i64>,
    /// Why it closed.
    pub close_reason: Option<String>,
    /// The departments that must act.
    pub departments: Vec<Department>,
    /// Mediation steps (disputes).
    pub mediation: Vec<Mediation>,
    /// The history.
    pub timeline: Vec<Entry>,
}

/// Something the tracker must do after a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Emit an event (re-enters the flow through the journal).
    Emit(Event),
}

/// Whether an event type starts a case.
pub fn opens_case(ty: &str) -> bool {
    ty == "gov.incident.reported"
}

/// `case-` and 16 hex digits of sha256(source, id): stable, so a report
/// that arrives twice (or is replayed) maps to the same case.
pub fn case_id_for(source: &str, id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{source}\n{id}"));
    format!("case-{}", &hex::encode(digest)[..16])
}

/// The ancestor of `grid` at `level` (0 itself, 1 its parent, 2 the root
/// street grid), clamped at the root.
pub fn grid_at_level(grid: &str, level: u8) -> String {
    let parts: Vec<&str> = grid.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return String::new();
    }
    let keep = parts.len().saturating_sub(level as usize).max(1);
    parts[..keep].join("/")
}

/// The (accept, resolve) deadlines in seconds for a category and severity:
/// the `[[cases.deadlines]]` entry with the longest matching category prefix
/// (then the highest severity threshold the case meets), else the defaults.
pub fn deadlines_for(
    config: &CasesConfig,
    category: Option<&str>,
    severity: Option<Severity>,
) -> (u64, u64) {
    let rank = |s: Severity| s.rank();
    let mut best: Option<(usize, u8, u64, u64)> = None;
    for d in &config.deadlines {
        let cat_len = match (&d.category, category) {
            (None, _) => 0,
            (Some(p), Some(c)) if c == p || c.starts_with(&format!("{p}.")) => p.len(),
            _ => continue,
        };
        let sev_rank = match (d.severity.as_deref().and_then(Severity::parse), severity) {
            (None, _) => 0,
            (Some(min), Some(s)) if rank(s) >= rank(min) => rank(min) + 1,
            _ => continue,
        };
        let better = best.is_none_or(|(l, r, _, _)| (cat_len, sev_rank) > (l, r));
        if better {
            best = Some((cat_len, sev_rank, d.accept_s, d.resolve_s));
        }
    }
    match best {
        Some((_, _, a, r)) => (a, r),
        None => (config.default_accept_s, config.default_resolve_s),
    }
}

impl Case {
    /// A new case from its first report.
    pub fn open(
        config: &CasesConfig,
        caseid: &str,
        report: &Event,
        departments: &[String],
        now_ms: i64,
    ) -> Case {
        let (accept_s, resolve_s) =
            deadlines_for(config, report.category.as_deref(), report.severity);
        let kind = if report
            .category
            .as_deref()
            .is_some_and(|c| c == "dispute" || c.starts_with("dispute."))
        {
            Kind::Dispute
        } else {
            Kind::Incident
        };
        let mut case = Case {
            id: caseid.to_string(),
            kind,
            category: report.category.clone(),
            severity: report.severity,
            grid: report.grid.clone(),
            stage: Stage::Reported,
            opened_ms: now_ms,
            accept_due_ms: now_ms + (accept_s as i64) * 1000,
            resolve_due_ms: now_ms + (resolve_s as i64) * 1000,
            level: 0,
            level_due_ms: None,
            closed_ms: None,
            close_reason: None,
            departments: Vec::new(),
            mediation: Vec::new(),
            timeline: Vec::new(),
        };
        case.timeline.push(Entry {
            at_ms: now_ms,
            what: report.type_.clone(),
            source: report.source.clone(),
            department: None,
            event_id: report.id.clone(),
            note: None,
        });
        for d in departments {
            case.department_at(d, Stage::Dispatched, now_ms);
        }
        case.restage();
        case
    }

    /// Departments that have not resolved yet.
    pub fn open_departments(&self) -> Vec<&str> {
        self.departments
            .iter()
            .filter(|d| d.stage < Stage::Resolved)
            .map(|d| d.name.as_str())
            .collect()
    }

    /// Whether the case is past a deadline at `now_ms`.
    pub fn overdue(&self, now_ms: i64) -> bool {
        if self.stage == Stage::Closed {
            return false;
        }
        now_ms >= self.resolve_due_ms
            || (self.stage < Stage::Accepted && now_ms >= self.accept_due_ms)
    }

    /// Whether it closed within its resolution deadline.
    pub fn on_time(&self) -> Option<bool> {
        self.closed_ms.map(|c| c <= self.resolve_due_ms)
    }

    /// When the first department accepted, if one did.
    pub fn first_accept_ms(&self) -> Option<i64> {
        self.departments.iter().filter_map(|d| d.accepted_ms).min()
    }

    fn department_at(&mut self, name: &str, stage: Stage, now_ms: i64) {
        let d = match self.departments.iter_mut().find(|d| d.name == name) {
            Some(d) => d,
            None => {
                self.departments.push(Department {
                    name: name.to_string(),
                    stage: Stage::Dispatched,
                    dispatched_ms: Some(now_ms),
                    accepted_ms: None,
                    on_scene_ms: None,
                    resolved_ms: None,
                });
                self.departments.last_mut().expect("just pushed")
            }
        };
        // Stages only move forward; a late or repeated report changes nothing.
        if stage <= d.stage && stage != Stage::Dispatched {
            return;
        }
        d.stage = d.stage.max(stage);
        let slot = match stage {
            Stage::Accepted => &mut d.accepted_ms,
            Stage::OnScene => &mut d.on_scene_ms,
            Stage::Resolved => &mut d.resolved_ms,
            _ => &mut d.dispatched_ms,
        };
        slot.get_or_insert(now_ms);
        // Resolving implies the stages before it.
        if stage >= Stage::Accepted {
            d.accepted_ms.get_or_insert(now_ms);
        }
    }

    fn restage(&mut self) {
        if self.stage == Stage::Closed {
            return;
        }
        self.stage = self
            .departments
            .iter()
            .map(|d| d.stage)
            .min()
            .unwrap_or(Stage::Reported);
    }

    fn close(&mut self, reason: String, now_ms: i64) -> Vec<Effect> {
        if self.stage == Stage::Closed {
            return Vec::new();
        }
        self.stage = Stage::Closed;
        self.closed_ms = Some(now_ms);
        self.close_reason = Some(reason.clone());
        self.level_due_ms = None;
        let mut e = self.hub_event("gov.case.closed", format!("closed-{}", self.id));
        e = e.with_json(&serde_json::json!({
            "reason": reason,
            "duration_s": (now_ms - self.opened_ms) / 1000,
            "on_time": self.on_time(),
            "level": self.level,
        }));
        vec![Effect::Emit(e)]
    }

    fn hub_event(&self, ty: &str, id: String) -> Event {
        let mut e = Event::new(ty)
            .with_id(id)
            .with_source("urn:govhub:cases")
            .with_case(&self.id);
        e.grid = self.grid.clone();
        e.category = self.category.clone();
        e.severity = self.severity;
        e
    }

    /// Applies one event of the case (other than the report that opened it).
    /// `department` is who it speaks for: its `department` extension, else
    /// the adapter it came from.
    pub fn apply(&mut self, event: &Event, department: Option<&str>, now_ms: i64) -> Vec<Effect> {
        let mut entry = Entry {
            at_ms: now_ms,
            what: event.type_.clone(),
            source: event.source.clone(),
            department: department.map(str::to_string),
            event_id: event.id.clone(),
            note: None,
        };
        let mut effects = Vec::new();
        if self.stage == Stage::Closed {
            self.timeline.push(entry);
            return effects;
        }
        match event.type_.as_str() {
            "gov.incident.verified" => {
                self.timeline.push(entry);
                let who = department.unwrap_or("the four platforms");
                effects = self.close(format!("verified by {who}"), now_ms);
                return effects;
            }
            "gov.mediation.concluded" => {
                let level = event.extension("level").unwrap_or("grid").to_string();
                let outcome = event.extension("outcome").unwrap_or("failed").to_string();
                entry.note = Some(format!("{outcome} at {level} level"));
                self.timeline.push(entry);
                self.mediation.push(Mediation {
                    level: level.clone(),
                    outcome: outcome.clone(),
                    at_ms: now_ms,
                });
                return match outcome.as_str() {
                    "mediated" => self.close(format!("mediated at {level} level"), now_ms),
                    "referred" => Vec::new(),
                    _ => self.close(format!("mediation failed at {level} level"), now_ms),
                };
            }
            ty => {
                if let (Some(stage), Some(d)) = (Stage::of_event_type(ty), department) {
                    self.department_at(d, stage, now_ms);
                }
                if ty == "gov.case.escalated" {
                    entry.note = event
                        .extension("escalatedto")
                        .map(|to| format!("escalated to the {to} level"));
                }
                self.timeline.push(entry);
            }
        }
        self.restage();
        if !self.departments.is_empty()
            && self.departments.iter().all(|d| d.stage >= Stage::Resolved)
        {
            effects = self.close("every department resolved it".into(), now_ms);
        }
        effects
    }

    /// Checks the deadlines at `now_ms`: an overdue case escalates one
    /// level up the grid (at most to the street), each level with its own
    /// deadline. Returns the escalation event to emit.
    pub fn check(&mut self, config: &CasesConfig, now_ms: i64) -> Vec<Effect> {
        if self.stage == Stage::Closed || (self.level as usize) >= ESCALATION_LEVELS.len() - 1 {
            return Vec::new();
        }
        let (due, why) = match self.level_due_ms {
            Some(due) => (
                due,
                format!(
                    "not closed within {} s at {} level",
                    config
                        .escalation_s
                        .get(self.level as usize - 1)
                        .copied()
                        .unwrap_or(0),
                    ESCALATION_LEVELS[self.level as usize]
                ),
            ),
            None if self.stage < Stage::Accepted => (
                self.accept_due_ms,
                format!(
                    "not accepted within {} s (still open: {})",
                    (self.accept_due_ms - self.opened_ms) / 1000,
                    self.open_departments().join(", ")
                ),
            ),
            None => (
                self.resolve_due_ms,
                format!(
                    "not resolved within {} s (still open: {})",
                    (self.resolve_due_ms - self.opened_ms) / 1000,
                    self.open_departments().join(", ")
                ),
            ),
        };
        if now_ms < due {
            return Vec::new();
        }
        self.level += 1;
        let level_s = config
            .escalation_s
            .get(self.level as usize - 1)
            .copied()
            .unwrap_or(3600);
        self.level_due_ms = Some(now_ms + (level_s as i64) * 1000);
        let target_grid = self.grid.as_deref().map(|g| grid_at_level(g, self.level));
        let mut e = self.hub_event(
            "gov.case.escalated",
            format!("escalated-{}-{}", self.id, self.level),
        );
        if let Some(g) = target_grid {
            if !g.is_empty() {
                e.grid = Some(g);
            }
        }
        let e = e
            .with_extension("level", self.level.to_string())
            .with_extension("escalatedto", ESCALATION_LEVELS[self.level as usize])
            .with_json(&serde_json::json!({
                "reason": why,
                "level": self.level,
                "to": ESCALATION_LEVELS[self.level as usize],
                "open_departments": self.open_departments(),
            }));
        vec![Effect::Emit(e)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CasesConfig, DeadlineRule};

    fn config() -> CasesConfig {
        CasesConfig {
            default_accept_s: 600,
            default_resolve_s: 3600,
            escalation_s: vec![900, 1800],
            deadlines: vec![
                DeadlineRule {
                    category: Some("safety".into()),
                    severity: None,
                    accept_s: 300,
                    resolve_s: 1800,
                },
                DeadlineRule {
                    category: Some("safety.water".into()),
                    severity: Some("critical".into()),
                    accept_s: 60,
                    resolve_s: 900,
                },
            ],
            ..CasesConfig::default()
        }
    }

    fn report(category: &str, severity: Severity) -> Event {
        Event::new("gov.incident.reported")
            .with_id("r1")
            .with_source("urn:test")
            .with_category(category)
            .with_severity(severity)
            .with_grid("yingfeng/yingyi/2")
    }

    fn status(ty: &str) -> Event {
        Event::new(ty)
            .with_id(format!("{ty}-x"))
            .with_source("urn:dept")
    }

    #[test]
    fn deadlines_pick_the_most_specific_rule() {
        let c = config();
        assert_eq!(
            deadlines_for(&c, Some("safety.water"), Some(Severity::Critical)),
            (60, 900)
        );
        assert_eq!(
            deadlines_for(&c, Some("safety.water"), Some(Severity::Major)),
            (300, 1800)
        );
        assert_eq!(deadlines_for(&c, Some("safetyx"), None), (600, 3600));
        assert_eq!(
            deadlines_for(&c, Some("traffic.congestion"), None),
            (600, 3600)
        );
    }

    #[test]
    fn joint_dispatch_closes_only_when_every_department_resolved() {
        let c = config();
        let depts = vec![
            "traffic".to_string(),
            "police".to_string(),
            "village".to_string(),
        ];
        let mut case = Case::open(
            &c,
            "case-1",
            &report("traffic.congestion", Severity::Minor),
            &depts,
            0,
        );
        assert_eq!(case.stage, Stage::Dispatched);
        assert!(case
            .apply(&status("gov.incident.accepted"), Some("traffic"), 10_000)
            .is_empty());
        assert_eq!(
            case.stage,
            Stage::Dispatched,
            "the least advanced department sets the stage"
        );
        for d in ["police", "village"] {
            case.apply(&status("gov.incident.accepted"), Some(d), 20_000);
        }
        assert_eq!(case.stage, Stage::Accepted);
        case.apply(&status("gov.incident.resolved"), Some("traffic"), 30_000);
        case.apply(&status("gov.incident.resolved"), Some("police"), 40_000);
        assert_eq!(case.open_departments(), ["village"]);
        let effects = case.apply(&status("gov.incident.resolved"), Some("village"), 50_000);
        assert_eq!(case.stage, Stage::Closed);
        assert_eq!(case.closed_ms, Some(50_000));
        match &effects[..] {
            [Effect::Emit(e)] => {
                assert_eq!(e.type_, "gov.case.closed");
                assert_eq!(e.caseid.as_deref(), Some("case-1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(case.on_time(), Some(true));
        // Stages never go back; a closed case only records.
        case.apply(&status("gov.incident.accepted"), Some("village"), 60_000);
        assert_eq!(case.stage, Stage::Closed);
    }

    #[test]
    fn verification_closes_a_case_with_open_departments() {
        let c = config();
        let mut case = Case::open(
            &c,
            "c",
            &report("vendor.street", Severity::Minor),
            &["police".into()],
            0,
        );
        let e = case.apply(
            &status("gov.incident.verified"),
            Some("four-platforms"),
            5_000,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(
            case.close_reason.as_deref(),
            Some("verified by four-platforms")
        );
    }

    #[test]
    fn an_unanswered_case_escalates_up_the_grid_level_by_level() {
        let c = config();
        let mut case = Case::open(
            &c,
            "c",
            &report("safety.water", Severity::Critical),
            &["police".into()],
            0,
        );
        assert!(case.check(&c, 59_999).is_empty());
        assert!(!case.overdue(59_999));
        let e = case.check(&c, 60_000);
        let Effect::Emit(esc) = &e[0];
        assert_eq!(esc.type_, "gov.case.escalated");
        assert_eq!(esc.id, "escalated-c-1");
        assert_eq!(esc.grid.as_deref(), Some("yingfeng/yingyi"));
        assert_eq!(esc.extension("escalatedto"), Some("community"));
        assert!(case.overdue(60_000));
        assert_eq!((case.level, case.level_due_ms), (1, Some(60_000 + 900_000)));
        assert!(case.check(&c, 959_999).is_empty());
        let Effect::Emit(esc) = &case.check(&c, 960_000)[0];
        assert_eq!(esc.grid.as_deref(), Some("yingfeng"));
        assert_eq!(esc.extension("level"), Some("2"));
        assert!(
            case.check(&c, 10_000_000).is_empty(),
            "the street is the top"
        );
    }

    #[test]
    fn a_minor_case_resolved_in_time_never_leaves_its_grid() {
        let c = config();
        let mut case = Case::open(
            &c,
            "c",
            &report("vendor.street", Severity::Minor),
            &["grid-app".into()],
            0,
        );
        case.apply(&status("gov.incident.accepted"), Some("grid-app"), 100_000);
        case.apply(&status("gov.incident.resolved"), Some("grid-app"), 200_000);
        assert!(case.check(&c, 10_000_000).is_empty());
        assert_eq!(case.level, 0);
    }

    #[test]
    fn mediation_referred_then_mediated() {
        let c = config();
        let mut case = Case::open(
            &c,
            "c",
            &report("dispute.property", Severity::Minor),
            &[],
            0,
        );
        assert_eq!(case.kind, Kind::Dispute);
        let concluded = |level: &str, outcome: &str| {
            Event::new("gov.mediation.concluded")
                .with_id(format!("m-{level}"))
                .with_source("urn:mediation")
                .with_extension("level", level)
                .with_extension("outcome", outcome)
        };
        assert!(case
            .apply(&concluded("grid", "referred"), None, 1_000)
            .is_empty());
        assert_eq!(
            case.apply(&concluded("community", "mediated"), None, 2_000)
                .len(),
            1
        );
        assert_eq!(
            case.close_reason.as_deref(),
            Some("mediated at community level")
        );
        assert_eq!(case.mediation.len(), 2);
    }

    #[test]
    fn grids_and_case_ids() {
        assert_eq!(grid_at_level("yingfeng/yingyi/2", 0), "yingfeng/yingyi/2");
        assert_eq!(grid_at_level("yingfeng/yingyi/2", 1), "yingfeng/yingyi");
        assert_eq!(grid_at_level("yingfeng/yingyi/2", 2), "yingfeng");
        assert_eq!(grid_at_level("yingfeng", 2), "yingfeng");
        assert_eq!(case_id_for("s", "1"), case_id_for("s", "1"));
        assert_ne!(case_id_for("s", "1"), case_id_for("s", "2"));
    }
}
