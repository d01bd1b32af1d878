//! `aidt-batch man [--out-dir DIR]`: the man page, generated from the clap
//! definition (every job's `--help` text included), printed as roff, or one
//! page per command written into DIR.

use std::path::Path;

use anyhow::Context;

use crate::runtime::Exit;

pub fn run(out_dir: Option<&Path>) -> anyhow::Result<Exit> {
    let cmd = crate::cli::command();
    match out_dir {
        None => {
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("Failed to write the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("Failed to create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("Failed to write the man pages into {}", dir.display()))?;
            println!("{}", dir.join("aidt-batch.1").display());
        }
    }
    Ok(Exit::Success)
}
