//! Tasks tied to their owner: a spawned task that stops when the value holding it is dropped
//! (also when the future that owns it is cancelled).

/// Aborts its task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    pub(crate) fn spawn<F>(fut: F) -> AbortOnDrop<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        AbortOnDrop(tokio::spawn(fut))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
