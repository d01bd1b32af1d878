//! What the back-office login statistics share: BO-01-003 (connected users
//! per hour), BO-01-004 (logins per day), BO-01-007 (login users per day,
//! ISO week and month) and BO-05-006, which computes a week those jobs left
//! missing with their own code before it mails it (the weekly report:
//! [`usage_report`]).
//!
//! A user's school level comes from `tb_lms_user.school_id` →
//! `tb_lms_school.school_level`. Users without one — parents, a user without
//! `school_id`, a school id the LMS does not know, a login of a user id not
//! in `tb_lms_user` — are counted under [`NO_SCHOOL_LEVEL`], never dropped.
//! The user type is the login row's own `tb_lms_login_hist.user_type` (what
//! the user logged in as).

pub mod connected_users;
pub mod login_counts;
pub mod login_users;
pub mod usage_mail;
pub mod usage_report;

use anyhow::Context as _;
use chrono::NaiveDate;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{FromRow, PgConnection, Postgres, Transaction};

use crate::runtime::JobContext;

/// `school_level` of the statistics rows of users without a school.
pub const NO_SCHOOL_LEVEL: &str = "X";

/// Every school level a statistics row may carry, [`NO_SCHOOL_LEVEL`] last:
/// each job writes a row for each of them, zeros included, so that a day
/// without logins is told apart from a day not computed.
pub const SCHOOL_LEVELS: [&str; 4] = ["E", "M", "H", NO_SCHOOL_LEVEL];

/// The contract's user types; a login row with another type gets its rows too.
pub const USER_TYPES: [&str; 3] = ["S", "T", "P"];

/// `LEFT JOIN`s that give the rows of `alias` (with a `user_id`) the column
/// `school_level`, [`NO_SCHOOL_LEVEL`] when the user has no school.
pub fn level_joins(alias: &str) -> String {
    format!(
        "LEFT JOIN tb_lms_user lvl_u ON lvl_u.user_id = {alias}.user_id
         LEFT JOIN tb_lms_school lvl_s ON lvl_s.school_id = lvl_u.school_id"
    )
}

/// The school level expression over [`level_joins`].
pub fn level_expr() -> String {
    format!("COALESCE(lvl_s.school_level, '{NO_SCHOOL_LEVEL}')")
}

/// The rows of a statistics table that one computation owns and replaces.
#[derive(Debug, Clone, Copy)]
pub enum Owned<'a> {
    /// A table keyed by `base_dt`: that day's rows.
    Day(NaiveDate),
    /// A table keyed by `(period_type, period_start)`: those periods' rows.
    Periods(&'a [(&'a str, NaiveDate)]),
}

/// What every statistics job does with its figures, in the caller's
/// transaction: locks the `owned` rows of `table` ([`lock_periods`]),
/// deletes them, then runs `insert` — one set-based `INSERT … SELECT …
/// RETURNING …` that writes them anew, zeros included — and returns what it
/// returned. So a rerun replaces exactly the rows of its periods, and a
/// reader never sees them half written.
pub async fn replace_rows<'q, O>(
    conn: &mut PgConnection,
    job_id: &str,
    table: &str,
    owned: Owned<'_>,
    insert: QueryAs<'q, Postgres, O, PgArguments>,
) -> anyhow::Result<Vec<O>>
where
    O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
{
    let (kinds, starts): (Vec<&str>, Vec<NaiveDate>) = match owned {
        Owned::Day(date) => (vec!["D"], vec![date]),
        Owned::Periods(periods) => periods.iter().copied().unzip(),
    };
    let keys: Vec<(&str, NaiveDate)> = kinds.iter().copied().zip(starts.iter().copied()).collect();
    lock_periods(conn, table, &keys).await?;
    let deleted = match owned {
        Owned::Day(date) => {
            sqlx::query(&format!("DELETE FROM {table} WHERE base_dt = $1"))
                .bind(date)
                .execute(&mut *conn)
                .await
        }
        Owned::Periods(_) => {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE (period_type, period_start) IN
                     (SELECT * FROM unnest($1::text[], $2::date[]))"
            ))
            .bind(&kinds)
            .bind(&starts)
            .execute(&mut *conn)
            .await
        }
    };
    deleted
        .with_context(|| format!("{job_id}: Failed to delete the rows of {keys:?} from {table}"))?;
    insert
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("{job_id}: Failed to write the rows of {keys:?} into {table}"))
}

/// Ends a statistics job's transaction: commits it and counts `rows` as
/// written, or in a dry run rolls it back; either way records `rows` in the
/// run's details (`rows`, or `would_write_rows`).
pub async fn finish(
    ctx: &JobContext,
    tx: Transaction<'_, Postgres>,
    table: &str,
    rows: u64,
) -> anyhow::Result<()> {
    if ctx.dry_run {
        tx.rollback().await?;
        ctx.set_detail("would_write_rows", rows);
    } else {
        tx.commit()
            .await
            .with_context(|| format!("{}: Failed to commit {table}", ctx.def.id))?;
        ctx.counts.add_written(rows);
        ctx.set_detail("rows", rows);
    }
    Ok(())
}

/// Takes transaction-level advisory locks on the statistics rows of `table`
/// for `periods` (sorted, so two callers never wait for each other in a
/// cycle): a job and BO-05-006 filling in the same day never delete and
/// insert the same keys at once. Freed at commit or rollback.
pub async fn lock_periods(
    conn: &mut PgConnection,
    table: &str,
    periods: &[(&str, NaiveDate)],
) -> anyhow::Result<()> {
    let mut keys: Vec<String> = periods
        .iter()
        .map(|(kind, start)| format!("aidt-batch/bo-stats/{table}/{kind}/{start}"))
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("Failed to lock {key}"))?;
    }
    Ok(())
}
