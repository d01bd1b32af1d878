//! BO-05-006 — the weekly LMS usage statistics mail. Saturdays at 09:05.
//!
//! Reports the last complete Monday–Sunday week ending on or before the
//! business date (default yesterday: on the Saturday run, the week that
//! ended last Sunday; `--date 2026-03-08`, a Sunday, reports 2–8 March).
//! Figures and rendering are in [`super::usage_report`]: logins, distinct
//! login users per user type and school level, the busiest hour, each beside
//! the week before, and a bar chart of the seven days. Statistics rows the
//! daily jobs left missing are computed first (and committed) with their own
//! code; a reported week that cannot be computed fails the run, never a mail
//! of zeros.
//!
//! Reads `tb_bo_mail_recipient` (`active_yn = 'Y'`) and sends each recipient
//! not yet `SENT` for that week one message (multipart/alternative:
//! plain text and HTML; the Korean subject RFC 2047-encoded) over SMTP
//! (`[jobs.bo_05_006.smtp]`: host, port, `none`/`starttls`/`tls`,
//! credentials; the password is a secret). Writes one row per recipient and
//! week to `tb_bo_mail_send_hist`: `SENT` (with `sent_at`) or `FAILED`
//! with the server's reply. A rerun sends only to recipients not yet `SENT`
//! (a refused one is retried); any `FAILED` ends the run with exit 4. An
//! SMTP server that cannot be reached fails the run (exit 1, naming host
//! and port) before anything is sent or recorded. A kill between the
//! server's acceptance of a message and its `SENT` row sends that one
//! message again on the next run (at least once, never lost).
//!
//! `--dry-run` computes the figures in a transaction it rolls back, prints
//! the message and the recipients it would go to, and sends nothing.
//! `--to ADDRESS` sends one copy to ADDRESS (a test) and leaves
//! `tb_bo_mail_send_hist` alone.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::{NaiveDate, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::connected_users;
use super::usage_report::{ensure_statistics, read_week, Report, Week};
use crate::jobs::shared::sessions::LearningDaySettings;
use crate::runtime::registry::{settings_of, JobDef, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;

pub const ID: &str = "BO-05-006";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 LMS 이용 주간 통계 메일 전송",
    name_en: "Send weekly LMS usage statistics mail",
    about: "Mails the last complete Monday-Sunday week ending on or before the business date (logins, distinct login users per type and level, busiest hour, each with the change from the week before, and a chart of the seven days; missing statistics are computed first) to every active tb_bo_mail_recipient not yet SENT for that week, over SMTP ([jobs.bo_05_006.smtp]); one tb_bo_mail_send_hist row per recipient and week (SENT, or FAILED with the server's reply: exit 4, retried by the next run). --dry-run prints the message; --to ADDRESS sends one test copy without touching the history.",
    schedule: Schedule::Cron("5 9 * * 6"),
    // Two runs at once, even for different dates of one week, would send twice.
    settings: Some(settings_of::<UsageMailSettings>().checked_by(validate_settings)),
    args: mail_args,
    job: Some(&UsageMail),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

const TO: &str = "to";

fn mail_args(cmd: clap::Command) -> clap::Command {
    cmd.arg(
        clap::Arg::new(TO)
            .long(TO)
            .value_name("ADDRESS")
            .value_parser(|s: &str| s.parse::<Address>().map_err(|e| format!("{s}: {e}")))
            .help("Send one test copy to ADDRESS instead of the recipients; tb_bo_mail_send_hist is not touched"),
    )
}

/// `[jobs.bo_05_006]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageMailSettings {
    /// The sender, `Name <address>`.
    pub from: String,
    /// `{from}` and `{to}` are the week's Monday and Sunday.
    pub subject: String,
    pub smtp: SmtpSettings,
}

impl Default for UsageMailSettings {
    fn default() -> Self {
        Self {
            from: "AIDT 통계 <no-reply@aidt.example.kr>".into(),
            subject: "[AIDT] LMS 주간 이용 통계 ({from} ~ {to})".into(),
            smtp: SmtpSettings::default(),
        }
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP (a relay on the same host or a loopback test server).
    None,
    /// Plain, then STARTTLS, required before anything else is sent (port 587).
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
}

impl Security {
    fn default_port(self) -> u16 {
        match self {
            Security::None => 25,
            Security::Starttls => 587,
            Security::Tls => 465,
        }
    }
}

/// `[jobs.bo_05_006.smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: Option<String>,
    /// Default: 25, 587 or 465 after `security`.
    pub port: Option<u16>,
    pub security: Security,
    pub username: Option<String>,
    /// `AIDT__JOBS__BO_05_006__SMTP__PASSWORD`.
    pub password: Option<SecretString>,
    /// A PEM file of CA certificates to trust besides the public roots (a
    /// company CA, or a test server's certificate).
    pub ca_file: Option<PathBuf>,
    /// Per SMTP command, connecting included.
    pub timeout_secs: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            security: Security::Starttls,
            username: None,
            password: None,
            ca_file: None,
            timeout_secs: 30,
        }
    }
}

impl SmtpSettings {
    fn port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }

    /// `host:port (security)`, for messages.
    fn describe(&self) -> String {
        format!(
            "{}:{} ({})",
            self.host.as_deref().unwrap_or("?"),
            self.port(),
            match self.security {
                Security::None => "no TLS",
                Security::Starttls => "STARTTLS",
                Security::Tls => "TLS",
            }
        )
    }
}

fn validate_settings(section: config::Value) -> Result<(), String> {
    let settings: UsageMailSettings = section.try_deserialize().map_err(|e| e.to_string())?;
    settings
        .from
        .parse::<Mailbox>()
        .map_err(|e| format!("from: {:?} is not a mail address: {e}", settings.from))?;
    if settings.smtp.password.is_some() && settings.smtp.username.is_none() {
        return Err("smtp.password is set but smtp.username is not".into());
    }
    if settings.smtp.timeout_secs == 0 {
        return Err("smtp.timeout_secs: must be at least 1".into());
    }
    if settings.smtp.port == Some(0) {
        return Err("smtp.port: must not be 0".into());
    }
    Ok(())
}

pub struct UsageMail;

/// One recipient's outcome, for the run's details.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub email: String,
    pub reply: String,
}

#[async_trait::async_trait]
impl Job for UsageMail {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: UsageMailSettings = ctx.own_settings()?;
        let from: Mailbox = settings.from.parse().context("jobs.bo_05_006.from")?;
        let test_to = ctx.args.try_get_one::<Address>(TO).ok().flatten().cloned();
        let week = Week::last_complete(ctx.business_date);
        ctx.set_detail("week_start", week.start);
        ctx.set_detail("week_end", week.end());

        let report = prepare_report(ctx, week).await?;
        ctx.set_detail("logins", report.this.logins);
        ctx.set_detail("login_users", report.this.login_users);
        let subject = report.subject(&settings.subject);

        if ctx.dry_run {
            let pending = match &test_to {
                Some(to) => vec![(to.to_string(), to.to_string())],
                None => recipients(ctx.pg(), week.start).await?.pending,
            };
            print_preview(&from, &subject, &report, &pending);
            ctx.counts.add_read(pending.len() as u64);
            ctx.set_detail("would_send_to", pending.len());
            return Ok(());
        }

        let mailer = Mailer::connect(&settings.smtp).await?;
        if let Some(to) = test_to {
            let message = build_message(&from, to.as_ref(), to.as_ref(), &subject, &report)?;
            mailer.send(message).await.map_err(|e| {
                anyhow::anyhow!(
                    "{ID}: the test copy to {to} was refused by {}: {e}",
                    settings.smtp.describe()
                )
            })?;
            ctx.counts.add_written(1);
            ctx.set_detail("test_copy_to", to.to_string());
            return Ok(());
        }

        let Recipients {
            active,
            already_sent: already,
            pending,
        } = recipients(ctx.pg(), week.start).await?;
        ctx.counts.add_read(pending.len() as u64);
        ctx.counts.add_skipped(already);
        ctx.set_detail("recipients_active", active);
        ctx.set_detail("already_sent", already);
        if pending.is_empty() {
            tracing::info!(week_start = %week.start, "every active recipient already has this week's mail");
        }

        let mut failures = Vec::new();
        for (i, (email, name)) in pending.iter().enumerate() {
            ctx.stop_point()?;
            let outcome = match build_message(&from, email, name, &subject, &report) {
                Ok(message) => mailer.send(message).await,
                Err(e) => Err(SendError::Refused(format!("{e:#}"))),
            };
            match outcome {
                Ok(()) => {
                    record(ctx.pg(), week.start, email, None).await?;
                    ctx.counts.add_written(1);
                }
                Err(SendError::Refused(reply)) => {
                    tracing::warn!(recipient = %email, %reply, "recipient refused");
                    record(ctx.pg(), week.start, email, Some(&reply)).await?;
                    ctx.counts.add_failed(1);
                    failures.push(Failure {
                        email: email.clone(),
                        reply,
                    });
                }
                Err(SendError::Connection(e)) => {
                    // The server went away: the rest would fail the same way.
                    record(ctx.pg(), week.start, email, Some(&e)).await?;
                    ctx.set_detail("failed", &failures);
                    bail!(
                        "{ID}: lost the SMTP server {} while sending to {email} ({} of {} sent before): {e}; a rerun sends to the rest",
                        settings.smtp.describe(),
                        i,
                        pending.len()
                    );
                }
            }
        }
        ctx.set_detail("sent", ctx.counts.snapshot().written);
        ctx.set_detail("failed", &failures);
        Ok(())
    }
}

/// Makes sure the two weeks' statistics exist (committed unless dry-run)
/// and reads the figures.
async fn prepare_report(ctx: &JobContext, week: Week) -> anyhow::Result<Report> {
    let conn_settings: LearningDaySettings = ctx
        .app
        .settings
        .jobs
        .own_section(&connected_users::DEF.config_name())
        .try_deserialize()
        .map_err(|e| anyhow::anyhow!("invalid [jobs.bo_01_003]: {e}"))?;
    let mut tx = ctx.pg().begin().await?;
    let oldest = oldest_login_date(&mut tx).await?;
    let prep = ensure_statistics(
        &mut tx,
        &[week.previous(), week],
        &conn_settings,
        oldest.unwrap_or(NaiveDate::MAX),
    )
    .await?;
    ctx.set_detail(
        if ctx.dry_run {
            "would_compute"
        } else {
            "computed"
        },
        &prep.computed,
    );
    if prep.unavailable.contains(&week) {
        bail!(
            "{ID}: the statistics of the week {} ~ {} are missing and cannot be computed: tb_lms_login_hist {}; nothing was sent",
            week.start,
            week.end(),
            match oldest {
                Some(d) => format!("begins on {d} (LMS-01-001's retention, or the LMS's start)"),
                None => "is empty".into(),
            }
        );
    }
    let this = read_week(&mut tx, week).await?;
    let previous = if prep.unavailable.contains(&week.previous()) {
        ctx.set_detail("previous_week", "unavailable");
        None
    } else {
        Some(read_week(&mut tx, week.previous()).await?)
    };
    if ctx.dry_run {
        tx.rollback().await?;
    } else {
        tx.commit()
            .await
            .context("Failed to commit the computed statistics")?;
    }
    Ok(Report { this, previous })
}

/// The Seoul date of the oldest login still in the history.
async fn oldest_login_date(conn: &mut PgConnection) -> anyhow::Result<Option<NaiveDate>> {
    let oldest: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(login_at) FROM tb_lms_login_hist")
            .fetch_one(&mut *conn)
            .await
            .context("Failed to read the oldest login of tb_lms_login_hist")?;
    Ok(oldest.map(time::today_seoul_at))
}

/// The week's recipients, all read by one statement: a recipient added or
/// sent to meanwhile changes every figure or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    /// Active recipients (`active_yn = 'Y'`).
    pub active: u64,
    /// Those of them with a `SENT` row for the week.
    pub already_sent: u64,
    /// The others: (email, name), by email.
    pub pending: Vec<(String, String)>,
}

/// The active recipients of `week_start`'s mail and which of them already
/// have it, from one snapshot.
pub async fn recipients(pg: &sqlx::PgPool, week_start: NaiveDate) -> anyhow::Result<Recipients> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT r.email, r.rcpt_nm,
                EXISTS (SELECT 1 FROM tb_bo_mail_send_hist h
                         WHERE h.week_start = $1 AND h.email = r.email AND h.status = 'SENT')
           FROM tb_bo_mail_recipient r
          WHERE r.active_yn = 'Y'
          ORDER BY r.email",
    )
    .bind(week_start)
    .fetch_all(pg)
    .await
    .context("Failed to read tb_bo_mail_recipient")?;
    let active = rows.len() as u64;
    let pending: Vec<(String, String)> = rows
        .into_iter()
        .filter(|(_, _, sent)| !sent)
        .map(|(email, name, _)| (email, name))
        .collect();
    Ok(Recipients {
        active,
        already_sent: active - pending.len() as u64,
        pending,
    })
}

/// Writes the recipient's row for the week: `SENT` now, or `FAILED` with
/// the reply (a later attempt overwrites it).
async fn record(
    pg: &sqlx::PgPool,
    week_start: NaiveDate,
    email: &str,
    failure: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO tb_bo_mail_send_hist (week_start, email, sent_at, status, err_msg)
         VALUES ($1, $2, CASE WHEN $3::text IS NULL THEN now() END,
                 CASE WHEN $3::text IS NULL THEN 'SENT' ELSE 'FAILED' END, $3)
         ON CONFLICT (week_start, email) DO UPDATE
            SET sent_at = EXCLUDED.sent_at, status = EXCLUDED.status, err_msg = EXCLUDED.err_msg",
    )
    .bind(week_start)
    .bind(email)
    .bind(failure)
    .execute(pg)
    .await
    .with_context(|| {
        format!("{ID}: Failed to record the mail to {email} in tb_bo_mail_send_hist")
    })?;
    Ok(())
}

fn build_message(
    from: &Mailbox,
    email: &str,
    name: &str,
    subject: &str,
    report: &Report,
) -> anyhow::Result<Message> {
    let address: Address = email
        .parse()
        .with_context(|| format!("invalid address {email:?} in tb_bo_mail_recipient"))?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(Some(name.to_string()), address))
        .subject(subject)
        .date_now()
        .multipart(MultiPart::alternative_plain_html(
            report.text(name),
            report.html(name),
        ))
        .context("Failed to build the message")
}

fn print_preview(from: &Mailbox, subject: &str, report: &Report, pending: &[(String, String)]) {
    let name = pending.first().map_or("(수신자)", |p| p.1.as_str());
    println!("From: {from}");
    if pending.is_empty() {
        println!("To: (nobody: every active recipient already has this week's mail)");
    } else {
        let list: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
        println!("To: {} (one message each)", list.join(", "));
    }
    println!("Subject: {subject}");
    println!("\n--- text/plain ---\n{}", report.text(name));
    println!("--- text/html ---\n{}", report.html(name));
}

/// How one send failed.
enum SendError {
    /// The server answered with an error (or the message could not be built):
    /// this recipient failed, the next may not.
    Refused(String),
    /// No answer: connection, TLS or timeout.
    Connection(String),
}

struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Mailer {
    /// Builds the transport and checks that the server answers (and, with
    /// credentials, accepts them), so that an unreachable server fails the
    /// run before any row is written.
    async fn connect(smtp: &SmtpSettings) -> anyhow::Result<Self> {
        let Some(host) = smtp.host.as_deref().filter(|h| !h.is_empty()) else {
            bail!("{ID}: no SMTP server: set [jobs.bo_05_006.smtp] host (AIDT__JOBS__BO_05_006__SMTP__HOST)");
        };
        if smtp.password.is_some() && smtp.security == Security::None && !is_loopback(host) {
            bail!("{ID}: [jobs.bo_05_006.smtp] has a password but security = \"none\": it would cross the network to {host} in clear; use \"starttls\" or \"tls\"");
        }
        let tls = || -> anyhow::Result<TlsParameters> {
            let mut params = TlsParameters::builder(host.to_string());
            if let Some(file) = &smtp.ca_file {
                let pem = std::fs::read(file).with_context(|| {
                    format!(
                        "{ID}: cannot read [jobs.bo_05_006.smtp] ca_file {}",
                        file.display()
                    )
                })?;
                let cert = Certificate::from_pem(&pem).with_context(|| {
                    format!(
                        "{ID}: [jobs.bo_05_006.smtp] ca_file {} is not a PEM certificate",
                        file.display()
                    )
                })?;
                params = params.add_root_certificate(cert);
            }
            params.build().context("Failed to set up TLS")
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(smtp.port())
            .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
        builder = match smtp.security {
            Security::None => builder.tls(Tls::None),
            Security::Starttls => builder.tls(Tls::Required(tls()?)),
            Security::Tls => builder.tls(Tls::Wrapper(tls()?)),
        };
        if let Some(user) = &smtp.username {
            let password = smtp
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let transport = builder.build();
        match transport.test_connection().await {
            Ok(true) => Ok(Self { transport }),
            Ok(false) => bail!(
                "{ID}: the SMTP server {} did not answer NOOP; nothing was sent",
                smtp.describe()
            ),
            Err(e) => bail!(
                "{ID}: cannot use the SMTP server {}: {e}; nothing was sent",
                smtp.describe()
            ),
        }
    }

    async fn send(&self, message: Message) -> Result<(), SendError> {
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() || e.is_transient() => {
                Err(SendError::Refused(e.to_string()))
            }
            Err(e) => Err(SendError::Connection(e.to_string())),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Refused(s) | SendError::Connection(s) => f.write_str(s),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_follow_the_security() {
        let mut s = SmtpSettings::default();
        assert_eq!(s.port(), 587);
        s.security = Security::Tls;
        assert_eq!(s.port(), 465);
        s.port = Some(2525);
        assert_eq!(s.port(), 2525);
    }

    #[test]
    fn only_loopback_hosts_may_take_a_password_in_clear() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("smtp.example.kr"));
        assert!(!is_loopback("10.0.0.5"));
    }

    #[test]
    fn the_default_sender_parses() {
        assert!(UsageMailSettings::default().from.parse::<Mailbox>().is_ok());
    }
}
