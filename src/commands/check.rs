//! `aidt-batch check`: configuration (and the privacy audit salt), PostgreSQL,
//! MongoDB, KERIS and, when `jobs.lcms_copy.source_url` is set, the LCMS
//! database, each with a verdict. Exit 0 when all pass, 1 when any
//! fails, 2 for bad configuration.

use std::path::Path;
use std::time::Duration;

use mongodb::bson::doc;

use crate::config::Profile;
use crate::context;
use crate::runtime::Exit;

struct Verdict {
    what: &'static str,
    ok: bool,
    detail: String,
}

impl Verdict {
    /// A probe's outcome: its detail, or its error's whole chain.
    fn of(what: &'static str, result: anyhow::Result<String>) -> Self {
        match result {
            Ok(detail) => Verdict {
                what,
                ok: true,
                detail,
            },
            Err(e) => Verdict {
                what,
                ok: false,
                detail: format!("{e:#}"),
            },
        }
    }
}

pub async fn run(profile: Profile, extra: Option<&Path>) -> anyhow::Result<Exit> {
    let loaded = crate::jobs::load_config(profile, extra)?;
    crate::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    let settings = &loaded.settings;
    let files: Vec<String> = loaded
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let partners: Vec<&str> = settings.keris.partners.keys().map(String::as_str).collect();
    let env_file = match crate::env_file::applied() {
        Some(file) => format!(
            "; env file {} ({} set, {} already in the environment)",
            file.path.display(),
            file.set,
            file.kept
        ),
        None => String::new(),
    };
    let mut verdicts = vec![Verdict {
        what: "config",
        ok: true,
        detail: format!(
            "profile {profile}; files {}{env_file}; partners: {}",
            files.join(", "),
            partners.join(", ")
        ),
    }];
    if let Some(verdict) = check_transport(&loaded) {
        verdicts.push(verdict);
    }
    verdicts.push(check_privacy(settings));
    verdicts.push(check_postgres(settings).await);
    verdicts.push(check_mongo(settings).await);
    verdicts.push(check_keris(settings).await);
    if let Some(result) = crate::jobs::lcms::content_copy::probe_source(settings).await {
        verdicts.push(Verdict::of("lcms", result));
    }

    let mut all_ok = true;
    for v in &verdicts {
        all_ok &= v.ok;
        println!(
            "{:<11} {:<4}  {}",
            v.what,
            if v.ok { "OK" } else { "FAIL" },
            v.detail
        );
    }
    Ok(if all_ok { Exit::Success } else { Exit::Failure })
}

/// In `prod`: the clear-text transport the configuration allows, if any
/// (it would not have loaded otherwise).
fn check_transport(loaded: &crate::config::LoadedConfig) -> Option<Verdict> {
    if loaded.profile != Profile::Prod {
        return None;
    }
    let insecure = super::insecure_transport(loaded);
    let detail = if insecure.is_empty() {
        "TLS to PostgreSQL, https to KERIS".to_string()
    } else {
        let keys: Vec<String> = insecure.into_iter().map(|(key, _)| key).collect();
        format!("clear text allowed by allow_insecure: {}", keys.join(", "))
    };
    Some(Verdict {
        what: "transport",
        ok: true,
        detail,
    })
}

/// The privacy jobs refuse to run without an audit salt; say so before the
/// night they first run. The salt itself never prints.
fn check_privacy(settings: &crate::config::Settings) -> Verdict {
    match crate::jobs::shared::privacy::audit_salt(&settings.jobs.privacy) {
        Ok(_) => Verdict {
            what: "privacy",
            ok: true,
            detail: "audit salt set".into(),
        },
        Err(e) => Verdict {
            what: "privacy",
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}

async fn check_postgres(settings: &crate::config::Settings) -> Verdict {
    let result = async {
        let pg = context::connect_pg(settings).await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pg)
            .await?;
        let migrated: bool = sqlx::query_scalar("SELECT to_regclass('batch_job_run') IS NOT NULL")
            .fetch_one(&pg)
            .await?;
        anyhow::Ok(format!(
            "PostgreSQL {version}; batch tables {}",
            if migrated {
                "present"
            } else {
                "MISSING (run `aidt-batch migrate`)"
            }
        ))
        .map(|d| (migrated, d))
    }
    .await;
    match result {
        Ok((migrated, detail)) => Verdict {
            what: "postgresql",
            ok: migrated,
            detail,
        },
        Err(e) => Verdict {
            what: "postgresql",
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}

async fn check_mongo(settings: &crate::config::Settings) -> Verdict {
    let result = async {
        let db = context::connect_mongo(settings).await?;
        let ping = db.run_command(doc! { "ping": 1 }).await;
        context::close_mongo(&db).await;
        ping?;
        anyhow::Ok(format!("ping answered; database `{}`", db.name()))
    }
    .await;
    Verdict::of("mongodb", result)
}

/// Any HTTP answer from the API domain proves it reachable; the request
/// carries no credentials, so nothing secret can leak into the verdict.
async fn check_keris(settings: &crate::config::Settings) -> Verdict {
    let domain = settings.keris_api_domain().to_string();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(settings.keris.connect_timeout_secs))
        .timeout(Duration::from_secs(settings.keris.connect_timeout_secs + 5))
        .build();
    let result = match client {
        Ok(client) => client.get(&domain).send().await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    match result {
        Ok(status) => Verdict {
            what: "keris",
            ok: true,
            detail: format!("{domain} answered HTTP {}", status.as_u16()),
        },
        Err(e) => Verdict {
            what: "keris",
            ok: false,
            detail: format!("{domain} unreachable: {}", error_chain(&e)),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
