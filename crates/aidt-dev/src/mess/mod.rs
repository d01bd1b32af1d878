//! `aidt-dev mess --date D` — adds to a seeded world what the LMS, LRS,
//! LCMS and back office write during business date D that a clean
//! generator never writes: the data of a messy night. Run it once per date,
//! before that date's night (the night of D runs at D+1); the mess of D+1
//! builds on what the night of D left (students it deleted, windows it
//! activated).
//!
//! What one date adds, in this order (each step's count in the report):
//! - **the day's statements** — only if the LRS holds none of D: those of
//!   the latest earlier day, moved to D with new ids (`aidt-dev seed` writes
//!   one day; this gives the next nights a day of their own);
//! - **late statements** stored during D (04:00–20:00, so after their
//!   day's night) for each of the 10 days before D: copies of clean
//!   statements (same student, verb and object, or the day before's very
//!   groups for D−1), the ones of D−8 … D−10 beyond the default 7-day
//!   look-back;
//! - **voiding statements** (verb `voided`, object a `StatementRef`) for
//!   statements of D−1 (sent by the night of D−1 if it ran) and of D (not
//!   sent yet); the LRS marks their targets `voided: true`;
//! - **deleted students' data**: for up to 3 students the batch deleted
//!   (`del_yn = 'Y'` and withheld by the consent rule) — or, before any
//!   night deleted one, withheld students — statements of D and D−1 stored
//!   during D, a `user_id` stored as a BSON UUID, and LMS rows written
//!   after the deletion (a result, an open session, a login, an access log);
//! - **undecodable documents**: `user_id` as binary data (UUID) and as a
//!   number, a statement without an actor;
//! - **a statement a proxy refuses**: one more statement of a consenting
//!   student on D whose KERIS statement id the report prints, for
//!   `keris-simulator --proxy-status 413 --proxy-statement-id ID` (a proxy
//!   then refuses every request carrying it);
//! - **open sessions**: learning sessions and logins of D without an end,
//!   with a result 20 minutes after the start;
//! - **the LCMS source loses half its rows** (`tb_lcms_content`,
//!   `tb_lcms_item`), as after a truncated replication;
//! - **maintenance**: a window of this command that a night activated is
//!   cancelled (the back office cancels an active maintenance); when there
//!   is none, a window of `LMS` from D 22:00 to D+3 22:00 is scheduled for
//!   the night to activate.
//!
//! Every document written to `statements` carries `aidt_dev` naming what
//! it is (`late`, `voiding`, `deleted-student`, `undecodable`,
//! `proxy-refused`), as LRSs keep fields of their own beside the contract's;
//! the jobs ignore it. Deterministic: the same `--seed`, date and database
//! state give the same data (random streams per date and step, never the
//! clock).

mod lms;
mod lrs;

use anyhow::Context as _;
use chrono::NaiveDate;
use rand::rngs::StdRng;
use uuid::Uuid;

use aidt_batch::context::AppContext;

/// `aidt-dev mess --help`.
pub const ABOUT: &str = "\
Adds to a seeded world what the LMS, LRS, LCMS and back office write during business date D \
that a clean generator never writes. Run it once per date before that date's night (which \
runs at D+1); the next date's mess builds on what the night left.

What one date adds (the report counts each):
  - the day's statements, only if the LRS holds none of D: the latest earlier day's, moved to D
  - late statements stored during D for each of the 10 days before D (3 a day, 6 for D-1, two of
    one group); D-8..D-10 are beyond LRS-01-001's default 7-day look-back
  - voiding statements for 3 statements of D-1 (sent by its night) and 3 of D (not yet sent);
    the targets are marked voided
  - for up to 3 students the batch deleted (before any deletion: withheld ones), statements of
    D and D-1 stored during D, one with user_id as a BSON UUID, and LMS rows written after the
    deletion (a result, an open session, a login, an access-log row)
  - undecodable documents: user_id as a BSON UUID and as a number, a statement without actor
  - one statement of a consenting student on D whose KERIS statement id is printed: run the
    simulator with --proxy-status 413 --proxy-statement-id ID and a proxy refuses every
    request carrying it
  - open sessions: 3 sessions and logins of D 19:00 without an end, a result 20 minutes in
  - the LCMS source (tb_lcms_content, tb_lcms_item) loses half its rows
  - maintenance: a window of this command that a night activated is cancelled; if none was
    active, a window of LMS from D 22:00 to D+3 22:00 is scheduled

Every statements document written carries aidt_dev (late, voiding, deleted-student, \
undecodable, proxy-refused). Deterministic: the same --seed, date and database give the same \
data.";

/// The field naming what a mess document is.
pub const MARKER: &str = "aidt_dev";

/// Sizes and seed of a messy night.
#[derive(Debug, Clone, clap::Args)]
pub struct MessArgs {
    /// Business date whose day the mess belongs to (its night runs at D+1)
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: NaiveDate,
    /// Random seed; the same seed, date and database give the same mess
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What was written, and the KERIS statement ids a proxy should refuse.
#[derive(Debug, Default)]
pub struct MessReport {
    pub lines: Vec<(String, u64)>,
    /// KERIS ids of the statements to refuse (the `proxy-refused` groups).
    pub proxy_refused: Vec<Uuid>,
}

impl MessReport {
    fn add(&mut self, what: &str, n: u64) {
        self.lines.push((what.to_string(), n));
    }
}

impl std::fmt::Display for MessReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (what, n) in &self.lines {
            writeln!(f, "{what:<48} {n:>8}")?;
        }
        for id in &self.proxy_refused {
            writeln!(
                f,
                "KERIS statement a proxy refuses (--proxy-statement-id) {id}"
            )?;
        }
        Ok(())
    }
}

/// Writes the mess of `args.date`.
pub async fn mess(app: &AppContext, args: &MessArgs) -> anyhow::Result<MessReport> {
    let date = args.date;
    let rng = |step: &str| crate::seed::gen::stream(args.seed, &format!("mess|{date}|{step}"));
    let mut report = MessReport::default();
    let lrs = lrs::Lrs::new(app, date);
    report.add(
        "statements of the day (moved)",
        lrs.day(&mut rng("day")).await?,
    );
    let deleted = lms::deleted_students(app, date).await?;
    let consenting = lms::consenting_students(&app.pg).await?;
    anyhow::ensure!(
        !consenting.is_empty(),
        "no student consents to PRVC_PROVIDE: run `aidt-dev seed` first"
    );
    let mut r = rng("voiding");
    report.add(
        "voiding statements",
        lrs.voiding(&mut r, &consenting).await?,
    );
    report.add("late statements", lrs.late(&mut rng("late")).await?);
    let mut r = rng("deleted");
    report.add(
        "statements of deleted students",
        lrs.deleted_students(&mut r, &deleted).await?,
    );
    report.add(
        "LMS rows of deleted students",
        lms::deleted_students_rows(&app.pg, date, &deleted).await?,
    );
    let mut r = rng("undecodable");
    report.add(
        "undecodable documents",
        lrs.undecodable(&mut r, &consenting).await?,
    );
    let mut r = rng("proxy");
    report.proxy_refused = lrs.proxy_refused(&mut r, &consenting).await?;
    report.add(
        "statements a proxy refuses",
        report.proxy_refused.len() as u64,
    );
    report.add(
        "open sessions",
        lms::open_sessions(&app.pg, date, &consenting).await?,
    );
    report.add(
        "LCMS source rows lost",
        lms::lose_lcms_half(&app.pg, &mut rng("lcms")).await?,
    );
    let (cancelled, scheduled) = lms::maintenance(&app.pg, date).await?;
    report.add("maintenance windows cancelled while active", cancelled);
    report.add("maintenance windows scheduled", scheduled);
    Ok(report)
}

/// The student a template statement is moved to (copies of another
/// student's statements), with their partner.
#[derive(Debug, Clone)]
pub(crate) struct Student {
    pub user_id: Uuid,
    pub partner_id: Uuid,
}

/// `n` distinct elements of `items`, drawn with `rng` (all when fewer).
pub(crate) fn sample<T: Clone>(rng: &mut StdRng, items: &[T], n: usize) -> Vec<T> {
    rand::seq::index::sample(rng, items.len(), n.min(items.len()))
        .into_iter()
        .map(|i| items[i].clone())
        .collect()
}

/// Runs `sql` with no rows returned, naming `what` on failure.
pub(crate) async fn execute(
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    pg: &sqlx::PgPool,
    what: &str,
) -> anyhow::Result<u64> {
    Ok(query
        .execute(pg)
        .await
        .with_context(|| format!("Failed to {what}"))?
        .rows_affected())
}
