//! The shared state of a running server: data, request log, fault engine and tokens, each
//! behind its own short-held lock (never held across an `.await`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::auth::AuthState;
use super::faults::FaultEngine;
use super::log::RequestLog;
use super::store::Store;

/// Everything the handlers and the inspection handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) log: Mutex<RequestLog>,
    pub(crate) faults: Mutex<FaultEngine>,
    pub(crate) auth: Mutex<AuthState>,
    /// Largest accepted request body, in bytes.
    pub(crate) body_limit: usize,
    /// The live channel (SSE, WebSocket).
    pub(crate) live: Mutex<super::live::LiveHub>,
}

/// Locks a mutex; a poisoned lock is recovered (the state stays usable after a panic in a
/// test thread that held the handle).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub(crate) fn log(&self) -> MutexGuard<'_, RequestLog> {
        lock(&self.log)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultEngine> {
        lock(&self.faults)
    }

    pub(crate) fn auth(&self) -> MutexGuard<'_, AuthState> {
        lock(&self.auth)
    }
}
