//! The Debian package, deployed as an operator deploys it: `dpkg -i`, the
//! secrets written to /etc/aidt-batch/env (one with `$`, a backtick and
//! spaces), Debian's `cron` running a job from the package's cron file and
//! from a user crontab, the logs rotated by the package's rule, then an
//! upgrade with an operator's edits, `remove` and `purge`.
//!
//! The system-wide steps need root (CI runs as root) and are skipped with a
//! message otherwise. The .deb is `$AIDT_DEB` (scripts/test builds it once
//! with scripts/build-deb), else scripts/build-deb runs here. One test at a
//! time installs, on the whole machine: a PostgreSQL advisory lock
//! serializes them across test processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::helpers::*;

const PACKAGE: &str = "aidt-batch";
const ENV_FILE: &str = "/etc/aidt-batch/env";
const CRON_FILE: &str = "/etc/cron.d/aidt-batch";
const LOG: &str = "/var/log/aidt-batch/bo-01-005.log";
/// Where the user-crontab form expects a host installed by hand.
const OPT: &str = "/opt/aidt-batch";
/// Left while a test has the package installed: a later run knows that an
/// installed package is a crashed run's, not a real installation.
const MARKER: &str = "/var/tmp/aidt-batch-package-test.installed";
/// The advisory lock key that serializes the install tests.
const INSTALL_LOCK: i64 = 4_243_001;
/// A password as operators have them: `$HOME` and an unmatched backtick,
/// which a shell sourcing the file would expand or choke on, and spaces.
const PASSWORD: &str = "s$HOME `x 9 z";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The .deb under test: `$AIDT_DEB`, else built once by scripts/build-deb.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Ok(path) = std::env::var("AIDT_DEB") {
            return PathBuf::from(path);
        }
        let out = Command::new(repo().join("scripts/build-deb"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/build-deb");
        assert!(out.status.success(), "scripts/build-deb: {}", stderr(&out));
        PathBuf::from(stdout(&out).trim())
    })
}

fn is_root() -> bool {
    stdout(&Command::new("id").arg("-u").output().unwrap()).trim() == "0"
}

/// Runs `program args…` and returns its output, panicking with both
/// streams when it fails.
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", PACKAGE])
        .output()
        .unwrap();
    let text = stdout(&out);
    text.strip_prefix("install ok installed ")
        .map(str::to_string)
}

#[test]
fn the_package_holds_the_binary_its_configuration_and_schedule_and_nothing_else() {
    let out = run("dpkg-deb", &["--contents", deb().to_str().unwrap()]);
    let files: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    for wanted in [
        "/usr/bin/aidt-batch",
        "/etc/aidt-batch/base.toml",
        "/etc/aidt-batch/prod.toml",
        "/etc/cron.d/aidt-batch",
        "/etc/logrotate.d/aidt-batch",
        "/usr/share/aidt-batch/env.template",
        "/usr/share/man/man1/aidt-batch.1.gz",
        "/usr/share/bash-completion/completions/aidt-batch",
        "/usr/share/doc/aidt-batch/copyright",
    ] {
        assert!(files.iter().any(|f| f == wanted), "{wanted} in {files:#?}");
    }
    // No development profile with public secrets, no test tools, no env file.
    for unwanted in [
        "local.toml",
        "keris-simulator",
        "aidt-dev",
        "/etc/aidt-batch/env",
    ] {
        assert!(!files.iter().any(|f| f.ends_with(unwanted)), "{unwanted}");
    }
    // The cron file is the committed one; every file under /etc is a conffile.
    let dir = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["-R", deb().to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/cron.d/aidt-batch")).unwrap(),
        std::fs::read_to_string(repo().join("deploy/debian/cron.d")).unwrap()
    );
    let conffiles = std::fs::read_to_string(dir.path().join("DEBIAN/conffiles")).unwrap();
    for file in files
        .iter()
        .filter(|f| f.starts_with("/etc/") && !f.ends_with('/'))
    {
        assert!(
            conffiles.lines().any(|l| l == file),
            "{file} not a conffile: {conffiles}"
        );
    }
    let control = std::fs::read_to_string(dir.path().join("DEBIAN/control")).unwrap();
    let version = format!("Version: {}-", env!("CARGO_PKG_VERSION"));
    assert!(control.contains(&version), "{control}");
    let changelog = std::fs::read_to_string(repo().join("deploy/debian/changelog")).unwrap();
    assert!(
        changelog.starts_with(&format!("aidt-batch ({}-1)", env!("CARGO_PKG_VERSION"))),
        "deploy/debian/changelog's first entry is this version"
    );
}

#[test]
fn lintian_reports_no_error_on_the_package() {
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb())
        .output()
        .expect("lintian (scripts/install-deb-tools installs it)");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "lintian:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("E: ")),
        "lintian:\n{text}"
    );
}

/// What the test changed on the machine, undone when it ends, passing or not.
struct Installed {
    started_cron: Option<u32>,
    created_user: bool,
    role: Option<String>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let quiet = |program: &str, args: &[&str]| {
            let _ = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .output();
        };
        quiet("crontab", &["-u", "aidt", "-r"]);
        if let Some(pid) = self.started_cron.take() {
            quiet("kill", &[&pid.to_string()]);
        }
        let _ = wait_for(Duration::from_secs(30), || !aidt_batch_running());
        quiet("dpkg", &["--purge", PACKAGE]);
        let _ = std::fs::remove_dir_all(OPT);
        if self.created_user {
            quiet("userdel", &["aidt"]);
            let _ = std::fs::remove_dir_all("/var/lib/aidt-batch");
        }
        if let Some(role) = self.role.take() {
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        if let Ok(mut admin) = PgConnection::connect(&database_url()).await {
                            let sql = format!("DROP ROLE IF EXISTS {role}");
                            let _ = sqlx::query(&sql).execute(&mut admin).await;
                        }
                    })
            })
            .join();
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

/// Polls `done` every 200 ms until it holds or `deadline` has passed.
fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn aidt_batch_running() -> bool {
    Command::new("pgrep")
        .args(["-u", "aidt", "-x", "aidt-batch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// `stat -c FORMAT path`.
fn stat(format: &str, path: &str) -> String {
    stdout(&run("stat", &["-c", format, path]))
        .trim()
        .to_string()
}

/// The line of `text` that runs BO-01-005, rescheduled every minute; the
/// other jobs' lines commented out; the variable lines kept.
fn every_minute_bo_01_005_only(text: &str, user_field: bool) -> String {
    let mut out = String::new();
    let mut found = 0;
    for line in text.lines() {
        let is_job = line
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '*');
        if !is_job {
            out.push_str(line);
        } else if line.contains(" bo-01-005 ") {
            let fields = if user_field { 6 } else { 5 };
            let command = line.splitn(fields + 1, ' ').nth(fields).unwrap();
            let user = if user_field { "aidt " } else { "" };
            out.push_str(&format!("* * * * * {user}{command}"));
            found += 1;
        } else {
            out.push_str("# ");
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(found, 1, "one BO-01-005 line in:\n{text}");
    out
}

/// A role with [`PASSWORD`], member of the test databases' owner.
async fn password_role(admin: &mut PgConnection) -> String {
    let role = format!("pkg_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let owner: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    let sql = format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}' IN ROLE {owner}");
    sqlx::query(&sql).execute(&mut *admin).await.unwrap();
    role
}

/// The env file an operator writes for `env`'s databases, as `role` with
/// [`PASSWORD`]: TLS to PostgreSQL where the server offers it, as prod
/// wants, else allowed in clear explicitly.
async fn env_file_text(env: &TestEnv, role: &str) -> String {
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(env.pg())
        .await
        .unwrap();
    let url = url_for(&env.pg_name);
    let credentials = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(credentials, _)| credentials.to_string())
        .expect("DATABASE_URL names a user and password");
    let url = url.replacen(&credentials, &format!("{role}:{PASSWORD}"), 1);
    let (url, allow) = if ssl == "on" {
        (url.replace("sslmode=disable", "sslmode=require"), "")
    } else {
        (url, "AIDT__DATABASE__ALLOW_INSECURE=true\n")
    };
    format!(
        "# written by the package test\nAIDT_PROFILE=prod\nAIDT__DATABASE__URL={url}\n{allow}\
         AIDT__MONGO__URI={}\nAIDT__MONGO__DATABASE={}\n\
         AIDT__KERIS__API_DOMAIN=https://keris.invalid\n\
         AIDT__KERIS__PARTNERS__BRAND_A__PARTNER_ID={}\n\
         AIDT__JOBS__PRIVACY__AUDIT_SALT={}\n",
        mongodb_uri(),
        env.mongo_name,
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Waits (cron runs at the next full minute) for BO-01-005's first run in
/// `env`'s database to end, and asserts it COMPLETED.
async fn wait_for_cron_run(env: &TestEnv, form: &str) {
    let start = Instant::now();
    loop {
        let run: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT status, error_msg FROM batch_job_run WHERE job_id = 'BO-01-005' \
             AND status <> 'STARTED' ORDER BY run_id LIMIT 1",
        )
        .fetch_optional(env.pg())
        .await
        .unwrap();
        if let Some((status, error)) = run {
            let log = std::fs::read_to_string(LOG).unwrap_or_default();
            assert_eq!(status, "COMPLETED", "{form}: {error:?}\n{log}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "{form}: cron ran no BO-01-005 within 150 s; its log:\n{}",
            std::fs::read_to_string(LOG).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The log's `run finished: COMPLETED` lines of BO-01-005.
fn completed_log_lines() -> usize {
    std::fs::read_to_string(LOG)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["job_id"] == "BO-01-005"
                && v["run_id"].is_i64()
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("run finished: COMPLETED"))
        })
        .count()
}

#[tokio::test]
async fn the_package_installs_runs_jobs_from_cron_upgrades_removes_and_purges() {
    if !is_root() {
        eprintln!(
            "skipped: installing the .deb, starting cron and adding users need root (CI runs as root)"
        );
        return;
    }
    let deb = deb().to_str().unwrap().to_string();
    let mut lock = PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(INSTALL_LOCK)
        .execute(&mut lock)
        .await
        .unwrap();
    if let Some(version) = installed_version() {
        assert!(
            Path::new(MARKER).exists(),
            "aidt-batch {version} is installed on this machine, not by this test: not touching it"
        );
        run("dpkg", &["--purge", PACKAGE]);
    }
    let mut installed = Installed {
        started_cron: None,
        created_user: !user_exists("aidt"),
        role: None,
    };
    std::fs::write(MARKER, "").unwrap();

    // Install: the user, the log directory and the env file (mode 600, aidt).
    run("dpkg", &["-i", &deb]);
    assert!(user_exists("aidt"));
    assert_eq!(stat("%U:%G %a", "/var/log/aidt-batch"), "aidt:adm 2750");
    assert_eq!(stat("%U %a", ENV_FILE), "aidt 600");
    assert_eq!(
        std::fs::read_to_string(ENV_FILE).unwrap(),
        std::fs::read_to_string(repo().join("deploy/debian/env.template")).unwrap()
    );

    // Two test databases: the cron file's run and the user crontab's run
    // happen in the same minute without sharing BO-01-005's lock.
    let system = TestEnv::new().await;
    let user = TestEnv::new().await;
    let mut admin = PgConnection::connect(&database_url()).await.unwrap();
    let role = password_role(&mut admin).await;
    installed.role = Some(role.clone());
    std::fs::write(ENV_FILE, env_file_text(&system, &role).await).unwrap();
    assert_eq!(
        stat("%U %a", ENV_FILE),
        "aidt 600",
        "an edit keeps the mode"
    );

    // `check` reads the default env file, as aidt.
    let out = Command::new("runuser")
        .args([
            "-u",
            "aidt",
            "--",
            "aidt-batch",
            "check",
            "--profile",
            "prod",
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("env file /etc/aidt-batch/env") && text.contains("postgresql  OK"),
        "{text}{}",
        stderr(&out)
    );

    // The operator's edits: BO-01-005 every minute, the other jobs off, and a site setting.
    let cron_file = std::fs::read_to_string(CRON_FILE).unwrap();
    std::fs::write(CRON_FILE, every_minute_bo_01_005_only(&cron_file, true)).unwrap();
    let prod_toml = "/etc/aidt-batch/prod.toml";
    let site_edit = "\n[jobs.bo_01_001]\ninactive_days = 20\n";
    let mut prod = std::fs::read_to_string(prod_toml).unwrap();
    prod.push_str(site_edit);
    std::fs::write(prod_toml, &prod).unwrap();

    // The user-crontab form, for a host installed by hand under /opt/aidt-batch.
    install_by_hand(&user, &role).await;
    let crontab = stdout(&run("/usr/bin/aidt-batch", &["crontab"]));
    let crontab_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        crontab_file.path(),
        every_minute_bo_01_005_only(&crontab, false),
    )
    .unwrap();
    run(
        "crontab",
        &["-u", "aidt", crontab_file.path().to_str().unwrap()],
    );

    installed.started_cron = start_cron();
    wait_for_cron_run(&system, CRON_FILE).await;
    wait_for_cron_run(&user, "the user crontab").await;
    assert!(
        wait_for(Duration::from_secs(10), || completed_log_lines() >= 2),
        "{LOG}:\n{}",
        std::fs::read_to_string(LOG).unwrap_or_default()
    );
    let log = std::fs::read_to_string(LOG).unwrap();
    assert!(!log.contains("`x 9"), "no secret in the log");
    run("crontab", &["-u", "aidt", "-r"]);
    if let Some(pid) = installed.started_cron.take() {
        stop_cron(pid);
    }
    assert!(wait_for(Duration::from_secs(30), || !aidt_batch_running()));

    check_logrotate();
    let env_text = std::fs::read_to_string(ENV_FILE).unwrap();
    let cron_text = std::fs::read_to_string(CRON_FILE).unwrap();

    // Upgrade to a newer version of the same package: the edits stay, no prompt.
    let newer = tempfile::tempdir().unwrap();
    let newer_deb = repack_newer(&deb, newer.path());
    run("dpkg", &["-i", newer_deb.to_str().unwrap()]);
    assert_eq!(
        installed_version().unwrap(),
        format!("{}-1.1", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(std::fs::read_to_string(ENV_FILE).unwrap(), env_text);
    assert_eq!(std::fs::read_to_string(CRON_FILE).unwrap(), cron_text);
    assert!(std::fs::read_to_string(prod_toml)
        .unwrap()
        .ends_with(site_edit));
    assert_eq!(stat("%U %a", ENV_FILE), "aidt 600");
    assert!(Path::new(LOG).exists());

    // Remove: configuration, secrets and logs stay; the cron lines do nothing.
    run("dpkg", &["--remove", PACKAGE]);
    assert!(!Path::new("/usr/bin/aidt-batch").exists());
    for kept in [ENV_FILE, prod_toml, CRON_FILE, LOG] {
        assert!(Path::new(kept).exists(), "{kept} kept by remove");
    }
    let bo_line = cron_text
        .lines()
        .find(|l| l.starts_with("* * * * * aidt "))
        .unwrap();
    let command = bo_line.splitn(7, ' ').nth(6).unwrap();
    let log_before = std::fs::read_to_string(LOG).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "aidt", "--", "bash", "-c", command])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(LOG).unwrap(), log_before);

    // Purge: all of it goes; the user aidt stays, as Debian leaves users.
    run("dpkg", &["--purge", PACKAGE]);
    for gone in [
        "/etc/aidt-batch",
        CRON_FILE,
        "/var/log/aidt-batch",
        "/etc/logrotate.d/aidt-batch",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left by purge");
    }
    assert!(user_exists("aidt"));
    assert_eq!(installed_version(), None);
    drop(installed);
    drop(admin);
}

/// The user-crontab form's layout: /opt/aidt-batch/{bin,config,env}, as
/// README's install by hand puts it, with `env`'s databases.
async fn install_by_hand(env: &TestEnv, role: &str) {
    std::fs::create_dir_all(format!("{OPT}/bin")).unwrap();
    std::fs::create_dir_all(format!("{OPT}/config")).unwrap();
    std::fs::copy("/usr/bin/aidt-batch", format!("{OPT}/bin/aidt-batch")).unwrap();
    for file in ["base.toml", "prod.toml"] {
        std::fs::copy(
            format!("/etc/aidt-batch/{file}"),
            format!("{OPT}/config/{file}"),
        )
        .unwrap();
    }
    let env_path = format!("{OPT}/env");
    std::fs::write(&env_path, env_file_text(env, role).await).unwrap();
    run("chown", &["aidt:aidt", &env_path]);
    run("chmod", &["600", &env_path]);
}

/// The live (not zombie) processes named `cron`, oldest first.
fn cron_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state …"
            stat.split_once(" (")
                .and_then(|(_, rest)| rest.rsplit_once(") "))
                .is_some_and(|(comm, rest)| comm == "cron" && !rest.starts_with('Z'))
        })
        .collect();
    pids.sort();
    pids
}

/// Starts Debian's cron unless one runs already; returns the PID it started.
fn start_cron() -> Option<u32> {
    if !cron_pids().is_empty() {
        return None;
    }
    // As from a clean boot: the daemon's own environment is not the test's.
    let status = Command::new("cron")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cron (scripts/install-deb-tools installs it)");
    assert!(status.success(), "cron: {status}");
    // The daemon forks away (its pid file may still name an old one).
    let mut pid = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            pid = cron_pids().last().copied();
            pid.is_some()
        }),
        "no cron process after starting it"
    );
    pid
}

/// Stops the cron daemon this test started, and waits until it is gone.
fn stop_cron(pid: u32) {
    run("kill", &[&pid.to_string()]);
    assert!(wait_for(Duration::from_secs(10), || !cron_pids().contains(&pid)));
}

/// The package's logrotate rule: accepted by `logrotate -d`, and a forced
/// rotation keeps the old lines and leaves a fresh log the jobs can append to.
fn check_logrotate() {
    let rule = "/etc/logrotate.d/aidt-batch";
    let out = run("logrotate", &["-d", rule]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("/var/log/aidt-batch/*.log"), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
    let state = tempfile::NamedTempFile::new().unwrap();
    let before = std::fs::read_to_string(LOG).unwrap();
    run(
        "logrotate",
        &["--force", "--state", state.path().to_str().unwrap(), rule],
    );
    assert_eq!(std::fs::read_to_string(format!("{LOG}.1")).unwrap(), before);
    assert_eq!(std::fs::read_to_string(LOG).unwrap(), "");
    assert_eq!(stat("%U:%G %a", LOG), "aidt:adm 640");
}

/// The same package as version `<version>-1.1`: a newer one to upgrade to.
fn repack_newer(deb: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    run("dpkg-deb", &["-R", deb, tree.to_str().unwrap()]);
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&version), "{text}");
    let newer = version.replace("-1\n", "-1.1\n");
    std::fs::write(&control, text.replace(&version, &newer)).unwrap();
    let out = dir.join("newer.deb");
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-b",
            tree.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}
