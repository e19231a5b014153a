//! Spawned tasks that end with their owner.

use tokio::task::JoinHandle;

/// A spawned task, aborted when this handle is dropped: loops owned by a
/// Link (or by leadership) stop when their owner goes.
#[derive(Debug)]
pub struct Task<T>(pub JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    /// Spawns `future` on the current runtime.
    pub fn spawn(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        Task(tokio::spawn(future))
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
