//! Keeps the message and location of a panic for the spans it unwinds through.
//!
//! A span that closes while its thread is panicking has no access to the panic payload, so a
//! chained panic hook (installed once, calling the previous hook afterwards) stores the last
//! panic of each thread in a thread-local that `on_close` reads.

use std::cell::RefCell;
use std::panic;
use std::sync::{Arc, Once};

/// A panic's message and `file:line`.
#[derive(Clone)]
pub(crate) struct PanicContext {
    pub(crate) message: Arc<str>,
    pub(crate) location: Option<Arc<str>>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<PanicContext>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the hook once per process; the previous hook still runs after ours.
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message: &str = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("panic with a non-string payload");
            let location = info
                .location()
                .map(|l| Arc::from(format!("{}:{}", l.file(), l.line())));
            let message = super::visitor::sanitize(message, 4096);
            let _ = LAST_PANIC.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    *p = Some(PanicContext {
                        message: Arc::from(message.as_ref()),
                        location,
                    });
                }
            });
            previous(info);
        }));
    });
}

/// The current thread's last panic message and location, if the hook saw one.
pub(crate) fn last_panic() -> Option<PanicContext> {
    LAST_PANIC
        .try_with(|p| p.try_borrow().ok().and_then(|p| p.clone()))
        .ok()
        .flatten()
}
