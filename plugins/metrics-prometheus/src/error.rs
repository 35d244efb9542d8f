//! The error type of this crate.

use std::io;
use std::net::SocketAddr;

/// Why the Prometheus exporter could not be built, installed or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address is not a loopback address and `.allow_non_loopback(true)` was not set.
    #[error(
        "refusing to serve metrics on non-loopback address {addr}: metrics would be reachable \
         from other hosts; listen on 127.0.0.1 or [::1], or call `.allow_non_loopback(true)` \
         to expose them on purpose"
    )]
    NonLoopbackAddress {
        /// The refused address.
        addr: SocketAddr,
    },

    /// Something else already listens on the address.
    #[error("cannot serve metrics on {addr}: the address is already in use")]
    AddressInUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },

    /// The listener could not be bound for another reason (permissions, no such interface …).
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },

    /// A global `metrics` recorder is already installed in this process (it can be set once).
    #[error(
        "a global metrics recorder is already installed in this process; call `install()` \
         once, or use `build_recorder()` to compose the Prometheus recorder with the existing \
         one and `serve(handle)` to expose it"
    )]
    RecorderAlreadyInstalled,

    /// Histogram bucket bounds are empty, not finite, or not strictly increasing.
    #[error("invalid histogram buckets for {matcher}: {reason}")]
    InvalidBuckets {
        /// The metric matcher the buckets were given for.
        matcher: String,
        /// What is wrong with them.
        reason: &'static str,
    },

    /// Another option has an invalid value.
    #[error("invalid metrics exporter option: {0}")]
    InvalidOption(&'static str),

    /// The background runtime or thread that serves `/metrics` could not be started.
    #[error("cannot start the metrics server: {0}")]
    Runtime(#[source] io::Error),
}

impl Error {
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::AddrInUse {
            Error::AddressInUse { addr, source }
        } else {
            Error::Bind { addr, source }
        }
    }
}
