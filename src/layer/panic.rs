//! Keeps the message and location of a panic for the spans it unwinds through.
//!
//! A span that closes while its thread is panicking has no access to the panic payload, so a
//! chained panic hook (installed once, calling the previous hook afterwards) stores the last
//! panic of each thread in a thread-local that `on_close` reads.
//!
//! The program may replace the hook later (`std::panic::set_hook` after the layer is built
//! drops ours: std offers no way to chain from the outside). That is detected at the first
//! panic our hook did not see: the span's error says the message was not captured and why,
//! and a short-lived helper thread (a panicking thread may not set hooks) chains our hook in
//! front of the program's, so later panics keep their message and location again. Installing
//! your own hook *before* building the layer avoids the one lost message.

use std::cell::RefCell;
use std::panic::{self, PanicHookInfo};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The message of a panic whose hook was not ours.
pub(crate) const HOOK_REPLACED_MESSAGE: &str = "panicked (message and location not captured: a \
     panic hook set after the progress layer was built replaced its hook; it is chained again \
     for later panics; set your hook before building the layer)";

/// Set while a helper thread chains the hook again (once per replacement).
static RECHAINING: AtomicBool = AtomicBool::new(false);

/// Installs the hook once per process; the previous hook still runs after ours.
pub(crate) fn install_hook() {
    INSTALL.call_once(chain_hook);
}

/// Puts our hook in front of whatever hook is installed now.
fn chain_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        record(info);
        previous(info);
    }));
}

fn record(info: &PanicHookInfo<'_>) {
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
}

/// The current thread's last panic message and location, if the hook saw one. Called while
/// the thread panics: when our hook saw no panic on this thread, it was replaced; the answer is
/// then [`HOOK_REPLACED_MESSAGE`] and the hook is chained again for later panics.
pub(crate) fn last_panic() -> Option<PanicContext> {
    let seen = LAST_PANIC
        .try_with(|p| p.try_borrow().ok().and_then(|p| p.clone()))
        .ok()
        .flatten();
    if seen.is_some() || !INSTALL.is_completed() {
        return seen;
    }
    rechain_later();
    Some(PanicContext {
        message: Arc::from(HOOK_REPLACED_MESSAGE),
        location: None,
    })
}

/// Chains our hook again from a helper thread (`set_hook` panics on a panicking thread).
fn rechain_later() {
    if RECHAINING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tracing-progress-panic-hook".into())
        .spawn(|| {
            chain_hook();
            RECHAINING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        RECHAINING.store(false, Ordering::Release);
    }
}
