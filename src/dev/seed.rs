//! Synthetic data generator (being written).

use crate::context::AppContext;

/// Sizes and seed of the generated data.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Number of students
    #[arg(long, default_value_t = 1000)]
    pub students: u32,
    /// Number of xAPI statements written to lrs.statements
    #[arg(long, default_value_t = 10_000)]
    pub statements: u32,
    /// Business date the learning activity belongs to [default: yesterday, Asia/Seoul]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
    /// Random seed; the same seed gives the same data
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub lines: Vec<(String, u64)>,
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (what, n) in &self.lines {
            writeln!(f, "{what:<40} {n:>10}")?;
        }
        Ok(())
    }
}

pub async fn seed(_app: &AppContext, _args: &SeedArgs) -> anyhow::Result<SeedReport> {
    anyhow::bail!("the generator is not written yet")
}
