//! The night's sums: a lane per job (runs, statuses, counts, run time) and
//! the figures read from the runs' details (KERIS per partner and job,
//! LRS-01-001's aggregation, DC-01-001's learning days).

use std::collections::BTreeMap;

use super::{count, objects, DayFigures, KerisFigure, Lane, LRS_EXCEPTIONS};
use crate::jobs;
use crate::runtime::history::{RunRow, RunStatus};
use crate::runtime::registry::Registry;

/// One lane per job: the `keris-nightly` chain's steps first (shown even
/// without a run), then the registry's jobs that ran, then ids this release
/// does not know.
pub(super) fn lanes(registry: &Registry, runs: &[RunRow]) -> Vec<Lane> {
    lane_order(registry, runs)
        .into_iter()
        .filter_map(|(job_id, name, chain_step)| {
            let mine: Vec<usize> = (0..runs.len())
                .filter(|&i| runs[i].job_id == job_id)
                .collect();
            if mine.is_empty() && !chain_step {
                return None;
            }
            Some(Lane::sum(job_id, name, chain_step, mine, runs))
        })
        .collect()
}

/// (job id, name, a step of a chain) in the order the page shows them.
fn lane_order(registry: &Registry, runs: &[RunRow]) -> Vec<(String, String, bool)> {
    let mut order: Vec<(String, String, bool)> = Vec::new();
    for chain in registry.chains() {
        for step in chain.steps {
            if !order.iter().any(|(id, _, _)| id == step.id) {
                order.push((step.id.to_string(), step.name_en.to_string(), true));
            }
        }
    }
    for def in registry.iter() {
        if !order.iter().any(|(id, _, _)| id == def.id) {
            order.push((def.id.to_string(), def.name_en.to_string(), false));
        }
    }
    let mut strangers: Vec<String> = runs
        .iter()
        .map(|r| r.job_id.clone())
        .filter(|id| !order.iter().any(|(known, _, _)| known == id))
        .collect();
    strangers.sort();
    strangers.dedup();
    order.extend(
        strangers
            .into_iter()
            .map(|id| (id, "(not in this release's registry)".to_string(), false)),
    );
    order
}

impl Lane {
    /// The lane of `job_id` over its runs (indexes into `all`): dry runs
    /// count in the statuses only; run time counts the runs that did work.
    fn sum(
        job_id: String,
        name: String,
        chain_step: bool,
        mine: Vec<usize>,
        all: &[RunRow],
    ) -> Self {
        let mut lane = Lane {
            job_id,
            name,
            chain_step,
            runs: mine,
            by_status: BTreeMap::new(),
            read: 0,
            written: 0,
            skipped: 0,
            failed: 0,
            seconds: 0.0,
            timed_read: 0,
            timed_written: 0,
        };
        for &i in &lane.runs {
            let r = &all[i];
            *lane.by_status.entry(r.status).or_default() += 1;
            if r.dry_run {
                continue;
            }
            lane.read += r.read_cnt;
            lane.written += r.write_cnt;
            lane.skipped += r.skip_cnt;
            lane.failed += r.fail_cnt;
            if let (Some(end), false) = (r.ended_at, r.status == RunStatus::Skipped) {
                lane.seconds += (end - r.started_at).num_milliseconds().max(0) as f64 / 1000.0;
                lane.timed_read += r.read_cnt;
                lane.timed_written += r.write_cnt;
            }
        }
        lane
    }
}

/// The figures the runs' details hold, summed over the night's runs that
/// were not dry runs.
#[derive(Default)]
pub(super) struct Figures {
    pub keris: BTreeMap<(String, &'static str), KerisFigure>,
    /// LRS-01-001 per partner: (ready, invalid).
    pub aggregated: BTreeMap<String, (u64, u64)>,
    pub aggregation_exceptions: BTreeMap<&'static str, u64>,
    pub sent_per_day: BTreeMap<String, DayFigures>,
}

impl Figures {
    pub(super) fn of(registry: &Registry, runs: &[RunRow]) -> Self {
        let mut figures = Self::default();
        for run in runs.iter().filter(|r| !r.dry_run) {
            if run.job_id == jobs::dc::send_statements::ID {
                figures.add_days(run);
            }
            if run.job_id == jobs::lrs::aggregate_statements::ID {
                figures.add_aggregation(run);
            } else {
                figures.add_keris(registry, run);
            }
        }
        figures
    }

    /// DC-01-001's `days`: sent, failed and withheld per learning day.
    fn add_days(&mut self, run: &RunRow) {
        for (day, figures) in objects(&run.details["days"]) {
            let entry = self.sent_per_day.entry(day.clone()).or_default();
            entry.sent += count(figures, "sent");
            entry.failed += count(figures, "failed");
            entry.withheld += count(figures, "withheld");
        }
    }

    /// LRS-01-001's statements per partner and what it did not aggregate as
    /// usual ([`LRS_EXCEPTIONS`]).
    fn add_aggregation(&mut self, run: &RunRow) {
        for (partner, figures) in objects(&run.details["per_partner"]) {
            let entry = self.aggregated.entry(partner.clone()).or_default();
            entry.0 += count(figures, "ready");
            entry.1 += count(figures, "invalid");
        }
        for (label, key, field) in LRS_EXCEPTIONS {
            let n = match field {
                Some(field) => count(&run.details[*key], field),
                None => count(&run.details, key),
            };
            *self.aggregation_exceptions.entry(label).or_default() += n;
        }
    }

    /// A KERIS job's per-partner figures, under the keys its
    /// [`crate::runtime::registry::JobDef::keris_figures`] names.
    fn add_keris(&mut self, registry: &Registry, run: &RunRow) {
        let Some((job_id, shape)) = registry
            .find(&run.job_id)
            .and_then(|def| Some((def.id, def.keris_figures?)))
        else {
            return;
        };
        for (partner, figures) in objects(&run.details["partners"]) {
            // Runs recorded before a job kept these figures say nothing.
            if figures.get(shape.accepted[0]).is_none() {
                continue;
            }
            let figure = self
                .keris
                .entry((partner.clone(), job_id))
                .or_insert_with(|| KerisFigure {
                    partner: partner.clone(),
                    job_id,
                    unit: shape.unit,
                    accepted: 0,
                    failed: 0,
                    deferred: 0,
                    codes: BTreeMap::new(),
                });
            figure.accepted += shape
                .accepted
                .iter()
                .map(|k| count(figures, k))
                .sum::<u64>();
            figure.failed += count(figures, "failed");
            figure.deferred += count(figures, "deferred");
            for (code, n) in objects(&figures["errors_by_code"]) {
                *figure.codes.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
}
