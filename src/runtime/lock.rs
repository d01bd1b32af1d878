//! At most one run per lock key, across hosts: a PostgreSQL session-level
//! advisory lock held on a dedicated connection for the whole run. If the
//! process dies, PostgreSQL closes the session and frees the lock, so a crash
//! never leaves a job locked out. Which key a run takes is the job's
//! [`super::registry::Lock`].

use sqlx::{Connection, PgConnection, PgPool};

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

    /// Ends the session, which frees every lock it still holds.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
