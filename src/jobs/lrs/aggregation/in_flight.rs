//! Work items from a channel, each run as a task of its own, a bounded
//! number at once: LRS-01-001's write batches (and the benchmark floor that
//! writes like it).

use anyhow::Context as _;

/// Runs `work` on each item `items` receives, as a task of its own (so
/// their CPU work, e.g. encoding BSON, runs on several worker threads), at
/// most `limit` at once, and hands each result to `done` as it finishes.
/// Ends when the channel closes and every task has finished, or at the first
/// error; the tasks still running then are aborted.
pub async fn run_in_flight<I, T, Fut>(
    mut items: tokio::sync::mpsc::Receiver<I>,
    limit: usize,
    mut work: impl FnMut(I) -> Fut,
    mut done: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut finish = |finished: Result<anyhow::Result<T>, tokio::task::JoinError>| {
        done(finished.context("A task in flight failed")??)
    };
    while let Some(item) = items.recv().await {
        if tasks.len() >= limit {
            if let Some(finished) = tasks.join_next().await {
                finish(finished)?;
            }
        }
        tasks.spawn(work(item));
    }
    while let Some(finished) = tasks.join_next().await {
        finish(finished)?;
    }
    Ok(())
}
