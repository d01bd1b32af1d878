//! Builds the crontab from the job registry. `crontab/aidt-batch` is this
//! output for the `prod` profile, committed; a test fails when they differ.

use std::fmt::Write as _;

use super::registry::{Registry, Schedule};
use crate::config::Profile;

/// Where the deployment puts the binary, its configuration and its logs.
pub const INSTALL_DIR: &str = "/opt/aidt-batch";
pub const LOG_DIR: &str = "/var/log/aidt-batch";

/// The crontab for `profile`.
pub fn render(jobs: &Registry, profile: Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# aidt-batch crontab for the `{profile}` profile.");
    out.push_str(
        "# Generated from the job registry by `aidt-batch crontab --profile <profile>`: do not edit by hand.\n\
         # Install as the batch owner: crontab -u aidt crontab/aidt-batch\n\
         # Times are Asia/Seoul; the host's time zone must be Asia/Seoul (KST, no DST).\n\
         # Secrets (AIDT__DATABASE__URL, AIDT__KERIS__PARTNERS__<NAME>__PARTNER_ID, ...) come from\n\
         # /opt/aidt-batch/env, readable by aidt only, sourced by each line.\n",
    );
    let _ = writeln!(out, "SHELL=/bin/bash");
    let _ = writeln!(out, "AIDT_CONFIG_DIR={INSTALL_DIR}/config");
    out.push('\n');
    for job in jobs.iter() {
        let _ = writeln!(
            out,
            "# {} [{}] {} / {}",
            job.id,
            job.system.as_str(),
            job.name_en,
            job.name_ko
        );
        if let Some(note) = job.schedule_note {
            let _ = writeln!(out, "#   schedule: {note}");
        }
        let command = format!(
            ". {INSTALL_DIR}/env && {INSTALL_DIR}/bin/aidt-batch {} --profile {profile} >> {LOG_DIR}/{}.log 2>&1",
            job.cli_name(),
            job.cli_name()
        );
        match (job.schedule, job.is_implemented()) {
            (Schedule::Cron(expr), true) => {
                let _ = writeln!(out, "{expr} {command}");
            }
            (Schedule::Cron(expr), false) => {
                let _ = writeln!(
                    out,
                    "#   not implemented in aidt-batch yet: still run by the Java batch JAR"
                );
                let _ = writeln!(out, "# {expr} {command}");
            }
            (Schedule::Unscheduled(reason), _) => {
                let _ = writeln!(out, "#   unscheduled: {reason}; run by hand when needed");
                let _ = writeln!(out, "# (no schedule) {command}");
            }
        }
        out.push('\n');
    }
    out
}
