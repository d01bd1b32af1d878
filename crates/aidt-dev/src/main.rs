//! `aidt-dev [--profile P] [--config FILE] <schema|seed|mess|bench-data|bench-bo|bench-lcms|bench-notify-data|bench-privacy|scan|read-and-mark|drop-database>`:
//! the development tools, against the databases of a profile's
//! configuration. Refused in the `prod` profile: they create and fill tables
//! that other systems own there.

use std::path::PathBuf;
use std::process::ExitCode;

use aidt_batch::config::Profile;
use aidt_batch::context::AppContext;
use aidt_batch::runtime::Exit;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aidt-dev",
    version,
    about = "Development tools of aidt-batch (refused in the prod profile)"
)]
struct Cli {
    /// Configuration profile, as for aidt-batch [default: local]
    #[arg(long, global = true, value_enum)]
    profile: Option<Profile>,
    /// An extra configuration file layered over the profile
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data-contract tables and LRS indexes that other systems own in production
    Schema,
    /// Fill the contract tables and lrs.statements with synthetic data
    Seed(aidt_dev::seed::SeedArgs),
    /// Add a messy night to a seeded world: late, voiding and undecodable statements, deleted students' data, a statement a proxy refuses, open sessions, a shrunken LCMS source, a cancelled maintenance
    #[command(long_about = aidt_dev::mess::ABOUT)]
    Mess(aidt_dev::mess::MessArgs),
    /// Write READY KERIS statements into keris_batch_data (DC-01-001 benchmark)
    BenchData(aidt_dev::bench::BenchDataArgs),
    /// A month of users and logins for the BO statistics benchmark (scripts/bench-bo)
    BenchBo(aidt_dev::bench_bo::BenchBoArgs),
    /// Fill or change the LCMS tables for the LCMS-01-001 benchmark (scripts/bench-lcms)
    BenchLcms(aidt_dev::bench_lcms::BenchLcmsArgs),
    /// Read the day's READY keris_batch_data with a plain cursor (benchmark baseline)
    Scan(aidt_dev::bench::ScanArgs),
    /// Students, lectures, assignments and submissions for the LMS-01-004 benchmark
    BenchNotifyData(aidt_dev::bench_notify::BenchNotifyArgs),
    /// Deleted students, an LMS and an LRS around them, and data written after the deletion (scripts/bench-privacy)
    BenchPrivacy(aidt_dev::bench_privacy::BenchPrivacyArgs),
    /// Read the day's READY keris_batch_data as DC-01-001 does and mark each SENT by _id, no HTTP (benchmark baseline)
    ReadAndMark(aidt_dev::bench::ReadAndMarkArgs),
    /// Drop the configuration's MongoDB database (benchmark clean-up)
    DropDatabase,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let profile = cli.profile.unwrap_or(Profile::Local);
    if profile == Profile::Prod {
        eprintln!(
            "aidt-dev: error: these commands create and fill tables that other systems own; refused in the prod profile"
        );
        return Exit::Usage.into();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aidt-dev: error: failed to start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(run(cli.command, profile, cli.config));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => aidt_batch::commands::report(&e).into(),
    }
}

async fn run(command: Command, profile: Profile, extra: Option<PathBuf>) -> anyhow::Result<()> {
    let loaded = aidt_batch::jobs::load_config(profile, extra.as_deref())?;
    aidt_batch::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    let app = AppContext::connect(&loaded).await?;
    let result = run_command(&app, command).await;
    app.close().await;
    result
}

async fn run_command(app: &AppContext, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Schema => aidt_dev::schema::apply(app).await,
        Command::BenchData(args) => aidt_dev::bench::bench_data(app, &args).await,
        Command::BenchBo(args) => aidt_dev::bench_bo::bench_bo(app, &args).await,
        Command::BenchLcms(args) => aidt_dev::bench_lcms::bench_lcms(app, &args).await,
        Command::Scan(args) => aidt_dev::bench::scan(app, &args).await,
        Command::BenchNotifyData(args) => {
            aidt_dev::bench_notify::bench_notify_data(app, &args).await
        }
        Command::BenchPrivacy(args) => aidt_dev::bench_privacy::bench_privacy(app, &args).await,
        Command::ReadAndMark(args) => aidt_dev::bench::read_and_mark(app, &args).await,
        Command::DropDatabase => aidt_dev::bench::drop_database(app).await,
        Command::Mess(args) => {
            let report = aidt_dev::mess::mess(app, &args).await?;
            print!("{report}");
            Ok(())
        }
        Command::Seed(args) => {
            let report = aidt_dev::seed::seed(app, &args).await?;
            println!("{report}");
            Ok(())
        }
    }
}
