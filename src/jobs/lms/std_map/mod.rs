//! The rebuild LMS-01-003 (`tb_lms_kc_std_map`) and LMS-01-010
//! (`tb_lms_course_std_sys`) share: a map from a key (a knowledge component,
//! a course) and a standard-system id to the number of distinct active items
//! that carry both, derived from the LMS's copy of the LCMS content.
//!
//! Active: the item and its content have `use_yn = 'Y'`. A code of an item's
//! `std_sys_ids` that `tb_lms_std_sys` does not know is not written: each
//! such (item, code) pair is counted as skipped and the first
//! [`MAX_REPORTED`] go in the run's details, so an LCMS data error shows in
//! `history`. NULL elements of `std_sys_ids` / `kc_ids` (and blank KC ids)
//! are ignored, the item's other codes still count, and the items are
//! counted and listed the same way; so are items with no code at all.
//!
//! One statement rebuilds a map (data-modifying CTEs): it deletes the pairs
//! no longer present, inserts the new ones and updates `item_cnt` (and
//! `upd_dt`) only where the count changed, so unchanged pairs keep their
//! `upd_dt`. It runs in one REPEATABLE READ transaction with the data-error
//! report, so both describe the same snapshot, and readers see the old map
//! or the new one, never half of either. `--dry-run` does the same and
//! rolls back.
//!
//! A rebuild that would delete more than the job's `max_delete_share`
//! (10%) of the map's pairs with items (`item_cnt > 0`), or all of them, is
//! refused (rolled back, exit 1,
//! the figures and the key in the error) unless `--allow-shrink`: the copy
//! it reads may have been wiped by something other than LCMS-01-001, whose
//! own guard stops an empty source.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::jobs::shared::shrink::{self, Shrink};
use crate::runtime::registry::{settings_of, DefaultDate, JobDef, Schedule, System};
use crate::runtime::{Job, JobContext};

pub mod course_std_sys;
pub mod kc_std_map;

/// At most this many offending (item, code) pairs or item ids per list in a
/// run's details; the counts are always complete.
pub const MAX_REPORTED: i64 = 20;

/// One of the two maps (each job's file declares its own).
#[derive(Debug, Clone, Copy)]
pub struct StdMap {
    /// The table rebuilt.
    pub table: &'static str,
    /// Its first key column (`kc_id`, `course_id`).
    pub key_column: &'static str,
    /// Whether the key comes from the items' `kc_ids` (else from the
    /// content's `course_id`): KC problems are reported only then.
    pub keyed_by_kc: bool,
}

/// The active items of the LMS copy, with their content's course.
const ACTIVE_ITEMS: &str = "
    active AS (
        SELECT i.item_id, c.course_id, i.kc_ids, i.std_sys_ids
          FROM tb_lms_item i
          JOIN tb_lms_content c ON c.content_id = i.content_id
         WHERE i.use_yn = 'Y' AND c.use_yn = 'Y'
    )";

/// A map job's own section (`[jobs.lms_01_003]`, `[jobs.lms_01_010]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdMapSettings {
    /// A rebuild that would delete more than this share (0–1) of the map's
    /// pairs, or all of them, is refused unless `--allow-shrink`.
    pub max_delete_share: f64,
}

impl Default for StdMapSettings {
    fn default() -> Self {
        Self {
            max_delete_share: shrink::DEFAULT_MAX_SHARE,
        }
    }
}

/// The settings check of a map job's section.
pub fn validate_settings(section: config::Value) -> Result<(), String> {
    let settings: StdMapSettings = section.try_deserialize().map_err(|e| e.to_string())?;
    shrink::check_share("max_delete_share", settings.max_delete_share)
}

/// The registry entry of a map job: LMS, daily, today's date (the map is
/// rebuilt as of now), a lock of its own, [`StdMapSettings`] and
/// `--allow-shrink`; `job` runs [`run`] over its map.
pub const fn job_def(
    id: &'static str,
    job: &'static dyn Job,
    name_ko: &'static str,
    name_en: &'static str,
    about: &'static str,
    cron: &'static str,
) -> JobDef {
    JobDef {
        id,
        system: System::Lms,
        name_ko,
        name_en,
        about,
        schedule: Schedule::Cron(cron),
        default_date: DefaultDate::Today,
        settings: Some(settings_of::<StdMapSettings>().checked_by(validate_settings)),
        args: shrink::allow_shrink_arg,
        job: Some(job),
        ..JobDef::DEFAULTS
    }
}

/// What a rebuild changed (or, for a dry run, would change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MapChanges {
    /// Pairs of the rebuilt map.
    pub pairs: i64,
    pub inserted: i64,
    /// Pairs whose `item_cnt` changed.
    pub updated: i64,
    /// Pairs no longer present.
    pub deleted: i64,
    /// Pairs with items (`item_cnt > 0`) before the rebuild.
    #[serde(skip)]
    pub counted_before: i64,
    /// Of the deleted pairs, those that had items.
    #[serde(skip)]
    pub deleted_counted: i64,
}

impl MapChanges {
    /// Pairs kept as they were (`upd_dt` untouched).
    pub fn unchanged(&self) -> i64 {
        self.pairs - self.inserted - self.updated
    }

    /// How much of the map the rebuild deletes: pairs that counted items
    /// (a pair of `item_cnt` 0, as another writer of the map may leave,
    /// carries nothing to lose).
    pub fn shrink(&self, table: &'static str) -> Shrink {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Shrink {
            table,
            rows: "pairs with items",
            before: count(self.counted_before),
            removed: count(self.deleted_counted),
            after: count(self.pairs),
        }
    }
}

/// A count and the first offenders.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Offenders {
    pub count: i64,
    pub first: serde_json::Value,
}

/// Data errors among the active items.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataIssues {
    /// Active items read.
    #[serde(skip)]
    pub active_items: i64,
    /// (item, code) pairs whose code `tb_lms_std_sys` does not know.
    pub unknown_std_sys_ids: Offenders,
    /// Items whose `std_sys_ids` holds NULL elements.
    pub items_with_null_std_sys_ids: Offenders,
    /// Items with no (non-NULL) standard-system id: in no map.
    pub items_without_std_sys_ids: Offenders,
    /// Items with no (non-NULL, non-blank) KC id: not in the KC map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_without_kc_ids: Option<Offenders>,
    /// Items whose `kc_ids` holds NULL or blank elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_with_null_kc_ids: Option<Offenders>,
}

/// Rebuilds `map` for a run: report, rebuild, commit (roll back for
/// `--dry-run`), counts and details.
pub async fn run(ctx: &JobContext, map: StdMap) -> anyhow::Result<()> {
    let mut tx = ctx
        .pg()
        .begin()
        .await
        .with_context(|| format!("Failed to begin the rebuild of {}", map.table))?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .context("Failed to set the rebuild's isolation level")?;
    let issues = data_issues(&mut tx, map).await?;
    let changes = rebuild(&mut tx, map).await?;
    let settings: StdMapSettings = ctx.own_settings()?;
    let guard = shrink::check(
        ctx.def.id,
        &format!("jobs.{}.max_delete_share", ctx.def.config_name()),
        settings.max_delete_share,
        &[changes.shrink(map.table)],
        ctx.flag(shrink::ALLOW_SHRINK),
    );
    let applied = !ctx.dry_run && guard.is_ok();
    if applied {
        tx.commit()
            .await
            .with_context(|| format!("Failed to commit the rebuild of {}", map.table))?;
    } else {
        tx.rollback().await?;
    }
    report(ctx, map, &issues, &changes, applied);
    guard?;
    Ok(())
}

/// The run's log lines, counts and details.
fn report(ctx: &JobContext, map: StdMap, issues: &DataIssues, changes: &MapChanges, applied: bool) {
    let unknown = issues.unknown_std_sys_ids.count;
    if unknown > 0 {
        tracing::warn!(
            table = map.table,
            pairs = unknown,
            "items name standard-system ids unknown to tb_lms_std_sys: not written; the first ones are in the run's details"
        );
    }
    tracing::info!(
        table = map.table,
        pairs = changes.pairs,
        inserted = changes.inserted,
        updated = changes.updated,
        deleted = changes.deleted,
        applied,
        "map rebuilt"
    );
    ctx.counts.add_read(issues.active_items as u64);
    ctx.counts.add_skipped(unknown as u64);
    if applied {
        ctx.counts
            .add_written((changes.inserted + changes.updated + changes.deleted) as u64);
    }
    ctx.set_detail("active_items", issues.active_items);
    ctx.set_detail(
        if applied { "changed" } else { "would_change" },
        serde_json::json!({
            "pairs": changes.pairs,
            "inserted": changes.inserted,
            "updated": changes.updated,
            "deleted": changes.deleted,
            "unchanged": changes.unchanged(),
        }),
    );
    ctx.set_detail("data_issues", issues);
}

/// Rebuilds `map` on `conn` (the caller's transaction) in one statement.
#[tracing::instrument(skip_all, fields(table = map.table), err)]
pub async fn rebuild(conn: &mut PgConnection, map: StdMap) -> anyhow::Result<MapChanges> {
    let StdMap {
        table, key_column, ..
    } = map;
    // Codes unknown to tb_lms_std_sys (and NULL ones) drop out at the join.
    let (key, pairs) = if map.keyed_by_kc {
        (
            "k.kc_id",
            "coded CROSS JOIN LATERAL unnest(coded.kc_ids) AS k(kc_id)
              WHERE nullif(btrim(k.kc_id), '') IS NOT NULL",
        )
    } else {
        ("coded.course_id", "coded")
    };
    // Names come from the two constants above, never from input.
    let sql = format!(
        "WITH {ACTIVE_ITEMS},
         coded AS (
             SELECT a.item_id, a.course_id, a.kc_ids, s.std_sys_id
               FROM active a
              CROSS JOIN LATERAL unnest(a.std_sys_ids) AS u(code)
               JOIN tb_lms_std_sys s ON s.std_sys_id = u.code
         ),
         fresh AS (
             SELECT {key} AS map_key, coded.std_sys_id, count(DISTINCT coded.item_id)::int AS item_cnt
               FROM {pairs}
              GROUP BY 1, 2
         ),
         gone AS (
             DELETE FROM {table} t
              WHERE NOT EXISTS (SELECT 1 FROM fresh f
                                 WHERE f.map_key = t.{key_column} AND f.std_sys_id = t.std_sys_id)
             RETURNING t.item_cnt > 0 AS counted
         ),
         upserted AS (
             INSERT INTO {table} AS t ({key_column}, std_sys_id, item_cnt, upd_dt)
             SELECT map_key, std_sys_id, item_cnt, now() FROM fresh
             ON CONFLICT ({key_column}, std_sys_id) DO UPDATE
                SET item_cnt = EXCLUDED.item_cnt, upd_dt = EXCLUDED.upd_dt
              WHERE t.item_cnt IS DISTINCT FROM EXCLUDED.item_cnt
             RETURNING (t.xmax = 0) AS inserted
         )
         SELECT (SELECT count(*) FROM fresh) AS pairs,
                count(*) FILTER (WHERE inserted) AS inserted,
                count(*) FILTER (WHERE NOT inserted) AS updated,
                (SELECT count(*) FROM gone) AS deleted,
                (SELECT count(*) FROM {table} WHERE item_cnt > 0) AS counted_before,
                (SELECT count(*) FILTER (WHERE counted) FROM gone) AS deleted_counted
           FROM upserted"
    );
    sqlx::query_as(&sql)
        .fetch_one(conn)
        .await
        .with_context(|| format!("Failed to rebuild {table} from tb_lms_item / tb_lms_content"))
}

/// Counts (and lists the first of) the data errors among the active items.
#[tracing::instrument(skip_all, fields(table = map.table), err)]
pub async fn data_issues(conn: &mut PgConnection, map: StdMap) -> anyhow::Result<DataIssues> {
    let sql = format!(
        "WITH {ACTIVE_ITEMS},
         unknown AS (
             SELECT DISTINCT a.item_id, u.code
               FROM active a CROSS JOIN LATERAL unnest(a.std_sys_ids) AS u(code)
              WHERE u.code IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM tb_lms_std_sys s WHERE s.std_sys_id = u.code)
         ),
         flagged AS (
             SELECT item_id,
                    array_position(std_sys_ids, NULL) IS NOT NULL AS null_std,
                    NOT EXISTS (SELECT 1 FROM unnest(std_sys_ids) c WHERE c IS NOT NULL) AS no_std,
                    NOT EXISTS (SELECT 1 FROM unnest(kc_ids) k WHERE nullif(btrim(k), '') IS NOT NULL) AS no_kc,
                    EXISTS (SELECT 1 FROM unnest(kc_ids) k WHERE nullif(btrim(k), '') IS NULL) AS null_kc
               FROM active
         )
         SELECT (SELECT count(*) FROM active),
                (SELECT count(*) FROM unknown),
                (SELECT coalesce(jsonb_agg(jsonb_build_object('item_id', item_id, 'std_sys_id', code)), '[]')
                   FROM (SELECT * FROM unknown ORDER BY item_id, code LIMIT {MAX_REPORTED}) x),
                count(*) FILTER (WHERE null_std),
                coalesce((array_agg(item_id ORDER BY item_id) FILTER (WHERE null_std))[1:{MAX_REPORTED}], '{{}}'),
                count(*) FILTER (WHERE no_std),
                coalesce((array_agg(item_id ORDER BY item_id) FILTER (WHERE no_std))[1:{MAX_REPORTED}], '{{}}'),
                count(*) FILTER (WHERE no_kc),
                coalesce((array_agg(item_id ORDER BY item_id) FILTER (WHERE no_kc))[1:{MAX_REPORTED}], '{{}}'),
                count(*) FILTER (WHERE null_kc),
                coalesce((array_agg(item_id ORDER BY item_id) FILTER (WHERE null_kc))[1:{MAX_REPORTED}], '{{}}')
           FROM flagged"
    );
    type Row = (
        i64,
        i64,
        serde_json::Value,
        i64,
        Vec<String>,
        i64,
        Vec<String>,
        i64,
        Vec<String>,
        i64,
        Vec<String>,
    );
    let row: Row = sqlx::query_as(&sql)
        .fetch_one(conn)
        .await
        .context("Failed to check tb_lms_item's standard-system and KC ids")?;
    let list = |count: i64, ids: Vec<String>| Offenders {
        count,
        first: serde_json::json!(ids),
    };
    Ok(DataIssues {
        active_items: row.0,
        unknown_std_sys_ids: Offenders {
            count: row.1,
            first: row.2,
        },
        items_with_null_std_sys_ids: list(row.3, row.4),
        items_without_std_sys_ids: list(row.5, row.6),
        items_without_kc_ids: map.keyed_by_kc.then(|| list(row.7, row.8)),
        items_with_null_kc_ids: map.keyed_by_kc.then(|| list(row.9, row.10)),
    })
}
