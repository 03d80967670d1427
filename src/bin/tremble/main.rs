//! The `tremble` command line: a thin layer over the library's public API.
//! Exit codes: 0 nothing flagged, 1 something flagged, 2 error; a closed output pipe exits 0.

mod args;
mod eval;
mod evasion;
mod fit_lm;
mod fuse;
mod score;
mod train;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = Cli::parse();
    tremble::alloc::keep_freed_buffers();
    init_logging(&cli);
    let result = match cli.command {
        Command::Score(a) => score::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a, command_line),
        Command::Evasion(a) => evasion::run(a, command_line),
        Command::Fuse(a) => fuse::run(a),
        Command::FitLm(a) => fit_lm::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tremble: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::fmt::format::FmtSpan;
    let level = match (cli.trace, cli.verbose) {
        (true, _) | (_, 2..) => "debug",
        (_, 1) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TREMBLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("tremble={level}")));
    let spans = if cli.trace {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, for one-line stderr messages.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
