//! KERIS simulator for development and load tests: serves API-001..007 and
//! transfer status on `--listen` until Ctrl-C, with optional fault
//! injection. Operator endpoints: `GET /_sim/stats`, `/_sim/statements`,
//! `/_sim/dashboard`, `/_sim/requests`, `GET|POST /_sim/faults`,
//! `POST /_sim/reset`.
//!
//! `--bench-client` instead starts the simulator in-process, sends
//! `--bench-statements` statements through it and prints the rate.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keris_simulator::{self as simulator, bench, Faults, SimulatorConfig};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "keris-simulator",
    about = "KERIS API simulator (API-001..007, transfer status)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// Partner-ID to accept (repeatable); none accepts any UUID.
    #[arg(long = "partner", value_name = "UUID")]
    partners: Vec<Uuid>,
    /// Statements per API-007 request before code 40001.
    #[arg(long, default_value_t = 500)]
    max_statements_per_request: usize,
    /// Lifetime of a partner access token, in seconds.
    #[arg(long, default_value_t = 1800)]
    token_ttl_secs: u64,
    /// Requests per second per partner before HTTP 429.
    #[arg(long, value_name = "REQ_PER_SEC")]
    rate_limit: Option<f64>,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Limit faults to these calls (API-001 … API-007, TRANSFER-STATUS; repeatable).
    #[arg(long = "fault-api", value_name = "API")]
    fault_apis: Vec<String>,
    /// Share (0–1) of requests answered HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    server_error_share: f64,
    /// Share (0–1) of 5xx/hung requests processed before failing.
    #[arg(long, default_value_t = 0.5)]
    stored_before_error_share: f64,
    /// Share (0–1) of requests answered only after --hang-secs.
    #[arg(long, default_value_t = 0.0)]
    hang_share: f64,
    /// Delay of a hanging answer, in seconds.
    #[arg(long, default_value_t = 35.0)]
    hang_secs: f64,
    /// Share (0–1) of requests reset mid-body.
    #[arg(long, default_value_t = 0.0)]
    reset_share: f64,
    /// The first N requests get HTTP 429.
    #[arg(long, default_value_t = 0)]
    too_many_requests: u32,
    /// Retry-After of those 429 answers, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Reject the statement with this id with XAPI_VAL_ERR (repeatable).
    #[arg(long = "reject-statement-id", value_name = "UUID")]
    reject_statement_ids: Vec<Uuid>,
    /// Reject statements of this student (actor.account.name) with
    /// XAPI_USER_ERR (repeatable).
    #[arg(long = "reject-user", value_name = "USER_ID")]
    reject_user_ids: Vec<String>,
    /// Answer like a proxy or firewall in front of KERIS: this HTTP status
    /// (e.g. 403, 404, 413) with an HTML page, nothing processed; for every
    /// request, or with --proxy-statement-id only for API-007 requests
    /// carrying one of those statements.
    #[arg(long, value_name = "STATUS", default_value_t = 0)]
    proxy_status: u16,
    /// With --proxy-status: the statements the proxy refuses (repeatable).
    #[arg(long = "proxy-statement-id", value_name = "UUID")]
    proxy_statement_ids: Vec<Uuid>,
    /// Do not keep accepted statements (only count them).
    #[arg(long)]
    no_record_statements: bool,
    /// Statements kept for /_sim/statements.
    #[arg(long, default_value_t = 10_000)]
    max_recorded_statements: usize,

    /// Measure instead of serving: start the simulator in-process on a free
    /// port and send statements through it.
    #[arg(long)]
    bench_client: bool,
    /// Statements to send with --bench-client.
    #[arg(long, default_value_t = 200_000)]
    bench_statements: u64,
    /// Concurrent senders (one transfer each) with --bench-client.
    #[arg(long, default_value_t = 4)]
    bench_senders: usize,
    /// Statements per request with --bench-client.
    #[arg(long, default_value_t = 500)]
    bench_per_request: usize,
    /// Send with hand-written HTTP instead of the reqwest-based client.
    #[arg(long)]
    bench_raw: bool,
    /// With --bench-client, send to this already running simulator
    /// (e.g. http://127.0.0.1:18080) instead of an in-process one.
    #[arg(long, value_name = "URL")]
    bench_target: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keris-simulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = SimulatorConfig {
        listen: args.listen,
        partners: args.partners.iter().map(Uuid::to_string).collect(),
        max_statements_per_request: args.max_statements_per_request,
        token_ttl: Duration::from_secs(args.token_ttl_secs),
        rate_limit: args.rate_limit,
        faults: Faults {
            seed: args.seed,
            only_apis: args.fault_apis,
            server_error_share: args.server_error_share,
            stored_before_error_share: args.stored_before_error_share,
            hang_share: args.hang_share,
            hang_secs: args.hang_secs,
            reset_share: args.reset_share,
            too_many_requests_next: args.too_many_requests,
            retry_after_secs: args.retry_after_secs,
            reject_statement_ids: args.reject_statement_ids,
            reject_user_ids: args.reject_user_ids,
            proxy_status: args.proxy_status,
            proxy_statement_ids: args.proxy_statement_ids,
            ..Faults::default()
        },
        record_statements: !args.no_record_statements,
        max_recorded_statements: args.max_recorded_statements,
        ..SimulatorConfig::default()
    };

    if args.bench_client {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.record_statements = false;
        let partner_id = config
            .partners
            .first()
            .cloned()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let handle = match &args.bench_target {
            Some(_) => None,
            None => Some(simulator::start(config).await?),
        };
        let target = args
            .bench_target
            .clone()
            .unwrap_or_else(|| handle.as_ref().expect("started").base_url());
        let options = bench::BenchOptions {
            statements: args.bench_statements,
            per_request: args.bench_per_request,
            senders: args.bench_senders,
            raw: args.bench_raw,
            partner_id: partner_id.clone(),
        };
        let report = bench::run(&target, &options).await?;
        println!(
            "sent {} statements in {} requests ({} senders, {} per request, {} client) in {:.2} s: {:.0} statements/s, \
             {:.1} MB/s of statements (average {} bytes), {} rejected",
            report.statements,
            report.requests,
            options.senders,
            options.per_request,
            if options.raw { "raw HTTP" } else { "KerisClient" },
            report.elapsed.as_secs_f64(),
            report.per_second(),
            report.bytes as f64 / report.elapsed.as_secs_f64() / 1e6,
            report.bytes / report.statements.max(1),
            report.rejected,
        );
        anyhow::ensure!(report.rejected == 0, "statements were rejected");
        let Some(handle) = handle else { return Ok(()) };
        let stats = handle.stats().partner(&partner_id);
        println!(
            "simulator: accepted {}, rejected {}, chunks {}",
            stats.statements_accepted, stats.statements_rejected, stats.chunks_received
        );
        anyhow::ensure!(
            stats.statements_accepted == report.statements,
            "statements were lost"
        );
        return Ok(());
    }

    let handle = simulator::start(config).await?;
    println!("KERIS simulator listening on {}", handle.base_url());
    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    Ok(())
}
