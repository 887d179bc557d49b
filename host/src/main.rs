//! `presence-host`: parse the command line, set up logging, run the command.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = presence_host::cli::Cli::parse();
    // The server logs its life at info; one-shot commands speak through stdout and only warn.
    let default_level = match cli.command {
        presence_host::cli::Command::Serve { .. } => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_env("PRESENCE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("PRESENCE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    match presence_host::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
