//! One run at a time per job and business date, across hosts: a PostgreSQL
//! session-level advisory lock held on a dedicated connection for the whole
//! run. If the process dies, PostgreSQL closes the session and frees the lock,
//! so a crash never leaves a job locked out.

use chrono::NaiveDate;
use sqlx::{Connection, PgConnection, PgPool};

/// The lock key text; hashed to the 64-bit advisory-lock key by PostgreSQL.
fn key(job_id: &str, business_date: NaiveDate) -> String {
    format!("aidt-batch/{job_id}/{business_date}")
}

/// A connection that holds (or tries) advisory locks. Taken out of the pool so
/// it is never handed to other work while a lock is held.
pub struct LockConnection {
    conn: PgConnection,
}

impl LockConnection {
    pub async fn open(pool: &PgPool) -> sqlx::Result<Self> {
        let conn = pool.acquire().await?.detach();
        Ok(Self { conn })
    }

    /// Tries to take the lock of (`job_id`, `business_date`) without waiting.
    pub async fn try_lock(&mut self, job_id: &str, business_date: NaiveDate) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(key(job_id, business_date))
            .fetch_one(&mut self.conn)
            .await
    }

    pub async fn unlock(&mut self, job_id: &str, business_date: NaiveDate) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(key(job_id, business_date))
            .fetch_one(&mut self.conn)
            .await
    }

    /// Ends the session, which frees every lock it still holds.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
