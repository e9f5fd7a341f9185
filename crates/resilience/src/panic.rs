//! Panic isolation: a panic in one request becomes an error value, not a dead worker.
//!
//! [`catch_panic_blocking`] wraps a closure (for blocking pools), [`CatchPanic`] a future. The
//! panic message (`&str` or `String` payloads) is kept for the error report; every caught
//! panic increments `ironsift_panics_caught_total`. The process's panic hook still runs (so the
//! panic is printed/logged once, with its location).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use search_error::{Classify, ErrorCode, Severity};

/// Counter of panics caught and turned into errors.
pub const PANICS_CAUGHT_TOTAL: &str = "ironsift_panics_caught_total";

/// A call panicked; the panic was contained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("panicked: {message}")]
pub struct Panicked {
    /// The panic message; `<non-string panic payload>` when the payload was not a string.
    pub message: String,
}

impl Classify for Panicked {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }

    fn severity(&self) -> Severity {
        Severity::High
    }
}

impl Panicked {
    /// Builds the error from a panic payload (`&str` and `String` payloads keep their text).
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "<non-string panic payload>".to_owned()
        };
        metrics::counter!(PANICS_CAUGHT_TOTAL).increment(1);
        tracing::error!(panic = %message, "panic caught and contained");
        Panicked { message }
    }
}

/// Runs `f`, turning a panic into `Err(Panicked)`.
pub fn catch_panic_blocking<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| Panicked::from_payload(&*p))
}

/// Wraps `fut` so that a panic while polling it yields `Err(Panicked)`.
pub fn catch_panic<F: Future>(fut: F) -> CatchPanic<F> {
    CatchPanic { inner: fut }
}

pin_project_lite::pin_project! {
    /// A future whose panics become `Err(Panicked)`; see [`catch_panic`].
    ///
    /// After a panic the inner future is not polled again.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // The inner future is never polled again after a panic (we return Ready), so a broken
        // invariant inside it cannot be observed.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(Panicked::from_payload(&*p))),
        }
    }
}
