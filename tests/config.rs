//! Configuration errors name the key at fault; secrets never print.

use crate::helpers::*;

fn run_with(envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(args).env("AIDT_CONFIG_DIR", config_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let out = run_with(&[("AIDT__DATABASE__URLL", "x")], &["bo-01-005"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("urll"), "{err}");
}

#[test]
fn an_unknown_key_in_a_config_file_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extra.toml");
    std::fs::write(&file, "[jobs.lms_01_001]\nretention_days = 3\n").unwrap();
    let out = run_with(&[], &["lms-01-001", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("retention_days"), "{}", stderr(&out));
}

#[test]
fn an_unknown_job_section_or_a_key_a_job_does_not_have_is_named() {
    for (var, value, wanted) in [
        ("AIDT__JOBS__LMS_01_099__BATCH_SIZE", "3", "jobs.lms_01_099"),
        ("AIDT__JOBS__BO_01_005__BATCH_SIZE", "3", "batch_size"),
        (
            "AIDT__JOBS__DC_01_001__LOCK_WAIT_SECS",
            "soon",
            "jobs.dc_01_001.lock_wait_secs",
        ),
    ] {
        // Any command that loads the configuration checks every job's section.
        let out = run_with(&[(var, value)], &["bo-01-002"]);
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = stderr(&out);
        assert!(err.contains(wanted), "{var}: {err}");
    }
}

#[test]
fn a_missing_required_key_names_the_key_and_its_variable() {
    // The dev profile has no database URL: it must come from the environment.
    let out = run_with(&[], &["bo-01-005", "--profile", "dev"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`database.url`") && err.contains("AIDT__DATABASE__URL"),
        "{err}"
    );
}

#[test]
fn an_out_of_range_value_names_the_key_and_the_range() {
    for (var, value, key, reason) in [
        (
            "AIDT__JOBS__KERIS_TRANSFER__SENT_MARKS_PER_COMMAND",
            "0",
            "jobs.keris_transfer.sent_marks_per_command",
            "between 1 and 100000",
        ),
        (
            "AIDT__JOBS__LRS_AGGREGATE__WRITES_IN_FLIGHT",
            "0",
            "jobs.lrs_aggregate.writes_in_flight",
            "between 1 and 16",
        ),
        (
            "AIDT__JOBS__LRS_AGGREGATE__ATTEMPTS_EXTENSION",
            "attempts",
            "jobs.lrs_aggregate.attempts_extension",
            "IRI",
        ),
    ] {
        let out = run_with(&[(var, value)], &["dc-01-001"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains(reason), "{err}");
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let out = run_with(&[], &["bo-01-005", "--config", "/nonexistent/extra.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/extra.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secrets_in_bad_values_are_not_printed() {
    let password = "s3cr3t-Pa55word";
    let partner = "not-a-uuid-but-secret-partner";
    let out = run_with(
        &[
            (
                "AIDT__DATABASE__URL",
                &format!("postgres://aidt:{password}@127.0.0.1:1/aidt?sslmode=disable"),
            ),
            ("AIDT__KERIS__PARTNERS__DEMO__PARTNER_ID", partner),
        ],
        &["bo-01-005"],
    );
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("keris.partners.demo.partner_id"), "{all}");
    assert!(!all.contains(partner) && !all.contains(password), "{all}");

    // A valid configuration whose database is unreachable: the error names the
    // host and the key, never the password.
    let out = run_with(
        &[(
            "AIDT__DATABASE__URL",
            &format!("postgres://aidt:{password}@127.0.0.1:1/aidt?sslmode=disable"),
        )],
        &["bo-01-005"],
    );
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("127.0.0.1:1") && all.contains("database.url"),
        "{all}"
    );
    assert!(!all.contains(password), "{all}");
}

#[test]
fn settings_debug_output_redacts_secrets() {
    let loaded =
        aidt_batch::config::load_from(&config_dir(), aidt_batch::config::Profile::Local, None)
            .unwrap();
    let debug = format!("{:?}", loaded.settings);
    assert!(!debug.contains("aidt:aidt@"), "{debug}");
    assert!(
        !debug.contains("0b6a4a8e-3f4c-4d0e-9a51-2d1f6f1c0001"),
        "{debug}"
    );
}

/// Loads `profile` in-process with `vars` as the whole environment.
fn load_with(
    profile: aidt_batch::config::Profile,
    vars: &[(&str, &str)],
) -> Result<aidt_batch::config::LoadedConfig, aidt_batch::config::ConfigError> {
    let env: ::config::Map<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    aidt_batch::config::load_with_env(&config_dir(), profile, None, Some(env))
}

/// What a site gives `dev` and `prod`: no repository value, TLS to the database.
const SITE: [(&str, &str); 4] = [
    (
        "AIDT__DATABASE__URL",
        "postgres://batch:site-pw@db.example.kr/aidt?sslmode=verify-full",
    ),
    ("AIDT__MONGO__URI", "mongodb://mongo.example.kr/"),
    ("AIDT__KERIS__API_DOMAIN", "https://keris.example.kr"),
    (
        "AIDT__KERIS__PARTNERS__BRAND_A__PARTNER_ID",
        "7d1c7a52-0a4e-4c55-8f0b-4c3a3b7e9a10",
    ),
];

fn site_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars = SITE.to_vec();
    vars.extend_from_slice(extra);
    vars
}

#[test]
fn environment_values_are_text_so_secrets_keep_leading_zeros_and_exponents() {
    use secrecy::ExposeSecret;
    let vars = site_with(&[
        ("AIDT__JOBS__BO_05_006__SMTP__USERNAME", "mailer"),
        ("AIDT__JOBS__BO_05_006__SMTP__PASSWORD", "0123"),
        ("AIDT__JOBS__PRIVACY__AUDIT_SALT", "1e3"),
        ("AIDT__JOBS__LMS_01_009__PSEUDONYM_KEY", "000100"),
        // Numbers and switches still read as numbers and switches.
        ("AIDT__DATABASE__MAX_CONNECTIONS", "3"),
        ("AIDT__KERIS__REQUESTS_PER_SECOND", "2.5"),
        ("AIDT__JOBS__LMS_01_009__S3__PATH_STYLE", "false"),
    ]);
    let loaded = load_with(aidt_batch::config::Profile::Prod, &vars).unwrap();
    let settings = &loaded.settings;
    let mail: aidt_batch::jobs::bo::login_stats::usage_mail::UsageMailSettings = settings
        .jobs
        .own_section("bo_05_006")
        .try_deserialize()
        .unwrap();
    assert_eq!(mail.smtp.password.unwrap().expose_secret(), "0123");
    let salt = settings.jobs.privacy.audit_salt.as_ref().unwrap();
    assert_eq!(salt.expose_secret(), "1e3");
    let dataset: aidt_batch::jobs::lms::llm_dataset::LlmDatasetSettings = settings
        .jobs
        .own_section("lms_01_009")
        .try_deserialize()
        .unwrap();
    assert_eq!(dataset.pseudonym_key.unwrap().expose_secret(), "000100");
    assert!(!dataset.s3.path_style);
    assert_eq!(settings.database.max_connections, 3);
    assert_eq!(settings.keris.requests_per_second, 2.5);
}

#[test]
fn outside_local_the_repositorys_secrets_and_empty_ones_are_refused_naming_the_key() {
    use aidt_batch::config::Profile;
    let local = std::fs::read_to_string(config_dir().join("local.toml")).unwrap();
    for (var, value, key) in [
        (
            "AIDT__KERIS__PARTNERS__BRAND_B__PARTNER_ID",
            "0b6a4a8e-3f4c-4d0e-9a51-2d1f6f1c0001",
            "keris.partners.brand_b.partner_id",
        ),
        (
            "AIDT__JOBS__PRIVACY__AUDIT_SALT",
            LOCAL_AUDIT_SALT,
            "jobs.privacy.audit_salt",
        ),
        (
            "AIDT__JOBS__LMS_01_009__PSEUDONYM_KEY",
            "local-llm-dataset-pseudonym-key",
            "jobs.lms_01_009.pseudonym_key",
        ),
        (
            "AIDT__DATABASE__URL",
            "postgres://aidt:aidt@127.0.0.1:5432/aidt?sslmode=disable",
            "database.url",
        ),
        (
            "AIDT__JOBS__PRIVACY__AUDIT_SALT",
            "",
            "jobs.privacy.audit_salt",
        ),
        (
            "AIDT__JOBS__BO_05_006__SMTP__PASSWORD",
            "",
            "jobs.bo_05_006.smtp.password",
        ),
    ] {
        assert!(
            value.is_empty() || local.contains(value),
            "{value} ships in local.toml"
        );
        let vars = site_with(&[(var, value)]);
        for profile in [Profile::Dev, Profile::Prod] {
            let err = load_with(profile, &vars).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{profile} {var}: {err}");
            assert!(value.is_empty() || !err.contains(value), "{err}");
        }
        // `local` is where the repository's values belong.
        if !value.is_empty() {
            load_with(Profile::Local, &vars).unwrap_or_else(|e| panic!("local {var}: {e}"));
        }
    }
    // The site's own values pass.
    load_with(Profile::Prod, &SITE).unwrap();
}

#[test]
fn prod_refuses_clear_text_transport_unless_allow_insecure_says_so() {
    use aidt_batch::config::Profile;
    let refused = [
        (
            "AIDT__KERIS__API_DOMAIN",
            "http://keris.example.kr",
            "keris.api_domain",
            "keris.allow_insecure",
        ),
        (
            "AIDT__DATABASE__URL",
            "postgres://batch:pw-9@db.example.kr/aidt",
            "database.url",
            "database.allow_insecure",
        ),
        (
            "AIDT__DATABASE__URL",
            "postgres://batch:pw-9@db.example.kr/aidt?sslmode=prefer",
            "database.url",
            "database.allow_insecure",
        ),
        (
            "AIDT__JOBS__LCMS_COPY__SOURCE_URL",
            "postgres://lcms:pw-9@lcms.example.kr/lcms?sslmode=disable",
            "jobs.lcms_copy.source_url",
            "database.allow_insecure",
        ),
    ];
    for (var, value, key, switch) in refused {
        let vars = site_with(&[(var, value)]);
        let err = load_with(Profile::Prod, &vars).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(switch),
            "{var}: {err}"
        );
        assert!(!err.contains("pw-9"), "{err}");
        // Elsewhere it is no concern of the configuration.
        load_with(Profile::Dev, &vars).unwrap();
        // Allowed explicitly: loads, and says what it allows.
        let allow = format!("AIDT__{}", switch.replace('.', "__").to_uppercase());
        let mut vars = vars.clone();
        vars.push((allow.as_str(), "true"));
        let loaded = load_with(Profile::Prod, &vars).unwrap();
        let insecure: Vec<String> = aidt_batch::commands::insecure_transport(&loaded)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(insecure, [key], "{var}");
    }
    for url in [
        "postgres://batch:pw@db.example.kr/aidt?sslmode=require",
        "postgres://batch:pw@db.example.kr/aidt?sslmode=verify-ca",
        "postgres://batch@%2Fvar%2Frun%2Fpostgresql/aidt",
    ] {
        let vars = site_with(&[("AIDT__DATABASE__URL", url)]);
        let loaded = load_with(Profile::Prod, &vars).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(aidt_batch::commands::insecure_transport(&loaded).is_empty());
    }
}

/// `aidt-batch args…` with this test's MongoDB, a made-up Partner-ID, an
/// https KERIS nobody calls, and no database URL: the test gives that.
fn site_command(env: &TestEnv, args: &[&str]) -> std::process::Command {
    let mut cmd = bin();
    cmd.args(args)
        .env("AIDT_CONFIG_DIR", config_dir())
        .env("AIDT__MONGO__URI", mongodb_uri())
        .env("AIDT__MONGO__DATABASE", &env.mongo_name)
        .env("AIDT__KERIS__API_DOMAIN", "https://keris.invalid")
        .stdin(std::process::Stdio::null());
    cmd
}

/// The (profile, insecure transport) of the BO-01-005 runs, oldest first.
async fn bo_01_005_runs(env: &TestEnv) -> Vec<(String, Option<serde_json::Value>)> {
    sqlx::query_as(
        "SELECT params->>'profile', params->'insecure_transport' FROM batch_job_run \
         WHERE job_id = 'BO-01-005' AND status = 'COMPLETED' ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
}

const PARTNER_VAR: &str = "AIDT__KERIS__PARTNERS__BRAND_A__PARTNER_ID";
const PARTNER: &str = "5c7e0f7a-3d2b-4f1e-9a6c-8b4d2e1f0a37";

#[tokio::test]
async fn an_env_file_supplies_the_environment_and_a_variable_already_set_wins() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    // `dev` has no database URL of its own: only the file can give it.
    let file = dir.path().join("env");
    let text = format!(
        "# the test's database\n\n  AIDT__DATABASE__URL={}\n{PARTNER_VAR}={PARTNER}\n",
        url_for(&env.pg_name)
    );
    std::fs::write(&file, text).unwrap();
    let out = site_command(&env, &["bo-01-005", "--profile", "dev", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // AIDT_ENV_FILE names it too; the environment's URL wins over the file's
    // unreachable one, and the file still gives the Partner-ID.
    let other = dir.path().join("other");
    std::fs::write(
        &other,
        format!(
            "AIDT__DATABASE__URL=postgres://aidt:x@127.0.0.1:1/none\n{PARTNER_VAR}={PARTNER}\n"
        ),
    )
    .unwrap();
    let out = site_command(&env, &["bo-01-005", "--profile", "dev"])
        .env("AIDT_ENV_FILE", &other)
        .env("AIDT__DATABASE__URL", url_for(&env.pg_name))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(bo_01_005_runs(&env).await.len(), 2);
}

#[test]
fn a_missing_or_malformed_env_file_is_named_and_its_lines_never_printed() {
    let out = bin()
        .args(["bo-01-005", "--env-file", "/nonexistent/aidt-env"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("env file /nonexistent/aidt-env"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    std::fs::write(&file, "AIDT_PROFILE=dev\nhunter2 s3cret pasted alone\n").unwrap();
    let out = bin()
        .arg("check")
        .env("AIDT_ENV_FILE", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("line 2"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn aidt_profile_from_the_env_file_sets_the_default_and_the_flag_wins() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    // The test database takes no TLS (sslmode=disable): prod refuses it.
    let lines = format!(
        "AIDT_PROFILE=prod\nAIDT__DATABASE__URL={}\n{PARTNER_VAR}={PARTNER}\n",
        url_for(&env.pg_name)
    );
    std::fs::write(&file, &lines).unwrap();
    let out = site_command(&env, &["bo-01-005", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`database.url`") && err.contains("sslmode=disable"),
        "{err}"
    );
    // --profile wins over AIDT_PROFILE.
    let out = site_command(&env, &["bo-01-005", "--profile", "dev", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Allowed explicitly, prod runs, warns in the run's log and records it.
    std::fs::write(
        &file,
        format!("{lines}AIDT__DATABASE__ALLOW_INSECURE=true\n"),
    )
    .unwrap();
    let out = site_command(&env, &["bo-01-005", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warning = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "WARN" && v["fields"]["key"] == "database.url")
        .unwrap_or_else(|| panic!("a warning naming database.url: {err}"));
    assert_eq!(warning["job_id"], "BO-01-005", "{warning}");
    assert_eq!(
        bo_01_005_runs(&env).await,
        [
            ("dev".to_string(), None),
            (
                "prod".to_string(),
                Some(serde_json::json!(["database.url"]))
            )
        ]
    );

    let out = site_command(&env, &["bo-01-005"])
        .env("AIDT_PROFILE", "staging")
        .env("AIDT_ENV_FILE", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("AIDT_PROFILE") && err.contains("staging"),
        "{err}"
    );
}
