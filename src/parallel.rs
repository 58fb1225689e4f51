//! Running two pieces of work at once on scoped threads: how a set's models load in parallel.

/// Runs `a` on a scoped thread named `name` while `b` runs on the calling thread, and returns both results.
/// When no thread can be started, `a` runs here after `b`. A panic in `a` is resumed here, after `b` ends.
pub(crate) fn beside<A: Send, B>(name: &str, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    // Whoever runs `a` takes it from here: the thread, or this one when the thread could not start.
    let slot = std::sync::Mutex::new(Some(a));
    let take = || slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new().name(name.into()).spawn_scoped(scope, || take().map(|a| a()));
        let rb = b();
        let ra = match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        };
        let ra = ra.or_else(|| take().map(|a| a())).expect("`a` is run by exactly one thread");
        (ra, rb)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_run_and_a_panic_comes_back() {
        let here = std::thread::current().id();
        let (a, b) = beside("t", move || std::thread::current().id() != here, || 2);
        assert!(a, "`a` ran on another thread");
        assert_eq!(b, 2);
        let caught = std::panic::catch_unwind(|| beside("t", || panic!("boom"), || 1));
        assert!(caught.is_err());
    }
}
