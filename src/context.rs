//! The connections a command works with, built once from the configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::{LoadedConfig, Profile, Settings};

/// Shared, cheaply clonable handles: configuration, PostgreSQL and MongoDB.
#[derive(Clone)]
pub struct AppContext {
    pub settings: Arc<Settings>,
    pub profile: Profile,
    pub pg: PgPool,
    pub mongo: mongodb::Database,
}

impl AppContext {
    /// Connects to PostgreSQL (eagerly, so a bad URL fails here with a clear
    /// message) and prepares the MongoDB client (which connects on first use).
    pub async fn connect(config: &LoadedConfig) -> anyhow::Result<Self> {
        let settings = Arc::new(config.settings.clone());
        let pg = connect_pg(&settings).await?;
        let mongo = connect_mongo(&settings).await?;
        Ok(Self {
            settings,
            profile: config.profile,
            pg,
            mongo,
        })
    }

    /// This context with a PostgreSQL pool of its own, every session of which
    /// starts with these `statement_timeout` and `lock_timeout` (zero: no
    /// limit): a job run's pool. It connects on first use; close it when
    /// the run ends.
    pub fn with_pg_limits(&self, statement: Duration, lock: Duration) -> anyhow::Result<Self> {
        let options = pg_options(&self.settings)?.options(pg_limits(statement, lock));
        Ok(Self {
            pg: pool_options(&self.settings).connect_lazy_with(options),
            ..self.clone()
        })
    }

    /// Closes the MongoDB client before the process exits (see
    /// [`close_mongo`]); the PostgreSQL pool needs nothing.
    pub async fn close(&self) {
        close_mongo(&self.mongo).await;
    }
}

/// Ends the client's server sessions and stops its connection pools and
/// monitors. Without it the driver ends the sessions from a background task
/// when the last handle drops, which can run while the runtime is shutting
/// down and then panics inside the driver: a backtrace on the stderr of a
/// run that succeeded. Waits at most 5 s for handles still open (a cursor
/// being killed), then leaves the rest to the runtime's shutdown.
pub async fn close_mongo(db: &mongodb::Database) {
    let shutdown = db.client().clone().shutdown();
    if tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .is_err()
    {
        tracing::debug!("the MongoDB client did not shut down within 5 s");
    }
}

pub fn pg_options(settings: &Settings) -> anyhow::Result<PgConnectOptions> {
    // Parse errors of a URL could echo the password: say which key, not the value.
    settings
        .database_url()
        .expose_secret()
        .parse::<PgConnectOptions>()
        .map_err(|_| {
            anyhow::anyhow!("configuration key `database.url` is not a valid PostgreSQL URL")
        })
}

pub async fn connect_pg(settings: &Settings) -> anyhow::Result<PgPool> {
    let options = pg_options(settings)?;
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    );
    pool_options(settings)
        .connect_with(options)
        .await
        .with_context(|| format!("Failed to connect to PostgreSQL at {target} (database.url)"))
}

/// `statement_timeout` and `lock_timeout` as PostgreSQL settings.
fn pg_limits(statement: Duration, lock: Duration) -> [(&'static str, String); 2] {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    [
        ("statement_timeout", ms(statement)),
        ("lock_timeout", ms(lock)),
    ]
}

/// Sets [`AppContext::with_pg_limits`]'s limits on a connection a run opens
/// outside its pool (LCMS-01-001's separate source database).
pub async fn set_pg_limits(
    conn: &mut sqlx::PgConnection,
    statement: Duration,
    lock: Duration,
) -> sqlx::Result<()> {
    let [(s_name, s_value), (l_name, l_value)] = pg_limits(statement, lock);
    sqlx::query("SELECT set_config($1, $2, false), set_config($3, $4, false)")
        .bind(s_name)
        .bind(s_value)
        .bind(l_name)
        .bind(l_value)
        .execute(conn)
        .await?;
    Ok(())
}

fn pool_options(settings: &Settings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
}

pub async fn connect_mongo(settings: &Settings) -> anyhow::Result<mongodb::Database> {
    let mut options = mongodb::options::ClientOptions::parse(settings.mongo_uri().expose_secret())
        .await
        .map_err(|_| anyhow::anyhow!("configuration key `mongo.uri` is not a valid MongoDB URI"))?;
    options.app_name = Some("aidt-batch".into());
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(10));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(10));
    let client = mongodb::Client::with_options(options)
        .context("Failed to create the MongoDB client (mongo.uri)")?;
    Ok(client.database(settings.mongo_database()))
}

/// Creates the indexes of `collection` (given by their keys) that do not
/// exist yet, whatever name an existing one has.
///
/// Asking only for the missing ones (instead of re-sending every index and
/// relying on the server to ignore duplicates) keeps `migrate` idempotent
/// whatever an existing index is called: MongoDB refuses the same keys under
/// another name (`IndexOptionsConflict`), e.g. an index the LRS team created
/// by hand.
pub async fn ensure_indexes(
    db: &mongodb::Database,
    collection: &str,
    indexes: &[mongodb::bson::Document],
) -> anyhow::Result<()> {
    let coll = db.collection::<mongodb::bson::Document>(collection);
    let existing: Vec<mongodb::bson::Document> = index_models(&coll)
        .await
        .into_iter()
        .map(|model| model.keys)
        .collect();
    let missing: Vec<mongodb::IndexModel> = indexes
        .iter()
        .filter(|keys| !existing.iter().any(|have| same_keys(have, keys)))
        .map(|keys| mongodb::IndexModel::builder().keys(keys.clone()).build())
        .collect();
    if !missing.is_empty() {
        coll.create_indexes(missing)
            .await
            .with_context(|| format!("Failed to create the indexes of {collection}"))?;
    }
    Ok(())
}

/// Drops the indexes of `collection` with these keys, where they exist
/// (idempotent: a missing collection or index is no error).
pub async fn drop_indexes(
    db: &mongodb::Database,
    collection: &str,
    indexes: &[mongodb::bson::Document],
) -> anyhow::Result<()> {
    let coll = db.collection::<mongodb::bson::Document>(collection);
    for model in index_models(&coll).await {
        if !indexes.iter().any(|keys| same_keys(&model.keys, keys)) {
            continue;
        }
        let Some(name) = model.options.and_then(|o| o.name) else {
            continue;
        };
        if let Err(e) = coll.drop_index(name.as_str()).await {
            // FerretDB v2 answers `dropIndexes` with `ok: true` (a boolean
            // where MongoDB sends 1.0), which the driver refuses although
            // the index is gone: what counts is whether it is gone.
            let still_there = match coll.list_index_names().await {
                Ok(names) => names.contains(&name),
                Err(_) => true,
            };
            if still_there {
                return Err(e)
                    .with_context(|| format!("Failed to drop the index {name} of {collection}"));
            }
        }
    }
    Ok(())
}

/// The indexes of `coll`; none for a collection that does not exist yet
/// (`listIndexes` fails with NamespaceNotFound there).
async fn index_models(
    coll: &mongodb::Collection<mongodb::bson::Document>,
) -> Vec<mongodb::IndexModel> {
    use futures::TryStreamExt as _;
    match coll.list_indexes().await {
        Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Same fields in the same order with the same direction (1 and 1.0 alike).
fn same_keys(a: &mongodb::bson::Document, b: &mongodb::bson::Document) -> bool {
    let order = |v: &mongodb::bson::Bson| {
        v.as_f64()
            .or_else(|| v.as_i64().map(|i| i as f64))
            .or_else(|| v.as_i32().map(f64::from))
    };
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && order(va) == order(vb))
}
