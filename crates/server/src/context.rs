//! The per-request context: request id in a task-local, so any code on the request's task
//! (handlers, error responses, the panic handler) can name the request without threading it.

use observability::request_id::RequestId;

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// Runs `fut` with `id` as the current request id.
pub(crate) async fn scope<F: std::future::Future>(id: RequestId, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}
