//! Custom strategies from closures.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use tidesync_core::{Conflict, ConflictStrategy, Error, Resolution, Result};

/// A strategy made from a synchronous closure; see [`strategy_fn`].
pub struct FnStrategy<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for FnStrategy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnStrategy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A strategy made from an asynchronous closure; see [`async_strategy_fn`].
pub struct AsyncFnStrategy<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for AsyncFnStrategy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFnStrategy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A custom strategy from a synchronous closure that sees the whole conflict
/// (`base`, `local`, `remote`, how it was detected and both times).
///
/// A panic in the closure is caught and returned as an [`ErrorKind::Internal`] error naming the
/// strategy, the table and the key, so it cannot take the resolver down (with `panic = "abort"`
/// nothing can be caught). Errors the closure returns get the table and key attached when they
/// do not name them already.
///
/// ```
/// use tidesync_conflict_policies::strategy_fn;
/// use tidesync_core::{ConflictStrategy, Resolution};
///
/// // Keep local edits to drafts, let the server win for everything else.
/// let drafts_stay = strategy_fn("drafts_stay", |c| {
///     let is_draft = |r: &Option<tidesync_core::Record>| {
///         r.as_ref().and_then(|r| r.get("draft")).and_then(|v| v.as_bool()) == Some(true)
///     };
///     Ok(if is_draft(&c.local) { Resolution::KeepLocal } else { Resolution::TakeRemote })
/// });
/// assert_eq!(drafts_stay.name(), "drafts_stay");
/// ```
///
/// [`ErrorKind::Internal`]: tidesync_core::ErrorKind::Internal
pub fn strategy_fn<F>(name: impl Into<String>, f: F) -> FnStrategy<F>
where
    F: Fn(&Conflict) -> Result<Resolution> + Send + Sync + 'static,
{
    FnStrategy {
        name: name.into(),
        f,
    }
}

/// A custom strategy from an asynchronous closure, for decisions that need IO (asking the user,
/// fetching related records, calling a service).
///
/// The closure receives an owned clone of the conflict, so the future it returns borrows nothing
/// and can simply be an `async move` block:
///
/// ```
/// use tidesync_conflict_policies::async_strategy_fn;
/// use tidesync_core::{ConflictStrategy, Resolution};
///
/// let ask = async_strategy_fn("ask_the_user", |conflict| async move {
///     // e.g. send `conflict` to the UI over a channel and await the answer
///     Ok(if conflict.remote.is_none() { Resolution::Park } else { Resolution::TakeRemote })
/// });
/// assert_eq!(ask.name(), "ask_the_user");
/// ```
///
/// Panics in the closure or while polling its future are caught as in [`strategy_fn`]. The
/// engine may run a strategy on any thread, hence `Send` on the future.
pub fn async_strategy_fn<F, Fut>(name: impl Into<String>, f: F) -> AsyncFnStrategy<F>
where
    F: Fn(Conflict) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resolution>> + Send + 'static,
{
    AsyncFnStrategy {
        name: name.into(),
        f,
    }
}

#[async_trait]
impl<F> ConflictStrategy for FnStrategy<F>
where
    F: Fn(&Conflict) -> Result<Resolution> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.f)(conflict)));
        finish(&self.name, conflict, outcome)
    }
}

#[async_trait]
impl<F, Fut> ConflictStrategy for AsyncFnStrategy<F>
where
    F: Fn(Conflict) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resolution>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let outcome = match catch_unwind(AssertUnwindSafe(|| (self.f)(conflict.clone()))) {
            Ok(future) => {
                CatchUnwind {
                    inner: Box::pin(future),
                }
                .await
            }
            Err(panic) => Err(panic),
        };
        finish(&self.name, conflict, outcome)
    }
}

type Panic = Box<dyn Any + Send + 'static>;

fn finish(
    name: &str,
    conflict: &Conflict,
    outcome: std::result::Result<Result<Resolution>, Panic>,
) -> Result<Resolution> {
    match outcome {
        Ok(Ok(resolution)) => {
            crate::log_outcome(name, conflict, &resolution, "custom");
            Ok(resolution)
        }
        Ok(Err(mut err)) => {
            if err.table_name().is_none() {
                err = err.table(conflict.table.clone());
            }
            if err.record_key().is_none() {
                err = err.key(&conflict.key);
            }
            tracing::warn!(
                strategy = name,
                table = %conflict.table,
                key = %conflict.key,
                error = %err,
                "custom conflict strategy failed"
            );
            Err(err)
        }
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(
                strategy = name,
                table = %conflict.table,
                key = %conflict.key,
                panic = %message,
                "custom conflict strategy panicked"
            );
            Err(
                Error::internal(format!("conflict strategy `{name}` panicked: {message}"))
                    .table(conflict.table.clone())
                    .key(&conflict.key),
            )
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Polls a future, turning a panic during a poll into an error value.
struct CatchUnwind<Fut> {
    inner: Pin<Box<Fut>>,
}

impl<Fut: Future> Future for CatchUnwind<Fut> {
    type Output = std::result::Result<Fut::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_core::{DetectedBy, ErrorKind, Key};

    fn conflict() -> Conflict {
        Conflict {
            table: "posts".into(),
            key: Key::from("p1"),
            base: None,
            local: None,
            remote: None,
            detected_by: DetectedBy::PushRejected,
            local_hlc: 1,
            remote_time_ms: None,
        }
    }

    #[tokio::test]
    async fn sync_closure_sees_the_conflict() {
        let s = strategy_fn("by_detection", |c| {
            Ok(match c.detected_by {
                DetectedBy::PushRejected => Resolution::Park,
                _ => Resolution::TakeRemote,
            })
        });
        assert_eq!(s.name(), "by_detection");
        assert_eq!(s.resolve(&conflict()).await.ok(), Some(Resolution::Park));
    }

    #[tokio::test]
    async fn errors_get_table_and_key_unless_they_have_them() {
        let plain = strategy_fn("fails", |_| Err(Error::invalid("nope")));
        let err = plain.resolve(&conflict()).await.err();
        let err = err.as_ref();
        assert_eq!(err.map(Error::kind), Some(ErrorKind::InvalidInput));
        assert_eq!(err.and_then(Error::table_name), Some("posts"));
        assert_eq!(err.and_then(Error::record_key), Some("p1"));

        let named = strategy_fn("fails", |_| {
            Err(Error::invalid("nope").table("other").key("k9"))
        });
        let err = named.resolve(&conflict()).await.err();
        assert_eq!(err.as_ref().and_then(Error::table_name), Some("other"));
        assert_eq!(err.as_ref().and_then(Error::record_key), Some("k9"));
    }

    #[tokio::test]
    async fn panics_become_internal_errors() {
        let sync = strategy_fn("boom", |_| -> Result<Resolution> { panic!("sync boom") });
        let err = sync.resolve(&conflict()).await.err();
        assert_eq!(err.as_ref().map(Error::kind), Some(ErrorKind::Internal));
        assert!(err.is_some_and(|e| e.message().contains("`boom` panicked: sync boom")));

        let before_future =
            async_strategy_fn("early", |_| -> std::future::Ready<Result<Resolution>> {
                panic!("{}", String::from("early boom"))
            });
        let err = before_future.resolve(&conflict()).await.err();
        assert!(err.is_some_and(|e| e.message().contains("early boom")));

        let in_future = async_strategy_fn("late", |c| async move {
            tokio::task::yield_now().await;
            if c.local.is_none() {
                panic!("late boom");
            }
            Ok(Resolution::KeepLocal)
        });
        let err = in_future.resolve(&conflict()).await.err();
        assert_eq!(err.as_ref().map(Error::kind), Some(ErrorKind::Internal));
        assert!(err.is_some_and(|e| e.message().contains("late boom")));
    }

    #[tokio::test]
    async fn async_closure_can_await() {
        let s = async_strategy_fn("awaits", |c| async move {
            tokio::task::yield_now().await;
            Ok(if c.local_hlc > 0 {
                Resolution::KeepLocal
            } else {
                Resolution::TakeRemote
            })
        });
        assert_eq!(
            s.resolve(&conflict()).await.ok(),
            Some(Resolution::KeepLocal)
        );
        assert!(format!("{s:?}").contains("awaits"));
    }
}
