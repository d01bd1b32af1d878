//! Builds the Kubernetes manifests from the job registry, as [`super::crontab`]
//! builds the crontab: a CronJob per scheduled job and the ConfigMap they
//! read. `deploy/k8s/` is this output, committed; a test fails when they
//! differ and validates every file against the Kubernetes schemas.
//!
//! Kubernetes does the scheduling, as cron does on a host: the pods run the
//! image's `aidt-batch <job-id> --profile prod` unchanged. Site settings come
//! from the ConfigMap `aidt-batch-config` (a `site.toml` passed as
//! `--config`), secrets from the Secret `aidt-batch-secrets` as `AIDT__…`
//! variables; this module names them and never holds a value.

use std::fmt::Write as _;

use super::registry::{JobDef, Registry, ScheduledRun};

/// The ConfigMap holding `site.toml`.
pub const CONFIG_MAP: &str = "aidt-batch-config";
/// The Secret whose keys become the container's environment.
pub const SECRET: &str = "aidt-batch-secrets";
/// Where the ConfigMap is mounted.
pub const SITE_DIR: &str = "/etc/aidt-batch/site";
/// The container's name (podFailurePolicy rules name it).
pub const CONTAINER: &str = "aidt-batch";
/// The image's `aidt` user and group.
pub const UID: u32 = 10001;
/// The environment variable with the partition count of an Indexed Job; the
/// binary takes its partition from `JOB_COMPLETION_INDEX`.
pub const PARTITIONS_ENV: &str = "AIDT_PARTITIONS";
/// Exit codes a retry cannot fix: 2 configuration, 3 lock busy.
pub const NEVER_RETRIED: [u8; 2] = [2, 3];

/// What the manifests are built with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image the pods run (an overlay sets the registry and tag).
    pub image: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            image: format!("aidt-batch:{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// One generated file: its name in `deploy/k8s/` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub file: String,
    pub text: String,
}

/// The manifests: the ConfigMap, then one CronJob per scheduled job in the
/// registry's order (a job not implemented yet is `suspend: true`, as its
/// crontab line is commented out; an unscheduled job has none).
pub fn render(jobs: &Registry, options: &Options) -> Vec<Manifest> {
    let mut out = vec![Manifest {
        file: "configmap.yaml".into(),
        text: config_map(),
    }];
    for job in jobs.iter() {
        let partitions = job.k8s_partitions;
        for run in job.scheduled_runs() {
            out.push(Manifest {
                file: format!("cronjob-{}.yaml", cron_job_name(job, &run)),
                text: cron_job(job, &run, &options.image, partitions),
            });
        }
    }
    out
}

/// `<job>` for a job's own schedule, `<job>-<name>` for another start.
fn cron_job_name(job: &JobDef, run: &ScheduledRun) -> String {
    match run.name {
        "" => job.cli_name(),
        name => format!("{}-{name}", job.cli_name()),
    }
}

/// Every manifest as one multi-document YAML stream.
pub fn render_stream(jobs: &Registry, options: &Options) -> String {
    render(jobs, options)
        .into_iter()
        .map(|m| m.text)
        .collect::<Vec<_>>()
        .join("---\n")
}

const HEADER: &str =
    "# Generated from the job registry by `aidt-batch k8s --out deploy/k8s`: do not edit by hand\n\
# (a test fails while it differs); change site values in an overlay (see docs/operating.md, Kubernetes).\n";

/// A double-quoted YAML scalar (JSON's quoting is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn labels(out: &mut String, indent: usize, component: &str) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}app.kubernetes.io/name: aidt-batch");
    let _ = writeln!(out, "{pad}app.kubernetes.io/component: {}", q(component));
    let _ = writeln!(out, "{pad}app.kubernetes.io/managed-by: aidt-batch-k8s");
}

fn config_map() -> String {
    let mut out = String::from(HEADER);
    out.push_str("# Site settings, layered over the image's /etc/aidt-batch/{base,prod}.toml by `--config`.\n");
    out.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata:\n");
    let _ = writeln!(out, "  name: {CONFIG_MAP}");
    out.push_str("  labels:\n");
    labels(&mut out, 4, "config");
    out.push_str("data:\n  site.toml: |\n");
    for line in [
        "# Layered over /etc/aidt-batch/base.toml and prod.toml; the environment",
        "# (Secret aidt-batch-secrets: AIDT__DATABASE__URL, AIDT__MONGO__URI,",
        "# AIDT__KERIS__PARTNERS__<NAME>__PARTNER_ID, AIDT__JOBS__PRIVACY__AUDIT_SALT, ...,",
        "# made from a host's env file: kubectl create secret generic aidt-batch-secrets",
        "# --from-env-file=/etc/aidt-batch/env) overrides it. No secrets here.",
        "#",
        "# [keris]",
        "# api_domain = \"https://<the KERIS endpoint>\"",
        "#",
        "# [metrics]",
        "# pushgateway_url = \"http://pushgateway.monitoring.svc:9091\"",
        "#",
        "# [jobs.keris_transfer]",
        "# read_batch_size = 1000",
    ] {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// Seconds between two starts of `expr`, as far as the deadlines need it:
/// `*/N` minutes, hourly, or daily (weekly jobs included).
fn period_secs(expr: &str) -> u64 {
    let mut fields = expr.split_whitespace();
    let (minute, hour) = (fields.next().unwrap_or("0"), fields.next().unwrap_or("0"));
    match (minute.strip_prefix("*/"), hour) {
        (Some(n), "*") => n.parse::<u64>().map(|n| n * 60).unwrap_or(3600),
        (None, "*") => 3600,
        _ => 86_400,
    }
}

fn cron_job(job: &JobDef, run: &ScheduledRun, image: &str, partitions: Option<u32>) -> String {
    let expr = run.cron;
    let name = format!("aidt-batch-{}", cron_job_name(job, run));
    let component = job.cli_name();
    let period = period_secs(expr);
    // A start missed by more than half a period (at most an hour) is
    // skipped: the next one comes soon enough, and a late nightly run still
    // finds the morning free.
    let starting_deadline = (period / 2).min(3600);
    // A run still going at its next start is stopped (SIGTERM: STOPPED, the
    // checkpoint kept) so that start can happen; `Forbid` would skip it.
    let active_deadline = period.saturating_sub(60).max(60);

    let mut out = String::from(HEADER);
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
    if !run.why.is_empty() {
        let _ = writeln!(out, "#   also: {}", run.why);
    }
    if !job.is_implemented() {
        out.push_str(
            "#   not implemented in aidt-batch yet: suspended (the Java batch JAR still runs it)\n",
        );
    }
    if let Some(n) = partitions {
        let _ = writeln!(
            out,
            "#   an Indexed Job of {n} partitions: pod i runs partition i of {n} \
             (JOB_COMPLETION_INDEX, {PARTITIONS_ENV}); change completions, parallelism and {PARTITIONS_ENV} together"
        );
    }
    out.push_str("apiVersion: batch/v1\nkind: CronJob\nmetadata:\n");
    let _ = writeln!(out, "  name: {}", q(&name));
    out.push_str("  labels:\n");
    labels(&mut out, 4, &component);
    out.push_str("  annotations:\n");
    let _ = writeln!(out, "    aidt-batch/job-id: {}", q(job.id));
    let _ = writeln!(out, "    aidt-batch/job-name: {}", q(job.name_en));
    out.push_str("spec:\n");
    let _ = writeln!(out, "  schedule: {}", q(expr));
    out.push_str("  timeZone: Asia/Seoul\n  concurrencyPolicy: Forbid\n");
    let _ = writeln!(out, "  startingDeadlineSeconds: {starting_deadline}");
    let _ = writeln!(out, "  suspend: {}", !job.is_implemented());
    out.push_str("  successfulJobsHistoryLimit: 3\n  failedJobsHistoryLimit: 5\n");
    out.push_str("  jobTemplate:\n    metadata:\n      labels:\n");
    labels(&mut out, 8, &component);
    out.push_str("    spec:\n");
    if let Some(n) = partitions {
        let _ = writeln!(
            out,
            "      completionMode: Indexed\n      completions: {n}\n      parallelism: {n}"
        );
    }
    out.push_str("      backoffLimit: 2\n");
    let _ = writeln!(out, "      activeDeadlineSeconds: {active_deadline}");
    out.push_str("      podFailurePolicy:\n        rules:\n");
    out.push_str("          # 2: configuration or usage, 3: lock busy (another run holds it): a retry cannot help\n");
    out.push_str("          - action: FailJob\n            onExitCodes:\n");
    let _ = writeln!(out, "              containerName: {CONTAINER}");
    let codes: Vec<String> = NEVER_RETRIED.iter().map(u8::to_string).collect();
    let _ = writeln!(
        out,
        "              operator: In\n              values: [{}]",
        codes.join(", ")
    );
    out.push_str("          # a node drain or preemption (SIGTERM: STOPPED, checkpoint kept) does not count as a failure\n");
    out.push_str("          - action: Ignore\n            onPodConditions:\n              - type: DisruptionTarget\n                status: \"True\"\n");
    out.push_str("      template:\n        metadata:\n          labels:\n");
    labels(&mut out, 12, &component);
    out.push_str("        spec:\n");
    out.push_str("          restartPolicy: Never\n");
    out.push_str("          automountServiceAccountToken: false\n");
    out.push_str("          enableServiceLinks: false\n");
    out.push_str("          terminationGracePeriodSeconds: 30\n");
    out.push_str("          securityContext:\n            runAsNonRoot: true\n");
    let _ = writeln!(
        out,
        "            runAsUser: {UID}\n            runAsGroup: {UID}\n            seccompProfile:\n              type: RuntimeDefault"
    );
    out.push_str("          containers:\n");
    let _ = writeln!(out, "            - name: {CONTAINER}");
    let _ = writeln!(out, "              image: {}", q(image));
    out.push_str("              imagePullPolicy: IfNotPresent\n");
    let args = [
        job.cli_name(),
        "--profile".into(),
        "prod".into(),
        "--config".into(),
        format!("{SITE_DIR}/site.toml"),
    ];
    let args: Vec<String> = args
        .iter()
        .map(String::as_str)
        .chain(run.args.iter().copied())
        .map(q)
        .collect();
    let _ = writeln!(out, "              args: [{}]", args.join(", "));
    if let Some(n) = partitions {
        out.push_str("              env:\n");
        let _ = writeln!(
            out,
            "                - name: {PARTITIONS_ENV}\n                  value: {}",
            q(&n.to_string())
        );
    }
    out.push_str("              envFrom:\n                - secretRef:\n");
    let _ = writeln!(out, "                    name: {SECRET}");
    out.push_str(
        "              resources:\n                requests:\n                  cpu: 100m\n                  memory: 128Mi\n\
         \x20               limits:\n                  cpu: \"1\"\n                  memory: 512Mi\n",
    );
    out.push_str(
        "              securityContext:\n                allowPrivilegeEscalation: false\n                readOnlyRootFilesystem: true\n\
         \x20               capabilities:\n                  drop: [\"ALL\"]\n",
    );
    out.push_str("              volumeMounts:\n                - name: site-config\n");
    let _ = writeln!(
        out,
        "                  mountPath: {SITE_DIR}\n                  readOnly: true"
    );
    out.push_str("                - name: tmp\n                  mountPath: /tmp\n");
    out.push_str("          volumes:\n            - name: site-config\n              configMap:\n");
    let _ = writeln!(out, "                name: {CONFIG_MAP}");
    out.push_str(
        "            - name: tmp\n              emptyDir:\n                sizeLimit: 64Mi\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_of_the_registrys_schedules() {
        assert_eq!(period_secs("*/10 * * * *"), 600);
        assert_eq!(period_secs("*/30 * * * *"), 1800);
        assert_eq!(period_secs("0 * * * *"), 3600);
        assert_eq!(period_secs("10 1 * * *"), 86_400);
        assert_eq!(period_secs("5 9 * * 6"), 86_400);
    }
}
