//! Child processes: a free port to start one on, signals, and killing on drop.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Runs the connector's binary with `args` and `env` (and none of the connector's
/// variables this process may have), until it exits.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-connector"));
    command
        .args(args)
        .env_remove("CONNECTOR__KAFKA__BOOTSTRAP_SERVERS")
        .env_remove("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED")
        .env_remove("CONNECTOR__WEBHOOK__SECRETS")
        .env_remove("CONNECTOR__PRIVACY__KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

/// Runs `webhook-connector forget` of the `entity` whose id is `id`, with the
/// settings file `settings` and `env`, until it exits.
pub fn run_forget(settings: &Path, entity: &str, id: &str, env: &[(&str, &str)]) -> Output {
    let settings = settings.to_str().expect("a UTF-8 path");
    let args = [
        "forget", "--config", settings, "--entity", entity, "--id", id,
    ];
    run_binary(&args, env)
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, `-HUP`, ...) to `child` with
/// `kill(1)`; whether it was delivered.
pub fn send_signal(child: &Child, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

/// Polls `done` every 50 ms until it holds, or panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
