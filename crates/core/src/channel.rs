//! Channels and the sources behind them: a source starts when the first reader
//! of any of its channels arrives, stops a grace period after the last one
//! leaves, and retries with backoff when its input fails while readers keep
//! their subscriptions.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::fanout::Hub;
use crate::input::{Input, run_input};
use crate::pipeline::Pipeline;

/// Which programme of an input a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramSelector {
    /// The first programme the PAT lists (single-programme inputs).
    First,
    Number(u16),
}

pub(crate) struct Source {
    pub(crate) input: Input,
    pub(crate) outputs: Mutex<Vec<(ProgramSelector, Arc<Hub>)>>,
    pub(crate) readers_changed: Arc<Notify>,
}

impl Source {
    pub(crate) fn new(input: Input) -> Arc<Self> {
        Arc::new(Source {
            input,
            outputs: Mutex::new(Vec::new()),
            readers_changed: Arc::new(Notify::new()),
        })
    }

    pub(crate) fn add_output(&self, selector: ProgramSelector) -> Arc<Hub> {
        let hub = Hub::new(self.readers_changed.clone());
        self.outputs.lock().push((selector, hub.clone()));
        hub
    }

    fn readers(&self) -> usize {
        self.outputs
            .lock()
            .iter()
            .map(|(_, h)| h.reader_count())
            .sum()
    }

    fn hubs(&self) -> Vec<Arc<Hub>> {
        self.outputs.lock().iter().map(|(_, h)| h.clone()).collect()
    }
}

/// Timing of a source's life.
#[derive(Debug, Clone, Copy)]
pub struct SourcePolicy {
    /// How long a source keeps running after its last reader left.
    pub grace: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy {
            grace: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The control loop of one source; runs until `shutdown`.
pub(crate) async fn run_source(
    source: Arc<Source>,
    policy: SourcePolicy,
    shutdown: CancellationToken,
) {
    let label = source.input.describe();
    loop {
        // Idle: wait for a reader.
        while source.readers() == 0 {
            tokio::select! {
                _ = source.readers_changed.notified() => {}
                _ = shutdown.cancelled() => return close_all(&source),
            }
        }
        tracing::info!(input = %label, "source starting");
        metrics::gauge!("switchyard_source_running").increment(1.0);
        let mut backoff = policy.backoff_min;
        loop {
            let stop = shutdown.child_token();
            let mut pipeline = Pipeline::new(source.outputs.lock().clone());
            let input = source.input.clone();
            let run_stop = stop.clone();
            let mut task = tokio::spawn(async move {
                let mut sink = |b: &[u8]| pipeline.push(b);
                let r = run_input(&input, &run_stop, &mut sink).await;
                (r, pipeline.received_any())
            });
            // Watch readers while the input runs.
            let outcome = loop {
                tokio::select! {
                    r = &mut task => break Some(r),
                    _ = source.readers_changed.notified() => {
                        if source.readers() == 0 && wait_idle(&source, policy.grace, &shutdown).await {
                            stop.cancel();
                            let _ = task.await;
                            break None;
                        }
                    }
                    _ = shutdown.cancelled() => {
                        stop.cancel();
                        let _ = task.await;
                        metrics::gauge!("switchyard_source_running").decrement(1.0);
                        return close_all(&source);
                    }
                }
            };
            let Some(joined) = outcome else {
                tracing::info!(input = %label, "source stopped: no readers");
                for h in source.hubs() {
                    h.reset_cache();
                }
                break;
            };
            let (result, got_data) = match joined {
                Ok(r) => r,
                Err(e) => (
                    Err(crate::input::InputError::Io(std::io::Error::other(
                        e.to_string(),
                    ))),
                    false,
                ),
            };
            if got_data {
                backoff = policy.backoff_min;
            }
            let reason = match result {
                Ok(()) => "input stopped".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(input = %label, %reason, retry_in = ?backoff, "source lost");
            metrics::counter!("switchyard_source_failures_total").increment(1);
            for h in source.hubs() {
                h.source_lost(&reason);
            }
            // Back off, but give up early if every reader leaves.
            let deadline = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = source.readers_changed.notified() => {}
                    _ = shutdown.cancelled() => {
                        metrics::gauge!("switchyard_source_running").decrement(1.0);
                        return close_all(&source);
                    }
                }
            }
            backoff = (backoff * 2).min(policy.backoff_max);
            if source.readers() == 0 {
                break;
            }
        }
        metrics::gauge!("switchyard_source_running").decrement(1.0);
    }
}

/// After the last reader left: true when nobody came back within `grace`.
async fn wait_idle(source: &Source, grace: Duration, shutdown: &CancellationToken) -> bool {
    let mut deadline = tokio::time::Instant::now() + grace;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return source.readers() == 0,
            _ = source.readers_changed.notified() => {
                if source.readers() > 0 {
                    return false;
                }
                // A reader came and went meanwhile: the grace runs from its leaving.
                deadline = tokio::time::Instant::now() + grace;
            }
            _ = shutdown.cancelled() => return true,
        }
    }
}

fn close_all(source: &Source) {
    for h in source.hubs() {
        h.close();
    }
}
