//! State shared by every connection and background task.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::EmulatorConfig;
use crate::state::{Env, State};

/// The emulator's shared core: the locked state, a change signal carrying
/// the latest resourceVersion, the configuration and fixed facts.
pub struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    pub config: EmulatorConfig,
    pub env: Arc<Env>,
}

impl Shared {
    /// Wraps a state.
    pub fn new(state: State, config: EmulatorConfig, env: Arc<Env>) -> Self {
        let rv = state.store.current_rv();
        Shared {
            state: Mutex::new(state),
            changed: watch::channel(rv).0,
            config,
            env,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the store consistent at the
        // granularity of single puts, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a read under the lock.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Runs a write under the lock and wakes watchers when anything changed.
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let before = st.store.current_rv();
        let r = f(&mut st);
        let after = st.store.current_rv();
        drop(st);
        if after != before {
            self.changed.send_replace(after);
        }
        r
    }

    /// A receiver that sees every change of the store's resourceVersion.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
