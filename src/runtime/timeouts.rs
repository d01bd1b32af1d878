//! How long a run's database work may wait, so that nothing waits forever:
//! PostgreSQL `statement_timeout` and `lock_timeout` on every connection of
//! the run's pool, MongoDB `maxTimeMS` on every read. A job declares its
//! defaults ([`super::registry::JobDef::timeouts`]), `[jobs.<id>]`
//! overrides them (`statement_timeout_secs`, `lock_timeout_secs`,
//! `mongo_max_time_secs`; 0 is no limit). A run that hits one fails with an
//! error naming what it waited for and the key to raise ([`explain`]).
//!
//! The advisory-lock connection is not the run's pool: it never has a limit
//! (see [`super::lock`]).

use std::time::Duration;

use crate::config::{
    ConfigError, JobsSettings, LOCK_TIMEOUT_KEY, MONGO_MAX_TIME_KEY, STATEMENT_TIMEOUT_KEY,
};

use super::registry::JobDef;

/// PostgreSQL's largest `statement_timeout` / `lock_timeout` (`INT_MAX`
/// milliseconds, 24.8 days), in whole seconds.
const MAX_SECS: u64 = i32::MAX as u64 / 1000;

/// The limits of one run, in seconds; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// PostgreSQL `statement_timeout`: how long one statement may run
    /// (a streamed query: until its last row is read).
    pub statement_secs: u64,
    /// PostgreSQL `lock_timeout`: how long a statement waits for a row or
    /// table lock another session (the LMS, an operator) holds.
    pub lock_secs: u64,
    /// MongoDB `maxTimeMS` of each read: the server's time on it, all of a
    /// cursor's batches together (the time the job spends between batches,
    /// sending to KERIS, does not count).
    pub mongo_secs: u64,
}

impl Timeouts {
    /// Most jobs: a statement running 10 minutes or a row lock held for 30
    /// seconds means something is stuck (a batch job's statements take
    /// seconds; the LMS's transactions hold rows for milliseconds).
    pub const DEFAULT: Timeouts = Timeouts {
        statement_secs: 600,
        lock_secs: 30,
        mongo_secs: 600,
    };

    /// Statistics that read a day or a week of the LMS in one set-based
    /// statement: on a large school year such a statement takes minutes.
    pub const STATISTICS: Timeouts = Timeouts {
        statement_secs: 3600,
        lock_secs: 60,
        mongo_secs: 600,
    };

    /// Deletions in short batches: a batch's statement takes seconds, and a
    /// deletion gives way to the LMS — a row the application holds for 15 s
    /// fails the run, and the next night's run deletes what is left.
    pub const DELETION: Timeouts = Timeouts {
        statement_secs: 300,
        lock_secs: 15,
        mongo_secs: 300,
    };

    /// A day's documents read through one MongoDB cursor (LRS-01-001 sorts
    /// the day's statements; DC-01-001 reads the day's READY ones while it
    /// sends): the server's time on that cursor grows with the day. The
    /// PostgreSQL side (journal, error rows) is short statements.
    pub const DAY_STREAM: Timeouts = Timeouts {
        statement_secs: 300,
        lock_secs: 30,
        mongo_secs: 3600,
    };

    /// The limits of a run of `def`: its declared ones, each overridden by
    /// its key in `[jobs.<id>]`.
    pub fn resolve(def: &JobDef, jobs: &JobsSettings) -> Result<Timeouts, ConfigError> {
        let name = def.config_name();
        let read = |key: &str, default: u64| -> Result<u64, ConfigError> {
            let secs = jobs.runtime_secs(&name, key)?.unwrap_or(default);
            if secs > MAX_SECS {
                return Err(ConfigError::BadValue {
                    key: format!("jobs.{name}.{key}"),
                    reason: format!(
                        "{secs} is more than PostgreSQL allows ({MAX_SECS} s); 0 is no limit"
                    ),
                });
            }
            Ok(secs)
        };
        Ok(Timeouts {
            statement_secs: read(STATEMENT_TIMEOUT_KEY, def.timeouts.statement_secs)?,
            lock_secs: read(LOCK_TIMEOUT_KEY, def.timeouts.lock_secs)?,
            mongo_secs: read(MONGO_MAX_TIME_KEY, def.timeouts.mongo_secs)?,
        })
    }

    pub fn statement(&self) -> Duration {
        Duration::from_secs(self.statement_secs)
    }

    pub fn lock(&self) -> Duration {
        Duration::from_secs(self.lock_secs)
    }

    /// `maxTimeMS` of a read: zero is no limit, as MongoDB reads it.
    pub fn mongo(&self) -> Duration {
        Duration::from_secs(self.mongo_secs)
    }
}

/// Which limit an error of a run of `def` hit, said for the operator — the
/// setting, what the run waited for and the key to raise — or `None` when
/// it hit none.
pub fn explain(def: &JobDef, limits: &Timeouts, e: &anyhow::Error) -> Option<String> {
    let name = def.config_name();
    if let Some(db) = e.chain().find_map(pg_error) {
        let place = db
            .r#where()
            .and_then(|w| w.lines().next())
            .map(|w| match w.starts_with("while ") {
                true => format!(" {w}"),
                false => format!(" ({w})"),
            })
            .unwrap_or_default();
        if db.code() == LOCK_NOT_AVAILABLE {
            return Some(format!(
                "lock_timeout ({} s) exceeded{place} in job {}: another session holds a lock on \
                 what the job writes; find it in pg_locks / pg_stat_activity, or set \
                 jobs.{name}.{LOCK_TIMEOUT_KEY} to wait longer",
                limits.lock_secs, def.id
            ));
        }
        if db.code() == QUERY_CANCELED && db.message().contains("statement timeout") {
            return Some(format!(
                "statement_timeout ({} s) exceeded{place} in job {}: one statement ran that long; \
                 set jobs.{name}.{STATEMENT_TIMEOUT_KEY} to allow longer",
                limits.statement_secs, def.id
            ));
        }
    }
    e.chain().any(is_max_time_expired).then(|| {
        format!(
            "MongoDB maxTimeMS ({} s) exceeded in job {}: one read took the server that long; \
             set jobs.{name}.{MONGO_MAX_TIME_KEY} to allow longer",
            limits.mongo_secs, def.id
        )
    })
}

/// SQLSTATE of a lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE of a statement cancelled (by `statement_timeout`, among others).
const QUERY_CANCELED: &str = "57014";
/// MongoDB's `MaxTimeMSExpired`.
const MAX_TIME_MS_EXPIRED: i32 = 50;

fn pg_error<'a>(
    cause: &'a (dyn std::error::Error + 'static),
) -> Option<&'a sqlx::postgres::PgDatabaseError> {
    match cause.downcast_ref::<sqlx::Error>()? {
        sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>(),
        _ => None,
    }
}

fn is_max_time_expired(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<mongodb::error::Error>()
        .is_some_and(|e| {
            matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == MAX_TIME_MS_EXPIRED)
        })
}
