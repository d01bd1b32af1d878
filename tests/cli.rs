//! The command line as an operator meets it: real processes, real exit codes.

use crate::helpers::*;

#[test]
fn unknown_job_id_exits_2_suggesting_the_closest_and_listing_all() {
    let out = bin().arg("lms-01-01").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown job id or command `lms-01-01`"),
        "{err}"
    );
    assert!(err.contains("did you mean `lms-01-001`"), "{err}");
    for id in [
        "lms-01-001",
        "dc-01-004",
        "lcms-01-001",
        "bo-05-006",
        "bo-01-007",
    ] {
        assert!(err.contains(id), "valid ids listed: {err}");
    }
}

#[test]
fn bad_date_exits_2_naming_the_flag_and_value() {
    let out = bin()
        .args(["bo-01-005", "--date", "2026-13-01"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--date") && err.contains("2026-13-01"),
        "{err}"
    );
}

#[test]
fn bad_flag_and_bad_profile_exit_2() {
    let out = bin().args(["bo-01-005", "--dryrun"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--dryrun"), "{}", stderr(&out));

    let out = bin()
        .args(["bo-01-005", "--profile", "staging"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("staging"), "{}", stderr(&out));
}

#[test]
fn a_registered_but_unimplemented_job_exits_2_and_says_so() {
    // Whichever job still runs on its Java JAR.
    let Some(def) = aidt_batch::jobs::REGISTRY
        .iter()
        .find(|d| !d.is_implemented())
    else {
        return;
    };
    let out = bin()
        .args([def.id])
        .env("AIDT_CONFIG_DIR", config_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{} is registered but not implemented yet", def.id)),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_lists_every_job_id() {
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for job in aidt_batch::jobs::REGISTRY.iter() {
        assert!(
            text.contains(&job.cli_name()),
            "{} missing from --help",
            job.id
        );
    }
}

#[tokio::test]
async fn job_ids_are_accepted_in_upper_case_and_run() {
    let env = TestEnv::new().await;
    let out = env.run_cli(&["BO-01-005", "--profile", "local"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job: String = sqlx::query_scalar("SELECT job_id FROM batch_job_run")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(job, "BO-01-005");
}

#[test]
fn each_jobs_help_says_what_that_job_does_and_how_it_locks() {
    let mut seen = std::collections::BTreeSet::new();
    for job in aidt_batch::jobs::REGISTRY.iter() {
        let out = bin().args([&job.cli_name(), "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", job.id);
        let text = stdout(&out);
        assert!(text.contains(job.about), "{}: {text}", job.id);
        assert!(
            text.contains("Lock: ") && text.contains("lock_wait_secs"),
            "{text}"
        );
        let timeouts = format!(
            "Timeouts: a statement {} s, a row or table lock {} s, a MongoDB read {} s",
            job.timeouts.statement_secs, job.timeouts.lock_secs, job.timeouts.mongo_secs
        );
        assert!(text.contains(&timeouts), "{text}");
        assert!(
            !text.contains("The options of every job subcommand"),
            "{text}"
        );
        if job.is_implemented() {
            assert!(
                seen.insert(job.about),
                "{} repeats another job's help",
                job.id
            );
        }
    }
    let dc = stdout(&bin().args(["dc-01-002", "--help"]).output().unwrap());
    assert!(
        dc.contains("DC-01-001") && dc.contains("LRS-01-001") && dc.contains("keris-xapi"),
        "a group job names the jobs it never runs beside: {dc}"
    );
}

#[test]
fn full_is_an_option_of_lms_01_008_only() {
    let help = stdout(&bin().args(["lms-01-008", "--help"]).output().unwrap());
    assert!(help.contains("--full"), "{help}");
    let out = bin().args(["lms-01-001", "--full"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--full"), "{}", stderr(&out));
}

/// The tables and collections of the data contract and the batch's own
/// tables, read from the schema files (not from the jobs' code).
fn stored_names() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: std::collections::BTreeSet<String> = ["statements", "keris_batch_data"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut files = vec![root.join("contract/0001_contract_tables.sql")];
    files.extend(
        std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql")),
    );
    for file in files {
        let sql = std::fs::read_to_string(&file).unwrap();
        for part in sql.split("CREATE TABLE").skip(1) {
            let part = part.trim_start().trim_start_matches("IF NOT EXISTS");
            let name = part.split_whitespace().next().unwrap();
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn each_implemented_jobs_help_names_a_table_or_collection_it_reads_or_writes() {
    let names = stored_names();
    assert!(names.contains("tb_bo_notice") && names.contains("tb_dc_error_data_info"));
    for job in aidt_batch::jobs::REGISTRY
        .iter()
        .filter(|j| j.is_implemented())
    {
        let out = bin().args([&job.cli_name(), "--help"]).output().unwrap();
        let text = stdout(&out);
        assert!(
            text.contains(job.id) && text.contains(job.name_en),
            "{}: {text}",
            job.id
        );
        let named: Vec<&String> = names
            .iter()
            .filter(|n| {
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == n.as_str())
            })
            .collect();
        assert!(
            !named.is_empty(),
            "{}'s --help names no table or collection it reads or writes: {}",
            job.id,
            job.about
        );
    }
}
