//! Which items a subscriber wants: the query parameters of `/v1/stream`.
//!
//! A filter narrows the items that carry its attribute and lets the others
//! through: `grid=yingfeng/yingyi` keeps the events, cases and dead letters
//! of that community (and of its sub-grids) and every adapter and clock
//! item, which belong to no grid. `kind=` picks kinds outright.

use crate::journal::{FeedItem, FeedKind};
use crate::router::{segment_prefix, TypeGlob};

/// A subscriber's filter.
#[derive(Default)]
pub struct Filter {
    types: Option<TypeGlob>,
    grid: Option<String>,
    category: Option<String>,
    severity: Option<u8>,
    caseid: Option<String>,
    kinds: Option<Vec<FeedKind>>,
}

/// The parameters a filter reads, for the error that names an unknown one.
pub const PARAMETERS: &str = "after, type, grid, category, severity, caseid, kind";

impl Filter {
    /// Reads the query pairs (`after` is the caller's); an unknown
    /// parameter or a bad value is an error naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<Filter, (String, String)> {
        let mut f = Filter::default();
        for (key, value) in pairs {
            let bad = |why: String| (key.clone(), why);
            match key.as_str() {
                "after" => {}
                "type" => f.types = Some(TypeGlob::new(value).map_err(bad)?),
                "grid" => f.grid = Some(value.clone()),
                "category" => f.category = Some(value.clone()),
                "caseid" => f.caseid = Some(value.clone()),
                "severity" => {
                    let s = govhub_sdk::Severity::parse(value).ok_or_else(|| {
                        bad(format!(
                            "`{value}` is not one of info, minor, major, critical"
                        ))
                    })?;
                    f.severity = Some(s.rank());
                }
                "kind" => {
                    let kinds = value
                        .split(',')
                        .map(|k| {
                            FeedKind::parse(k.trim()).ok_or_else(|| {
                                bad(format!(
                                    "`{k}` is not one of event, case, adapter, dead-letter, clock"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    f.kinds = Some(kinds);
                }
                _ => {
                    return Err((
                        key.clone(),
                        format!("unknown parameter (known: {PARAMETERS})"),
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Whether `item` passes.
    pub fn matches(&self, item: &FeedItem) -> bool {
        let k = &item.keys;
        // An event, case or dead letter without the attribute is not in
        // the grid, category or case asked for; other kinds pass.
        let attribute = |want: &Option<String>,
                         have: &Option<String>,
                         check: fn(&str, &str) -> bool| match (want, have) {
            (None, _) => true,
            (Some(w), Some(h)) => check(h, w),
            (Some(_), None) => !has_place(item.kind),
        };
        self.kinds.as_ref().is_none_or(|ks| ks.contains(&item.kind))
            && match (&self.types, &k.type_) {
                (Some(g), Some(t)) => g.matches(t),
                _ => true,
            }
            && match (self.severity, k.severity) {
                (Some(min), Some(s)) => s >= min,
                _ => true,
            }
            && attribute(&self.grid, &k.grid, |h, w| segment_prefix(h, w, '/'))
            && attribute(&self.category, &k.category, |h, w| {
                segment_prefix(h, w, '.')
            })
            && attribute(&self.caseid, &k.caseid, |h, w| h == w)
    }
}

/// Kinds that belong to a place and a case (the others pass those filters).
fn has_place(kind: FeedKind) -> bool {
    matches!(
        kind,
        FeedKind::Event | FeedKind::Case | FeedKind::DeadLetter
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FeedKeys;

    fn item(kind: FeedKind, type_: &str, grid: Option<&str>, severity: Option<u8>) -> FeedItem {
        FeedItem {
            cursor: 1,
            at_ms: 0,
            kind,
            keys: FeedKeys {
                type_: (!type_.is_empty()).then(|| type_.to_string()),
                grid: grid.map(str::to_string),
                category: Some("safety.water".into()),
                severity,
                caseid: Some("c1".into()),
            },
            data: "{}".into(),
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_narrow_what_carries_their_attribute() {
        let f = Filter::parse(&pairs(&[
            ("grid", "yingfeng/yingyi"),
            ("severity", "major"),
        ]))
        .unwrap();
        let river = item(
            FeedKind::Event,
            "gov.incident.reported",
            Some("yingfeng/yingyi/2"),
            Some(3),
        );
        assert!(f.matches(&river));
        assert!(!f.matches(&item(
            FeedKind::Event,
            "gov.x",
            Some("yingfeng/yinger/1"),
            Some(3)
        )));
        assert!(!f.matches(&item(
            FeedKind::Event,
            "gov.x",
            Some("yingfeng/yingyi/2"),
            Some(1)
        )));
        assert!(
            !f.matches(&item(FeedKind::Event, "gov.x", None, Some(3))),
            "no grid: not in one"
        );
        assert!(
            f.matches(&item(FeedKind::Adapter, "", None, None)),
            "adapters pass"
        );
        let f = Filter::parse(&pairs(&[
            ("type", "gov.incident.*"),
            ("kind", "event,case"),
        ]))
        .unwrap();
        assert!(f.matches(&river));
        assert!(!f.matches(&item(FeedKind::Event, "gov.alert.issued", None, None)));
        assert!(f.matches(&item(FeedKind::Case, "", None, None)));
        assert!(!f.matches(&item(FeedKind::Adapter, "", None, None)));
        let f = Filter::parse(&pairs(&[("category", "safety"), ("caseid", "c1")])).unwrap();
        assert!(f.matches(&river));
    }

    #[test]
    fn bad_parameters_are_named() {
        let (k, why) = Filter::parse(&pairs(&[("severity", "urgent")]))
            .err()
            .unwrap();
        assert_eq!(k, "severity");
        assert!(why.contains("critical"), "{why}");
        let (k, why) = Filter::parse(&pairs(&[("gird", "x")])).err().unwrap();
        assert_eq!(k, "gird");
        assert!(why.contains("unknown parameter"), "{why}");
        let (k, _) = Filter::parse(&pairs(&[("kind", "event,cases")]))
            .err()
            .unwrap();
        assert_eq!(k, "kind");
    }
}
