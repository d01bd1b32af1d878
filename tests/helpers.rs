//! Shared test helpers: a fresh PostgreSQL database (cloned from a migrated
//! template) and a fresh MongoDB database per test, dropped afterwards, and
//! ways to run jobs in-process or as real `aidt-batch` processes.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aidt_batch::config::{self, LoadedConfig, Profile, Settings};
use aidt_batch::context::AppContext;
use aidt_batch::jobs::REGISTRY;
use aidt_batch::runtime::history::RunStatus;
use aidt_batch::runtime::runner::{self, RunOutcome, RunRequest};
use aidt_batch::runtime::Exit;
use chrono::NaiveDate;
use keris_simulator::SimulatorHandle;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, PgPool};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://aidt:aidt@127.0.0.1:5432/aidt?sslmode=disable".into())
}

pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017/".into())
}

/// The privacy audit salt of `config/local.toml`.
pub const LOCAL_AUDIT_SALT: &str = "local-privacy-audit-salt";

/// How run details name a student under the local profile: hex SHA-256 of
/// the salt followed by the id's canonical text (computed here, not with the
/// crate's own function).
pub fn salted_hash(user_id: uuid::Uuid) -> String {
    let digest = Sha256::digest(format!("{LOCAL_AUDIT_SALT}{user_id}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// `DATABASE_URL` with another database name.
pub fn url_for(database: &str) -> String {
    let base = database_url();
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h.to_string(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let prefix = head.rsplit_once('/').map(|(p, _)| p).unwrap_or(&head);
    format!("{prefix}/{database}{query}")
}

/// The template database name: a hash of every schema file, so a changed
/// migration yields a new template instead of a stale one.
fn template_name() -> String {
    let mut hasher = Sha256::new();
    for migration in aidt_batch::commands::migrate::MIGRATOR.iter() {
        hasher.update(migration.sql.as_bytes());
    }
    hasher.update(aidt_dev::schema::CONTRACT_SQL.as_bytes());
    let digest = hasher.finalize();
    format!(
        "aidt_tmpl_{}",
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

async fn admin() -> PgConnection {
    PgConnection::connect(&database_url())
        .await
        .expect("connect to DATABASE_URL (run scripts/services)")
}

/// Creates the migrated template once; an advisory lock makes concurrent
/// test processes wait for the first one.
async fn ensure_template(admin: &mut PgConnection) -> String {
    let name = template_name();
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut *admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *admin)
            .await
            .unwrap();
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut *admin)
            .await
            .unwrap();
        let pool = PgPool::connect(&url_for(&name)).await.unwrap();
        aidt_batch::commands::migrate::MIGRATOR
            .run(&pool)
            .await
            .unwrap();
        aidt_dev::schema::apply_postgres(&pool).await.unwrap();
        pool.close().await;
    }
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *admin)
        .await
        .unwrap();
    name
}

/// One test's databases and configuration.
pub struct TestEnv {
    pub pg_name: String,
    pub mongo_name: String,
    pub app: AppContext,
    pub loaded: LoadedConfig,
}

impl TestEnv {
    /// Fresh databases with the batch tables and the contract tables.
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// Fresh, empty PostgreSQL database (nothing migrated).
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let pg_name = format!("test_{id}");
        let mongo_name = format!("test_{}", &id[..16]);
        let mut admin = admin().await;
        let create = if migrated {
            format!(
                "CREATE DATABASE {pg_name} TEMPLATE {}",
                ensure_template(&mut admin).await
            )
        } else {
            format!("CREATE DATABASE {pg_name}")
        };
        let mut attempt = 0;
        loop {
            match sqlx::query(&create).execute(&mut admin).await {
                Ok(_) => break,
                // Two clones of one template at the same instant can collide.
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    eprintln!("retrying CREATE DATABASE: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("CREATE DATABASE {pg_name}: {e}"),
            }
        }
        let _ = admin.close().await;

        let mut loaded =
            config::load_from(&config_dir(), Profile::Local, None).expect("local config loads");
        loaded.settings.database.url = Some(SecretString::from(url_for(&pg_name)));
        loaded.settings.mongo.uri = Some(SecretString::from(mongodb_uri()));
        loaded.settings.mongo.database = Some(mongo_name.clone());
        let app = AppContext::connect(&loaded)
            .await
            .expect("connect test databases");
        if migrated {
            aidt_dev::schema::apply_mongo(&app.mongo)
                .await
                .expect("mongo indexes");
        }
        TestEnv {
            pg_name,
            mongo_name,
            app,
            loaded,
        }
    }

    pub fn pg(&self) -> &PgPool {
        &self.app.pg
    }

    /// The `details` a run left in its history row.
    pub async fn details(&self, run_id: i64) -> serde_json::Value {
        details(self.pg(), run_id).await
    }

    /// Changes settings for in-process runs (e.g. a smaller batch size).
    pub fn configure(&mut self, change: impl FnOnce(&mut aidt_batch::config::Settings)) {
        let mut settings = (*self.app.settings).clone();
        change(&mut settings);
        self.loaded.settings = settings.clone();
        self.app.settings = Arc::new(settings);
    }

    /// Sets `key` of a job's own section `[jobs.<section>]` for in-process runs.
    pub fn configure_job(
        &mut self,
        section: &str,
        key: &str,
        value: impl Into<::config::ValueKind>,
    ) {
        let value = ::config::Value::new(None, value);
        self.configure(|s| {
            let entry = s.jobs.own.entry(section.to_string()).or_insert_with(|| {
                ::config::Value::new(None, ::config::Map::<String, ::config::Value>::new())
            });
            let mut table = entry.clone().into_table().unwrap_or_default();
            table.insert(key.to_string(), value);
            *entry = ::config::Value::new(None, table);
        });
    }

    /// Runs a job in this process, as `aidt-batch <id> [--date] [--dry-run]` would.
    pub async fn run_job(&self, id: &str, date: Option<NaiveDate>, dry_run: bool) -> RunOutcome {
        self.run_job_with(id, date, dry_run, &[]).await
    }

    /// [`Self::run_job`] with `--full`.
    pub async fn run_full(&self, id: &str) -> RunOutcome {
        self.run_job_with(id, None, false, &["--full"]).await
    }

    /// A run with the job's own options (`job_args`, as typed after the id).
    pub async fn run_job_with(
        &self,
        id: &str,
        date: Option<NaiveDate>,
        dry_run: bool,
        job_args: &[&str],
    ) -> RunOutcome {
        let def = REGISTRY.find(id).expect("registered job");
        let name = def.cli_name();
        let args = (def.args)(clap::Command::new(name.clone()))
            .try_get_matches_from(std::iter::once(name.as_str()).chain(job_args.iter().copied()))
            .expect("the job's own options parse");
        let request = RunRequest {
            date,
            dry_run,
            args,
            params: serde_json::json!({"test": true}),
            ..RunRequest::new(&REGISTRY, def)
        };
        runner::run(self.app.clone(), request)
            .await
            .expect("run starts")
    }

    pub async fn run_ok(&self, id: &str, date: Option<NaiveDate>, dry_run: bool) -> i64 {
        let outcome = self.run_job(id, date, dry_run).await;
        if outcome.exit != Exit::Success {
            let error: Option<Option<String>> =
                sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE run_id = $1")
                    .bind(outcome.run_id)
                    .fetch_optional(self.pg())
                    .await
                    .unwrap();
            panic!("{id} should succeed: {:?}, {error:?}", outcome.exit);
        }
        outcome.run_id.unwrap()
    }

    /// Environment for a child `aidt-batch` process pointed at this test's databases.
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![
            ("AIDT_CONFIG_DIR".into(), config_dir().display().to_string()),
            ("AIDT__DATABASE__URL".into(), url_for(&self.pg_name)),
            ("AIDT__MONGO__URI".into(), mongodb_uri()),
            ("AIDT__MONGO__DATABASE".into(), self.mongo_name.clone()),
            ("RUST_LOG".into(), "info".into()),
        ]
    }

    /// `aidt-batch args…` as a child process with this test's databases.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.args(args).envs(self.child_env()).stdin(Stdio::null());
        cmd
    }

    /// `aidt-dev args…` (seed, schema, bench data) with this test's databases.
    pub fn run_dev(&self, args: &[&str]) -> Output {
        let mut cmd = dev_bin();
        cmd.args(args).envs(self.child_env()).stdin(Stdio::null());
        cmd.output().expect("spawn aidt-dev")
    }

    pub fn run_cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn aidt-batch")
    }

    /// Waits until `sql` (a boolean query) is true, or panics after `timeout`.
    pub async fn wait_until(&self, sql: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let done: bool = sqlx::query_scalar(sql).fetch_one(self.pg()).await.unwrap();
            if done {
                return;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for: {sql}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let pg_name = self.pg_name.clone();
        let mongo_name = self.mongo_name.clone();
        // The test's runtime is blocked in this drop, so nothing of it (the
        // pool included) can be awaited here: a thread with its own runtime
        // drops the databases, and FORCE ends the pool's open sessions.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&database_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
                if let Ok(client) = mongodb::Client::with_uri_str(mongodb_uri()).await {
                    let _ = client.database(&mongo_name).drop().await;
                }
            });
        })
        .join();
    }
}

/// The `aidt-batch` binary built for this test run. It reads no env file
/// unless the test names one (the package test installs
/// /etc/aidt-batch/env, the default, while others run) and takes its
/// profile from no `AIDT_PROFILE` of the caller's.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aidt-batch"));
    cmd.env("AIDT_ENV_FILE", "").env_remove("AIDT_PROFILE");
    cmd
}

/// The `aidt-dev` binary of the workspace's `aidt-dev` crate, beside
/// `aidt-batch` in the target directory (`cargo test --workspace`, as
/// scripts/test runs it, builds it).
pub fn dev_bin() -> Command {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_aidt-batch")).with_file_name("aidt-dev");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test)",
        path.display()
    );
    Command::new(path)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Sends a signal to a child process with the system's `kill`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The status of a run.
pub async fn run_status(pg: &PgPool, run_id: i64) -> RunStatus {
    sqlx::query_scalar("SELECT status FROM batch_job_run WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pg)
        .await
        .unwrap()
}

/// A test database pointed at the simulator `sim`, with fast retries (5–20 ms
/// back-off, 5 s timeout) and requests of 100 statements, then `change`.
pub async fn keris_env(sim: &SimulatorHandle, change: impl FnOnce(&mut Settings)) -> TestEnv {
    let mut env = TestEnv::new().await;
    let base = sim.base_url();
    env.configure(|s| {
        s.keris.api_domain = Some(base);
        s.keris.base_backoff_ms = 5;
        s.keris.max_backoff_ms = 20;
        s.keris.request_timeout_secs = 5;
        s.keris.max_statements_per_request = 100;
        change(s);
    });
    env
}

/// Seeds a day (`day`) of `students` students' source statements with
/// `dev seed` (its `seed`), then deletes the seed's error rows: they are
/// earlier days' history, and these tests count this night's rows. Every
/// student consents ([`consent_all`]): these tests are about sending, and
/// the seed's refusals are long past their grace period.
pub async fn seed_keris_day(env: &TestEnv, day: &str, students: u32, statements: u32, seed: u64) {
    aidt_dev::seed::seed(
        &env.app,
        &aidt_dev::seed::SeedArgs::new(students, statements, Some(date(day)), seed),
    )
    .await
    .unwrap();
    sqlx::query("DELETE FROM tb_dc_error_data_info")
        .execute(env.pg())
        .await
        .unwrap();
    consent_all(env).await;
}

/// Every student has agreed to `PRVC_PROVIDE` and not withdrawn: none is
/// withheld from KERIS.
pub async fn consent_all(env: &TestEnv) {
    sqlx::query(
        "INSERT INTO tb_lms_user_consent (user_id, consent_type, agree_yn, agree_dt)
         SELECT user_id, 'PRVC_PROVIDE', 'Y', reg_dt FROM tb_lms_user WHERE user_type = 'S'
         ON CONFLICT (user_id, consent_type) DO UPDATE SET agree_yn = 'Y', withdraw_dt = NULL",
    )
    .execute(env.pg())
    .await
    .unwrap();
}

/// The partition of `user_id` among `n`, computed here from the definition
/// (first 8 bytes of SHA-256, big-endian, top bit cleared, times N over 2^63).
pub fn expected_partition(user_id: &str, n: u32) -> u32 {
    let digest = Sha256::digest(user_id.as_bytes());
    let h = u64::from_be_bytes(digest[..8].try_into().unwrap()) & 0x7fff_ffff_ffff_ffff;
    ((h as u128 * n as u128) >> 63) as u32
}

/// Every document of `keris_batch_data`.
pub async fn keris_docs(env: &TestEnv) -> Vec<mongodb::bson::Document> {
    use futures::TryStreamExt as _;
    env.app
        .mongo
        .collection::<mongodb::bson::Document>(aidt_batch::contract::KERIS_BATCH_DATA)
        .find(mongodb::bson::doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The `details` run `run_id` left in its history row in `pg`.
pub async fn details(pg: &PgPool, run_id: i64) -> serde_json::Value {
    sqlx::query_scalar("SELECT details FROM batch_job_run WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pg)
        .await
        .unwrap()
}
