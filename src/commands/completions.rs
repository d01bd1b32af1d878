//! `aidt-batch completions SHELL`: a completion script for bash, zsh, fish,
//! elvish or PowerShell, generated from the clap definition (job ids, their
//! options, the operator commands), so it never lags behind the registry.

use std::io::Write;

use anyhow::Context;
use clap_complete::Shell;

use crate::runtime::Exit;

const BIN: &str = "aidt-batch";

pub fn run(shell: Shell) -> anyhow::Result<Exit> {
    let mut cmd = crate::cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    let mut script = String::from_utf8(script).context("completion script is not UTF-8")?;
    if shell == Shell::Bash {
        script = fix_bash_states(&script);
    }
    std::io::stdout()
        .write_all(script.as_bytes())
        .context("Failed to write the completion script")?;
    Ok(Exit::Success)
}

/// clap_complete's bash script spells the state of a subcommand of a
/// hyphenated binary two ways: the loop sets `aidt__batch__subcmd__history`,
/// the `case` arms test `aidt__subcmd__batch__subcmd__history`, so no option
/// after a subcommand ever completes (clap-rs/clap#6421, open). The arms
/// get the loop's spelling; a release that fixes it leaves nothing to replace.
fn fix_bash_states(script: &str) -> String {
    let broken = format!("{}__", BIN.replace('-', "__subcmd__"));
    let fixed = format!("{}__", BIN.replace('-', "__"));
    script.replace(&broken, &fixed)
}
