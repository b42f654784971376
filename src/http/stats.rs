//! `GET /api/v1/stats/history`: concurrent calls and registrations over the last hours,
//! from the per-minute samples every node writes (`node_samples`), for the dashboard's
//! charts. Pure aggregation here; the samples come from the store.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::AdminOnly;
use super::error::{ApiError, ApiQuery};
use super::AppState;
use crate::store::{now_unix, NodeSample};

/// At most a week back.
const MAX_HOURS: u32 = 168;
/// Rows read at most: a week of minutes for several nodes.
const MAX_SAMPLES: u32 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// How far back, hours (1..=168; default 24).
    hours: Option<u32>,
    /// Bucket width, seconds (60..=3600; default 300).
    step: Option<u32>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct History {
    pub from: i64,
    pub to: i64,
    pub step: i64,
    /// One per bucket that has samples, oldest first.
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    /// The bucket's start, Unix seconds.
    pub at: i64,
    /// The most calls up at once in the bucket: each node's highest sample, summed over
    /// the nodes.
    pub calls: i64,
    /// The most live registrations sampled in the bucket (every node counts the same
    /// shared bindings, so the highest, not a sum).
    pub registrations: i64,
}

pub async fn history(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let hours = q.hours.unwrap_or(24);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("hours must be 1 to {MAX_HOURS}"),
        ));
    }
    let step = q.step.unwrap_or(300);
    if !(60..=3600).contains(&step) {
        return Err(ApiError::bad_request(
            "bad_query",
            "step must be 60 to 3600 seconds",
        ));
    }
    let to = now_unix();
    let from = to - i64::from(hours) * 3600;
    let samples = state.inner.store.samples_since(from, MAX_SAMPLES).await?;
    Ok(Json(aggregate(&samples, from, to, i64::from(step))))
}

/// Buckets of `step` seconds aligned on multiples of `step`, from the one holding `from`.
pub fn aggregate(samples: &[NodeSample], from: i64, to: i64, step: i64) -> History {
    let first = from - from.rem_euclid(step);
    let mut points: Vec<Point> = Vec::new();
    // Per bucket: each node's highest call count, then their sum.
    let mut per_node: Vec<(&str, i64)> = Vec::new();
    let flush = |points: &mut Vec<Point>, per_node: &mut Vec<(&str, i64)>| {
        if let Some(p) = points.last_mut() {
            p.calls = per_node.iter().map(|(_, c)| c).sum();
        }
        per_node.clear();
    };
    // Samples come ordered by time, so buckets fill one after the other.
    for s in samples.iter().filter(|s| s.at >= from && s.at <= to) {
        let at = first + (s.at - first).div_euclid(step) * step;
        if points.last().map(|p| p.at) != Some(at) {
            flush(&mut points, &mut per_node);
            points.push(Point {
                at,
                calls: 0,
                registrations: 0,
            });
        }
        if let Some(p) = points.last_mut() {
            p.registrations = p.registrations.max(s.registrations);
        }
        match per_node.iter_mut().find(|(n, _)| *n == s.node_id) {
            Some((_, c)) => *c = (*c).max(s.calls),
            None => per_node.push((&s.node_id, s.calls)),
        }
    }
    flush(&mut points, &mut per_node);
    History {
        from,
        to,
        step,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(node: &str, at: i64, registrations: i64, calls: i64) -> NodeSample {
        NodeSample {
            node_id: node.into(),
            at,
            registrations,
            calls,
        }
    }

    #[test]
    fn buckets_sum_each_nodes_peak_and_keep_the_highest_registration_count() {
        let samples = [
            s("a", 1_000, 10, 2),
            s("b", 1_000, 10, 1),
            s("a", 1_060, 11, 5),
            s("b", 1_060, 11, 0),
            // Next bucket (step 300 from 900): only node a.
            s("a", 1_200, 12, 3),
            // Outside the range: ignored.
            s("a", 5_000, 99, 99),
        ];
        let h = aggregate(&samples, 950, 1_300, 300);
        assert_eq!(
            h.points,
            vec![
                Point {
                    at: 900,
                    calls: 6,
                    registrations: 11
                },
                Point {
                    at: 1_200,
                    calls: 3,
                    registrations: 12
                },
            ]
        );
        assert_eq!(aggregate(&[], 0, 100, 60).points, vec![]);
    }
}
