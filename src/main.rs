//! The `webhook-connector` command: parse the arguments, run the command (`cli`),
//! print the error and exit with its code (`cli/exit.rs`: 64 configuration,
//! 65 bad input file, 69 Kafka unavailable, 1 anything else).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the request path allocates many small
/// short-lived objects across threads, where glibc malloc spent a fifth of the CPU
/// (see bench/HISTORY.md, "Earlier changes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let code = failure.code();
            // `{:#}`: the failure and its causes, `: `-separated.
            eprintln!("error: {:#}", anyhow::Error::new(failure));
            ExitCode::from(code)
        }
    }
}
