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
