//! `GET /v1/stats`: how the loop performs, per grid and per category.
//!
//! - time to accept: from the report to the first department's acceptance;
//! - time to resolve: from the report to the case closing;
//! - on-time rate: closed cases closed by their resolution deadline, over
//!   all closed cases;
//! - in-grid rate ("small matters stay in the grid"): closed cases that
//!   never escalated past their own grid, over all closed cases;
//! - mediation success per level: `mediated` over every concluded
//!   mediation at that level.
//!
//! Percentiles are nearest-rank over whole seconds.

use super::model::{Case, Stage, MEDIATION_LEVELS};
use serde::Serialize;
use std::collections::BTreeMap;

/// p50 and p90 of a set of durations, seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    /// How many.
    pub n: usize,
    /// Median.
    pub p50_s: Option<i64>,
    /// 90th percentile.
    pub p90_s: Option<i64>,
}

/// The figures of one group of cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Cases not closed.
    pub open: usize,
    /// Cases closed.
    pub closed: usize,
    /// Report to first acceptance.
    pub time_to_accept: Spread,
    /// Report to closing.
    pub time_to_resolve: Spread,
    /// Closed on time over closed; `None` when nothing closed.
    pub on_time_rate: Option<f64>,
    /// Closed without escalating past the grid, over closed.
    pub in_grid_rate: Option<f64>,
}

/// Mediation at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediationFigures {
    /// Mediations concluded at this level.
    pub concluded: usize,
    /// Of which mediated.
    pub mediated: usize,
    /// mediated / concluded.
    pub success_rate: Option<f64>,
}

/// Everything `GET /v1/stats` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// All cases.
    pub total: Figures,
    /// Per grid.
    pub by_grid: BTreeMap<String, Figures>,
    /// Per category.
    pub by_category: BTreeMap<String, Figures>,
    /// Mediation per level: grid, community, street.
    pub mediation: BTreeMap<String, MediationFigures>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn spread(mut values: Vec<i64>) -> Spread {
    values.sort_unstable();
    Spread {
        n: values.len(),
        p50_s: percentile(&values, 0.5),
        p90_s: percentile(&values, 0.9),
    }
}

fn figures<'a>(cases: impl Iterator<Item = &'a Case> + Clone) -> Figures {
    let closed: Vec<&Case> = cases.clone().filter(|c| c.stage == Stage::Closed).collect();
    let on_time = closed.iter().filter(|c| c.on_time() == Some(true)).count();
    let in_grid = closed.iter().filter(|c| c.level == 0).count();
    let rate = |n: usize| (!closed.is_empty()).then(|| n as f64 / closed.len() as f64);
    Figures {
        open: cases.clone().filter(|c| c.stage != Stage::Closed).count(),
        closed: closed.len(),
        time_to_accept: spread(
            cases
                .clone()
                .filter_map(|c| c.first_accept_ms().map(|a| (a - c.opened_ms) / 1000))
                .collect(),
        ),
        time_to_resolve: spread(
            closed
                .iter()
                .filter_map(|c| c.closed_ms.map(|t| (t - c.opened_ms) / 1000))
                .collect(),
        ),
        on_time_rate: rate(on_time),
        in_grid_rate: rate(in_grid),
    }
}

/// The figures of `cases`.
pub fn compute(cases: &[Case]) -> Stats {
    let mut grids: BTreeMap<String, Vec<&Case>> = BTreeMap::new();
    let mut categories: BTreeMap<String, Vec<&Case>> = BTreeMap::new();
    for c in cases {
        grids
            .entry(c.grid.clone().unwrap_or_else(|| "(none)".into()))
            .or_default()
            .push(c);
        categories
            .entry(c.category.clone().unwrap_or_else(|| "(none)".into()))
            .or_default()
            .push(c);
    }
    let mut mediation = BTreeMap::new();
    for level in MEDIATION_LEVELS {
        let steps: Vec<&str> = cases
            .iter()
            .flat_map(|c| c.mediation.iter())
            .filter(|m| m.level == level)
            .map(|m| m.outcome.as_str())
            .collect();
        let mediated = steps.iter().filter(|o| **o == "mediated").count();
        mediation.insert(
            level.to_string(),
            MediationFigures {
                concluded: steps.len(),
                mediated,
                success_rate: (!steps.is_empty()).then(|| mediated as f64 / steps.len() as f64),
            },
        );
    }
    Stats {
        total: figures(cases.iter()),
        by_grid: grids
            .into_iter()
            .map(|(k, v)| (k, figures(v.into_iter())))
            .collect(),
        by_category: categories
            .into_iter()
            .map(|(k, v)| (k, figures(v.into_iter())))
            .collect(),
        mediation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), Some(5));
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), Some(9));
        assert_eq!(percentile(&[7], 0.9), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
