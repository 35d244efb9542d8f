#![doc = include_str!("../README.md")]

mod error;
mod exporter;
mod server;

pub use error::Error;
pub use exporter::{
    DEFAULT_LISTEN_ADDR, DEFAULT_SECONDS_BUCKETS, DEFAULT_UPKEEP_EVERY, PrometheusMetrics,
    PrometheusMetricsBuilder, STORE_METRICS_PREFIX, STORE_SECONDS_BUCKETS,
};
pub use server::{CONTENT_TYPE_TEXT, METRICS_PATH};

/// Re-exported from `metrics-exporter-prometheus`, so that hosts need no direct dependency.
pub use metrics_exporter_prometheus::{Matcher, PrometheusHandle, PrometheusRecorder};
