//! What LMS-01-007 and DC-01-003 share: which students lose their personal
//! data, how they appear in the audit, and the audit itself.
//!
//! The set (one definition, used by both jobs): students (`user_type = 'S'`;
//! teachers and parents never) with no `PRVC_PROVIDE` row in
//! `tb_lms_user_consent`, or with `agree_yn = 'N'`, whose grace period
//! (`[jobs.privacy] grace_days`, default 30) has passed strictly before the
//! run's reference time. The grace period runs from
//! - `withdraw_dt` when the student withdrew consent;
//! - `reg_dt` when there is no row (never asked or never answered);
//! - for `agree_yn = 'N'` without `withdraw_dt`: the later of `reg_dt` and
//!   `agree_dt`. Normally that is `reg_dt` (declined at registration); when an
//!   `agree_dt` later than `reg_dt` is recorded, the student did agree at some
//!   point and the withdrawal date was lost, so the latest moment known is
//!   used: deleting a student too early is worse than a day's delay.
//!
//! A student who consented again (`agree_yn = 'Y'`) is not in the set,
//! whatever `withdraw_dt` says.
//!
//! The set ignores `del_yn`, so a run after a killed run deletes what is
//! left. To keep it from growing forever, each job records a student whose
//! deletion is complete in every store it deletes from in
//! `batch_privacy_completed` — in the batch's own transaction, so a kill
//! before the commit leaves the student to the next run — and its later
//! runs leave recorded students out of the set ([`next_candidates`] with
//! [`Recorded::Not`]) instead of probing each table again. The record holds
//! the audit's salted hash, never the id; the set query computes the same
//! hash in SQL ([`hash_sql`]). It also holds the grace anchor, so a student
//! who consents again and later withdraws (a new `withdraw_dt`) is in the
//! set again.
//!
//! Data written for a recorded student after the deletion (an offline sync,
//! a stale session, a job's insert racing the deletion, a late statement)
//! is found by each run's sweep ([`load_swept`]): the students of the set
//! that the job recorded complete go into a temporary table once, and each
//! table is emptied of their rows by one set-based `DELETE … IN (SELECT …)`
//! — no per-student probing. The sweep follows the set, not `del_yn`: a
//! student who consented again (`agree_yn = 'Y'`) is out of the set and
//! keeps what is written for them even though the LMS row still says
//! `del_yn = 'Y'`, and a `del_yn = 'Y'` the LMS set for another reason
//! touches nothing. The audit counts swept rows in `counts` and, apart, in
//! `swept_counts`.
//! The audit lists only students for whom the run changed something.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::PrivacySettings;

mod audit;
pub mod settings;

pub use audit::{hashes, record_batch, record_swept, start_run, RunFigures};

/// The consent rule of one run.
#[derive(Debug, Clone, Copy)]
pub struct ConsentRule {
    pub reference_time: DateTime<Utc>,
    pub grace_days: u32,
}

impl ConsentRule {
    /// A grace period that started before this instant has passed.
    pub fn cutoff(&self) -> DateTime<Utc> {
        self.reference_time - Duration::days(i64::from(self.grace_days))
    }
}

/// The start of a student's grace period in SQL, over `u`
/// (`tb_lms_user`) and `c` (the `PRVC_PROVIDE` row of `tb_lms_user_consent`).
const ANCHOR_SQL: &str = "COALESCE(c.withdraw_dt, GREATEST(u.reg_dt, c.agree_dt))";

/// [`student_hash`] of `u.user_id` in SQL, the salt being the parameter
/// `salt` (`$n`): `uuid::text` is the canonical lower-case hyphenated form
/// the Rust hash uses.
pub fn hash_sql(salt: &str) -> String {
    format!("encode(sha256(convert_to({salt}::text || u.user_id::text, 'UTF8')), 'hex')")
}

/// A student of the set and the start of their grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Candidate {
    pub user_id: Uuid,
    pub grace_anchor: DateTime<Utc>,
}

/// The completion records of `job_id` (students recorded complete with the
/// same grace anchor); `salt` is the audit's, which keys the record.
#[derive(Debug, Clone, Copy)]
pub struct SkipCompleted<'a> {
    pub job_id: &'a str,
    pub salt: &'a str,
}

/// Which students of the set [`next_candidates`] returns, by their
/// completion record.
#[derive(Debug, Clone, Copy)]
pub enum Recorded<'a> {
    /// Every student of the set.
    Any,
    /// Those not recorded complete: the deletion's own work (the sweep
    /// takes the others, [`load_swept`]).
    Not(SkipCompleted<'a>),
}

impl<'a> Recorded<'a> {
    /// (job id, salt) as query parameters.
    fn params(self) -> (Option<&'a str>, Option<&'a str>) {
        match self {
            Recorded::Any => (None, None),
            Recorded::Not(s) => (Some(s.job_id), Some(s.salt)),
        }
    }
}

/// The `FROM … WHERE` of the set: `$1` cutoff.
const SET_SQL: &str = "FROM tb_lms_user u
           LEFT JOIN tb_lms_user_consent c
                  ON c.user_id = u.user_id AND c.consent_type = 'PRVC_PROVIDE'
          WHERE u.user_type = 'S'
            AND (c.user_id IS NULL OR c.agree_yn = 'N')";

/// `EXISTS` of the student's completion record, the job id and the salt
/// being the parameters `job` and `salt` (`$n`).
fn completed_sql(job: &str, salt: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM batch_privacy_completed d
                  WHERE d.job_id = {job} AND d.student_hash = {} AND d.grace_anchor = {ANCHOR_SQL})",
        hash_sql(salt)
    )
}

/// The next at most `limit` students of the set with ids after `after`, in
/// id order (keyset pagination: no OFFSET, and a student deleted meanwhile
/// does not shift the pages), chosen by their completion record.
#[tracing::instrument(skip_all, fields(cutoff = %rule.cutoff(), limit), err)]
pub async fn next_candidates(
    conn: &mut PgConnection,
    rule: &ConsentRule,
    recorded: Recorded<'_>,
    after: Option<Uuid>,
    limit: u32,
) -> anyhow::Result<Vec<Candidate>> {
    let sql = format!(
        "SELECT u.user_id, {ANCHOR_SQL} AS grace_anchor
           {SET_SQL}
            AND {ANCHOR_SQL} < $1
            AND ($2::uuid IS NULL OR u.user_id > $2)
            AND ($4::text IS NULL OR NOT {})
          ORDER BY u.user_id
          LIMIT $3",
        completed_sql("$4", "$5")
    );
    let (job_id, salt) = recorded.params();
    sqlx::query_as(&sql)
        .bind(rule.cutoff())
        .bind(after)
        .bind(i64::from(limit))
        .bind(job_id)
        .bind(salt)
        .fetch_all(conn)
        .await
        .context("Failed to select students without consent from tb_lms_user / tb_lms_user_consent")
}

/// [`next_candidates`] of the whole set (no student left out), ids only.
pub async fn next_students(
    conn: &mut PgConnection,
    rule: &ConsentRule,
    after: Option<Uuid>,
    limit: u32,
) -> anyhow::Result<Vec<Uuid>> {
    Ok(next_candidates(conn, rule, Recorded::Any, after, limit)
        .await?
        .into_iter()
        .map(|c| c.user_id)
        .collect())
}

/// Every student of the set at `rule`, whether or not a deletion job has run
/// yet: the students whose learning records must never reach KERIS
/// (LRS-01-001 leaves their statements out when it aggregates, the sender
/// checks again before each request). Read page by page with
/// [`next_students`]; at 100,000 students the set is a few MiB.
pub async fn withheld_students(
    pg: &PgPool,
    rule: &ConsentRule,
) -> anyhow::Result<std::collections::HashSet<Uuid>> {
    const PAGE: u32 = 10_000;
    let mut conn = pg
        .acquire()
        .await
        .context("Failed to get a PostgreSQL connection")?;
    let mut set = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let page = next_students(&mut conn, rule, after, PAGE).await?;
        after = page.last().copied();
        let full = page.len() == PAGE as usize;
        set.extend(page);
        if !full {
            return Ok(set);
        }
    }
}

/// The rule a KERIS job applies before it aggregates or sends: the wall
/// clock, not the business date's end — a rerun of an old date must not send
/// what a student's lapsed consent withholds today — and
/// `[jobs.privacy] grace_days`.
pub fn sending_rule(ctx: &crate::runtime::JobContext) -> ConsentRule {
    ConsentRule {
        reference_time: ctx.now(),
        grace_days: ctx.settings().jobs.privacy.grace_days,
    }
}

/// How many students of the set `skip.job_id` recorded as complete: the
/// ones this run does not probe.
async fn count_completed(
    conn: &mut PgConnection,
    rule: &ConsentRule,
    skip: SkipCompleted<'_>,
) -> anyhow::Result<u64> {
    let sql = format!(
        "SELECT count(*) {SET_SQL}
            AND {ANCHOR_SQL} < $1
            AND {}",
        completed_sql("$2", "$3")
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(rule.cutoff())
        .bind(skip.job_id)
        .bind(skip.salt)
        .fetch_one(conn)
        .await
        .context("Failed to count the students recorded in batch_privacy_completed")?;
    Ok(n as u64)
}

/// Records `students` as complete for `job_id` (their deletion in every
/// store of that job is done or in the caller's transaction, which must
/// commit it together with this). Keyed by the audit's hash.
pub async fn record_completed(
    conn: &mut PgConnection,
    job_id: &str,
    run_id: i64,
    salt: &str,
    students: &[Candidate],
) -> anyhow::Result<()> {
    if students.is_empty() {
        return Ok(());
    }
    let hashes: Vec<String> = students
        .iter()
        .map(|c| student_hash(salt, c.user_id))
        .collect();
    let anchors: Vec<DateTime<Utc>> = students.iter().map(|c| c.grace_anchor).collect();
    sqlx::query(
        "INSERT INTO batch_privacy_completed (job_id, student_hash, grace_anchor, run_id)
         SELECT $1, k.h, k.a, $2 FROM UNNEST($3::text[], $4::timestamptz[]) AS k(h, a)
         ON CONFLICT (job_id, student_hash) DO UPDATE
            SET grace_anchor = EXCLUDED.grace_anchor, run_id = EXCLUDED.run_id, completed_at = now()",
    )
    .bind(job_id)
    .bind(run_id)
    .bind(&hashes)
    .bind(&anchors)
    .execute(conn)
    .await
    .context("Failed to record completed students in batch_privacy_completed")?;
    Ok(())
}

/// The audit's name for a student: SHA-256 of salt and the canonical
/// (lower-case, hyphenated) id, hex. Both jobs produce the same hash.
pub fn student_hash(salt: &str, user_id: Uuid) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(user_id.hyphenated().to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The configured salt; the jobs refuse to run without one.
pub fn audit_salt(settings: &PrivacySettings) -> anyhow::Result<String> {
    match settings
        .audit_salt
        .as_ref()
        .map(|s| s.expose_secret().to_string())
    {
        Some(salt) if !salt.is_empty() => Ok(salt),
        _ => anyhow::bail!(
            "missing required configuration key `jobs.privacy.audit_salt` \
             (set it in the profile file or in the environment as AIDT__JOBS__PRIVACY__AUDIT_SALT)"
        ),
    }
}

/// Rows (or documents) per table (or collection), and the students they
/// belonged to.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: BTreeMap<String, u64>,
    pub students: BTreeSet<Uuid>,
}

impl Tally {
    /// Adds `rows` (student, rows of that student) found in `table`.
    pub fn add(&mut self, table: &str, rows: &[(Uuid, i64)]) {
        let entry = self.counts.entry(table.to_string()).or_default();
        for (user_id, n) in rows {
            *entry += *n as u64;
            if *n > 0 {
                self.students.insert(*user_id);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn merge(&mut self, other: &Tally) {
        for (table, n) in &other.counts {
            *self.counts.entry(table.clone()).or_default() += n;
        }
        self.students.extend(other.students.iter().copied());
    }
}

/// Whose rows a statement deletes.
#[derive(Debug, Clone, Copy)]
pub enum Students<'a> {
    /// These students (a batch of the set).
    Listed(&'a [Uuid]),
    /// The students [`load_swept`] put in [`SWEPT`] (the caller's
    /// transaction).
    Swept,
}

impl Students<'_> {
    /// The condition on `user_id`; `$1` is the list for [`Students::Listed`].
    pub fn condition(&self) -> String {
        match self {
            Students::Listed(_) => "user_id = ANY($1)".to_string(),
            Students::Swept => format!("user_id IN (SELECT user_id FROM {SWEPT})"),
        }
    }

    /// `query` with the list bound, where the condition has one.
    pub fn bind<'q, O>(
        &self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        Self: 'q,
    {
        match self {
            Students::Listed(ids) => query.bind(*ids),
            Students::Swept => query,
        }
    }
}

/// Deletes (or, for a dry run, counts) the rows of `students` in `table`;
/// returns the rows per student. `table` comes from a job's constant list.
pub async fn delete_rows(
    conn: &mut PgConnection,
    table: &str,
    students: Students<'_>,
    dry_run: bool,
) -> anyhow::Result<Vec<(Uuid, i64)>> {
    let which = students.condition();
    let sql = if dry_run {
        format!("SELECT user_id, count(*) FROM {table} WHERE {which} GROUP BY user_id")
    } else {
        format!(
            "WITH d AS (DELETE FROM {table} WHERE {which} RETURNING user_id)
             SELECT user_id, count(*) FROM d GROUP BY user_id"
        )
    };
    students
        .bind(sqlx::query_as(&sql))
        .fetch_all(conn)
        .await
        .with_context(|| {
            format!("Failed to delete the rows of students without consent from {table}")
        })
}

/// The temporary table of a sweep: the students of the set the job
/// recorded complete. Dropped when the transaction ends.
pub const SWEPT: &str = "pg_temp.privacy_swept";

/// Fills [`SWEPT`] (in the caller's transaction) with the students of the
/// set at `rule` that `recorded.job_id` recorded complete — each the same
/// grace anchor, so a student in the set again after a new withdrawal is the
/// deletion's, not the sweep's — and returns how many. One statement over
/// the set; the hash of each student is computed once.
#[tracing::instrument(skip_all, err)]
pub async fn load_swept(
    conn: &mut PgConnection,
    rule: &ConsentRule,
    recorded: SkipCompleted<'_>,
) -> anyhow::Result<u64> {
    sqlx::query(&format!(
        "CREATE TEMPORARY TABLE {} (user_id uuid PRIMARY KEY) ON COMMIT DROP",
        SWEPT.trim_start_matches("pg_temp.")
    ))
    .execute(&mut *conn)
    .await
    .context("Failed to create the temporary table of the sweep")?;
    let n = sqlx::query(&format!(
        "INSERT INTO {SWEPT} SELECT u.user_id {SET_SQL} AND {ANCHOR_SQL} < $1 AND {}",
        completed_sql("$2", "$3")
    ))
    .bind(rule.cutoff())
    .bind(recorded.job_id)
    .bind(recorded.salt)
    .execute(&mut *conn)
    .await
    .context("Failed to select the students recorded complete for the sweep")?
    .rows_affected();
    // The planner's choice between index probes and one hash join per table
    // depends on the set's size: give it the figure.
    sqlx::query(&format!("ANALYZE {SWEPT}"))
        .execute(&mut *conn)
        .await
        .context("Failed to ANALYZE the temporary table of the sweep")?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_hash_is_salted_sha256_hex_of_the_canonical_id() {
        let id = Uuid::parse_str("5D0C7D6C-1111-4C3B-9A21-000000000001").unwrap();
        let h = student_hash("salt", id);
        assert_eq!(h.len(), 64);
        assert!(h
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let mut expected = Sha256::new();
        expected.update(b"salt5d0c7d6c-1111-4c3b-9a21-000000000001");
        let expected: String = expected
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h, expected);
        assert_ne!(h, student_hash("other", id));
    }

    #[test]
    fn privacy_cutoff_is_grace_days_before_the_reference_time() {
        let rule = ConsentRule {
            reference_time: "2026-11-24T03:30:00Z".parse().unwrap(),
            grace_days: 30,
        };
        assert_eq!(rule.cutoff().to_rfc3339(), "2026-10-25T03:30:00+00:00");
    }
}
