//! `aidt-batch <job-id> [--profile P] [--date D] [--dry-run]` runs one job and
//! exits; see `aidt-batch --help` and README.md.

use std::process::ExitCode;

use aidt_batch::{cli, commands, runtime::Exit};

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => {
            // Help and version are "errors" to clap that exit 0.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    // Before any thread exists: the env file's variables join the
    // environment the configuration, the profile and the logging read.
    if let Some(path) = invocation.env_file() {
        if let Err(e) = aidt_batch::env_file::apply(&path) {
            return commands::report(&e.into()).into();
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aidt-batch: error: failed to start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let exit = runtime.block_on(commands::execute(invocation));
    // Don't wait for the drivers' background tasks (MongoDB monitors) to wind down.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}
