//! Runs an actix `System` on a dedicated thread, so the engine works from plain `main`,
//! `#[tokio::main]` and `#[actix::main]` alike.
//!
//! `Actor::start()` panics outside an actix System (it needs a `LocalSet`), so the engine never
//! starts actors on the caller's runtime. It starts them here and hands back their addresses,
//! which are `Send + Sync` and can be awaited from any runtime or blocked on.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tidesync_core::{Error, ErrorKind, Result};

/// Worker threads of the engine's tokio runtime (HTTP work and blocking store commits use
/// them; actors themselves run on the System thread).
const WORKER_THREADS: usize = 2;

/// An actix System running on its own thread. Stops (and joins the thread) on drop.
pub struct ActorSystem {
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSystem")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl ActorSystem {
    /// Starts a System on a new thread named `tidesync-<name>` and runs `init` inside it (start
    /// actors there); returns the System and what `init` returned.
    pub fn start<T, F>(name: &str, init: F) -> Result<(ActorSystem, T)>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("tidesync-{name}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKER_THREADS)
                    .thread_name("tidesync-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = tx.send(Err(err.to_string()));
                        return;
                    }
                };
                let runner = actix::System::with_tokio_rt(move || runtime);
                let value = runner.block_on(async move { init() });
                if tx.send(Ok((actix::System::current(), value))).is_err() {
                    return; // the starter went away; nothing will use this System
                }
                if let Err(err) = runner.run() {
                    tracing::error!(error = %err, "actor system stopped with an error");
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot spawn the engine thread: {e}"),
                )
            })?;
        match rx.recv() {
            Ok(Ok((system, value))) => Ok((
                ActorSystem {
                    system,
                    thread: Some(thread),
                },
                value,
            )),
            Ok(Err(message)) => Err(Error::new(
                ErrorKind::Internal,
                format!("cannot build the engine runtime: {message}"),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Internal,
                "the engine thread died while starting",
            )),
        }
    }

    /// The running System (to stop it or to spawn on its arbiter).
    pub fn system(&self) -> &actix::System {
        &self.system
    }

    /// Stops the System and waits for its thread. Idempotent.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.system.stop();
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

impl Drop for ActorSystem {
    fn drop(&mut self) {
        self.stop();
    }
}
