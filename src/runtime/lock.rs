//! At most one run per lock key, across hosts: a PostgreSQL session-level
//! advisory lock held on a dedicated connection for the whole run. If the
//! process dies, PostgreSQL closes the session and frees the lock, so a crash
//! never leaves a job locked out. Which key a run takes is the job's
//! [`super::registry::Lock`].
//!
//! The session is the lock: if PostgreSQL ends it (`pg_terminate_backend`,
//! a failover, a proxy) the lock is gone while the job goes on. So the
//! session is set up to last — no statement, lock, idle or
//! idle-in-transaction timeout applies to it, and the server sends TCP
//! keepalives on it, so a lock of a host that vanished is freed within a
//! minute — and the runner checks it with [`LockConnection::holds`] while
//! the job runs.

use sqlx::{Connection, PgConnection, PgPool};

/// A connection that holds (or tries) advisory locks. Taken out of the pool so
/// it is never handed to other work while a lock is held.
pub struct LockConnection {
    conn: PgConnection,
}

impl LockConnection {
    pub async fn open(pool: &PgPool) -> sqlx::Result<Self> {
        let mut conn = pool.acquire().await?.detach();
        // Settings the server does not know (idle_session_timeout before
        // PostgreSQL 14) are left out. The keepalives apply over TCP only.
        sqlx::query(
            "SELECT count(set_config(name, value, false))
               FROM (VALUES ('statement_timeout', '0'), ('lock_timeout', '0'),
                            ('idle_in_transaction_session_timeout', '0'),
                            ('idle_session_timeout', '0'),
                            ('tcp_keepalives_idle', '30'), ('tcp_keepalives_interval', '10'),
                            ('tcp_keepalives_count', '3')) AS wanted (name, value)
              WHERE name IN (SELECT name FROM pg_settings)",
        )
        .execute(&mut conn)
        .await?;
        Ok(Self { conn })
    }

    /// Whether this session still holds every key of `keys` (exclusively or
    /// shared, as taken): what PostgreSQL's `pg_locks` shows for this very
    /// session. An error means the session is gone, and the locks with it.
    pub async fn holds(&mut self, keys: &[String]) -> sqlx::Result<bool> {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT k.key) FROM unnest($1::text[]) AS k (key)
               JOIN pg_locks l
                 ON (l.classid::bigint << 32) | l.objid::bigint = hashtextextended(k.key, 0)
              WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                AND l.pid = pg_backend_pid()",
        )
        .bind(keys)
        .fetch_one(&mut self.conn)
        .await?;
        Ok(held as usize == keys.len())
    }

    /// Tries to take the lock `key` (hashed to a 64-bit key by PostgreSQL)
    /// without waiting.
    pub async fn try_lock(&mut self, key: &str) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(&mut self.conn)
            .await
    }

    /// Tries to take the lock `key` shared without waiting: any number of
    /// shared holders at once, never beside an exclusive one.
    pub async fn try_lock_shared(&mut self, key: &str) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock_shared(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(&mut self.conn)
            .await
    }

    /// Tries to take `key` exclusively (`exclusive`) or shared.
    pub async fn try_lock_as(&mut self, key: &str, exclusive: bool) -> sqlx::Result<bool> {
        if exclusive {
            self.try_lock(key).await
        } else {
            self.try_lock_shared(key).await
        }
    }

    /// Frees `key` as it was taken.
    pub async fn unlock_as(&mut self, key: &str, exclusive: bool) -> sqlx::Result<bool> {
        if exclusive {
            self.unlock(key).await
        } else {
            sqlx::query_scalar("SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))")
                .bind(key)
                .fetch_one(&mut self.conn)
                .await
        }
    }

    pub async fn unlock(&mut self, key: &str) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(&mut self.conn)
            .await
    }

    /// Whether another session holds one of the keys `prefix` + `n` for
    /// `n` in `1..=max` other than `except`, in this database (advisory
    /// keys are per database). `pg_locks` shows a 64-bit key as `classid`
    /// (high half) and `objid` (low half) with `objsubid = 1`.
    pub async fn other_held(&mut self, prefix: &str, max: u32, except: u32) -> sqlx::Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_locks l
                   JOIN generate_series(1, $2) n
                     ON n <> $3 AND (l.classid::bigint << 32) | l.objid::bigint = hashtextextended($1 || n, 0)
                  WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                    AND l.pid <> pg_backend_pid()
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        )
        .bind(prefix)
        .bind(max as i32)
        .bind(except as i32)
        .fetch_one(&mut self.conn)
        .await
    }

    /// Ends the session, which frees every lock it still holds.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
