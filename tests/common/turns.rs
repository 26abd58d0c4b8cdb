//! Taking turns on the machine: tests that load it (many clients, expensive
//! bodies) or measure time under load run [`alone`]; light tests run [`shared`],
//! beside each other but never beside a test that runs alone. A test sets up
//! (brokers, connectors, a first request) before it takes its turn, so the next
//! test's setup overlaps the current one's run.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static MACHINE: RwLock<()> = RwLock::const_new(());

/// Waits until no other test of this binary runs; holds the machine until dropped.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Waits until no test of this binary runs [`alone`]; other light tests may run.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}
