//! A fixture shared by the cases of one test binary: started by the first
//! case that asks for it, kept for the next ones, and stopped when the
//! binary exits.
//!
//! Rust never drops statics, so a fixture in a plain `static` would leave
//! its daemons running after the tests. [`Shared`] registers, with
//! `atexit(3)`, a handler that takes the fixture out of its static and
//! drops it: that runs when libtest returns from `main` and when it calls
//! `exit` after a failed test (not on a signal such as Ctrl-C, which no
//! drop survives either). A case may also [`Shared::take`] the fixture to
//! end it itself (say, to stop the daemons in it); a later case then
//! starts a new one.
//!
//! The fixture is locked while a case uses it, so cases never share it at
//! the same time even without `--test-threads=1`. A case that panicked
//! while holding it leaves it as it was for the next one (the lock's
//! poisoning is ignored); a fixture whose start panicked is started again
//! by the next case.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

/// Fixtures to drop when the binary exits.
static AT_EXIT: Mutex<Vec<&'static (dyn AtExit + Sync)>> = Mutex::new(Vec::new());

/// Registers [`drop_all`] with `atexit` once.
static REGISTER: Once = Once::new();

extern "C" fn drop_all() {
    let handlers = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(PoisonError::into_inner));
    for fixture in handlers {
        // A panic must not unwind into libc.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fixture.stop_at_exit()))
            .is_err()
        {
            eprintln!("stopping a shared fixture at exit panicked");
        }
    }
}

/// What the exit handler calls on each fixture that was started.
trait AtExit {
    fn stop_at_exit(&self);
}

/// One fixture of type `T`, started by `start` when first used; declare it
/// as a `static` next to the cases.
pub struct Shared<T> {
    /// Starts the fixture.
    start: fn() -> T,
    /// The fixture, once started (and until taken).
    slot: Mutex<Option<T>>,
    /// Adds this fixture to [`AT_EXIT`] once.
    registered: Once,
}

impl<T: Send + 'static> AtExit for Shared<T> {
    fn stop_at_exit(&self) {
        self.stop();
    }
}

impl<T: Send + 'static> Shared<T> {
    /// A fixture made by `start`.
    pub const fn new(start: fn() -> T) -> Shared<T> {
        Shared {
            start,
            slot: Mutex::new(None),
            registered: Once::new(),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fixture, started now if no case has yet (or the last one took
    /// it); locked until the guard is dropped.
    pub fn get(&'static self) -> SharedGuard<'static, T> {
        let mut slot = self.slot();
        if slot.is_none() {
            REGISTER.call_once(|| {
                // SAFETY: registers a plain extern "C" function.
                let rc = unsafe { libc::atexit(drop_all) };
                assert_eq!(rc, 0, "atexit failed");
            });
            self.registered.call_once(|| {
                AT_EXIT
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(self);
            });
            *slot = Some((self.start)());
        }
        SharedGuard(slot)
    }

    /// The fixture, out of the static: the caller owns (and drops) it.
    pub fn take(&'static self) -> T {
        let mut guard = self.get();
        guard.0.take().unwrap()
    }

    /// Drops the fixture if there is one (the exit handler's work).
    pub fn stop(&self) {
        let fixture = self.slot().take();
        drop(fixture);
    }
}

/// The locked fixture; see [`Shared::get`].
pub struct SharedGuard<'a, T>(MutexGuard<'a, Option<T>>);

impl<T> Deref for SharedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().unwrap()
    }
}

impl<T> DerefMut for SharedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().unwrap()
    }
}
