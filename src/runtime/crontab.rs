//! Builds the crontabs from the job registry, in the two forms a host takes:
//!
//! - [`Form::System`]: `/etc/cron.d/aidt-batch`, which the Debian package
//!   installs (a user field on each line; the binary in `/usr/bin`, the
//!   configuration and the env file in `/etc/aidt-batch`). Committed as
//!   `deploy/debian/cron.d`.
//! - [`Form::User`]: a user crontab for a host installed by hand under
//!   `/opt/aidt-batch` (`crontab -u aidt crontab/aidt-batch`). Committed as
//!   `crontab/aidt-batch`.
//!
//! Tests fail while a committed file differs from this output. No line
//! sources the env file: `AIDT_ENV_FILE` names it and the binary reads it
//! literally (`crate::env_file`), so a `$` or a backtick in a password
//! arrives unchanged.

use std::fmt::Write as _;

use super::registry::{JobDef, Registry, Schedule};
use crate::config::Profile;

/// Where a host installed by hand keeps the binary, its configuration and
/// its env file.
pub const INSTALL_DIR: &str = "/opt/aidt-batch";
/// Where every job's output is appended, one file per job.
pub const LOG_DIR: &str = "/var/log/aidt-batch";
/// The system user the jobs run as.
pub const USER: &str = "aidt";
/// The zone of every schedule (the seed's times are Korean).
pub const TIME_ZONE: &str = "Asia/Seoul";

/// Which crontab to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `/etc/cron.d/aidt-batch` of the Debian package.
    System,
    /// A user crontab for a host without the package.
    User,
}

/// Where a form's lines find things.
struct Layout {
    file: &'static str,
    install: &'static str,
    generate: &'static str,
    bin: String,
    config_dir: String,
    env_file: String,
    /// `aidt ` in the system form, nothing in a user crontab.
    user_field: String,
    /// `[ -x BIN ] && ` in the system form: a removed (not purged) package
    /// leaves its conffile, and its lines then do nothing.
    guard: String,
}

impl Form {
    fn layout(self) -> Layout {
        match self {
            Form::System => Layout {
                file: "/etc/cron.d/aidt-batch",
                install: "installed by the aidt-batch Debian package (a conffile: local edits survive upgrades)",
                generate: "aidt-batch crontab --system",
                bin: "/usr/bin/aidt-batch".into(),
                config_dir: "/etc/aidt-batch".into(),
                env_file: crate::env_file::DEFAULT_ENV_FILE.into(),
                user_field: format!("{USER} "),
                guard: "[ -x /usr/bin/aidt-batch ] && ".into(),
            },
            Form::User => Layout {
                file: "the crontab of user aidt",
                install: "install as the batch owner: crontab -u aidt crontab/aidt-batch",
                generate: "aidt-batch crontab",
                bin: format!("{INSTALL_DIR}/bin/aidt-batch"),
                config_dir: format!("{INSTALL_DIR}/config"),
                env_file: format!("{INSTALL_DIR}/env"),
                user_field: String::new(),
                guard: String::new(),
            },
        }
    }
}

/// The crontab of `form` for `profile`.
pub fn render(jobs: &Registry, profile: Profile, form: Form) -> String {
    let layout = form.layout();
    let mut out = header(&layout, profile);
    for job in jobs.iter() {
        job_lines(&mut out, &layout, job, profile);
        out.push('\n');
    }
    out
}

fn header(layout: &Layout, profile: Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# aidt-batch: the jobs' schedule, `{profile}` profile, for {}.",
        layout.file
    );
    let _ = writeln!(
        out,
        "# Generated from the job registry by `{} --profile <profile>`: do not edit by hand;\n\
         # {}.",
        layout.generate, layout.install
    );
    let _ = writeln!(
        out,
        "# Times are {TIME_ZONE} (CRON_TZ). Debian's `cron` ignores CRON_TZ: there the host's own time zone\n\
         # must be {TIME_ZONE} (`timedatectl set-timezone {TIME_ZONE}`, or /etc/localtime).\n\
         # Secrets are KEY=value lines in {} (mode 600, owner {USER}): aidt-batch reads them itself\n\
         # (AIDT_ENV_FILE), literally; no line sources the file. Output goes to {LOG_DIR}/<job>.log.",
        layout.env_file
    );
    let _ = writeln!(out, "SHELL=/bin/bash");
    let _ = writeln!(out, "PATH=/usr/sbin:/usr/bin:/sbin:/bin");
    let _ = writeln!(out, "CRON_TZ={TIME_ZONE}");
    let _ = writeln!(out, "AIDT_CONFIG_DIR={}", layout.config_dir);
    let _ = writeln!(out, "AIDT_ENV_FILE={}", layout.env_file);
    out.push('\n');
    out
}

/// A job's comment and its lines: one per scheduled start, commented out
/// while the job is not implemented; an unscheduled job's command as a
/// comment, to copy for a run by hand.
fn job_lines(out: &mut String, layout: &Layout, job: &JobDef, profile: Profile) {
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
    if let Schedule::Unscheduled(reason) = job.schedule {
        let _ = writeln!(out, "#   unscheduled: {reason}; run by hand when needed");
        let _ = writeln!(
            out,
            "# (no schedule) {}",
            command(layout, job, profile, &[])
        );
    }
    for run in job.scheduled_runs() {
        let line = format!(
            "{} {}{}{}",
            run.cron,
            layout.user_field,
            layout.guard,
            command(layout, job, profile, run.args)
        );
        if !run.why.is_empty() {
            let _ = writeln!(out, "#   also: {}", run.why);
        }
        if job.is_implemented() {
            let _ = writeln!(out, "{line}");
        } else {
            let _ = writeln!(
                out,
                "#   not implemented in aidt-batch yet: still run by the Java batch JAR\n# {line}"
            );
        }
    }
}

/// `aidt-batch <job> --profile P [args] >> <log> 2>&1`.
fn command(layout: &Layout, job: &JobDef, profile: Profile, args: &[&str]) -> String {
    let name = job.cli_name();
    let mut words = vec![layout.bin.clone(), name.clone(), "--profile".into()];
    words.push(profile.to_string());
    words.extend(args.iter().map(|a| a.to_string()));
    format!("{} >> {LOG_DIR}/{name}.log 2>&1", words.join(" "))
}
