//! The store writer's own timings during a bench: the `tidesync_store_*` histograms (queue
//! wait, work, commit per group commit), read from a Prometheus recorder the bench installs.
//! Recording costs the engine three histogram samples per group commit (well under a
//! microsecond, against commits of hundreds); the raw baselines record nothing.

use tidesync_metrics_prometheus::{PrometheusHandle, PrometheusMetrics};

/// The process-wide recorder's handle, installed on first use (its endpoint listens on a
/// free loopback port and is not used).
pub fn handle() -> &'static PrometheusHandle {
    // Kept (and serving) until the process exits.
    static METRICS: std::sync::OnceLock<PrometheusMetrics> = std::sync::OnceLock::new();
    METRICS
        .get_or_init(|| {
            PrometheusMetrics::builder()
                .listen("127.0.0.1:0".parse().expect("an address"))
                .dedicated_thread(true)
                .install()
                .expect("the bench's metrics recorder")
        })
        .handle()
}

/// Totals of the writer's histograms at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreTimes {
    /// Group commits.
    pub commits: f64,
    /// Seconds the groups' oldest jobs waited for the writer.
    pub wait: f64,
    /// Seconds of the writer's work on the groups.
    pub work: f64,
    /// Seconds of the store's commits.
    pub commit: f64,
}

impl StoreTimes {
    /// The totals now.
    pub fn read() -> Self {
        let text = handle().render();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        StoreTimes {
            commits: value("tidesync_store_commit_duration_seconds_count"),
            wait: value("tidesync_store_queue_wait_seconds_sum"),
            work: value("tidesync_store_work_duration_seconds_sum"),
            commit: value("tidesync_store_commit_duration_seconds_sum"),
        }
    }

    /// What happened between `before` and `self`.
    pub fn since(self, before: StoreTimes) -> StoreTimes {
        StoreTimes {
            commits: self.commits - before.commits,
            wait: self.wait - before.wait,
            work: self.work - before.work,
            commit: self.commit - before.commit,
        }
    }

    /// Microseconds per `ops` of waiting, work and commit.
    pub fn us_per(self, ops: usize) -> [f64; 3] {
        let per = |s: f64| s * 1e6 / ops as f64;
        [per(self.wait), per(self.work), per(self.commit)]
    }
}
