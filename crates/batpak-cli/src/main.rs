//! `batpak`: the command-line tool for batpak event stores.
//!
//! Owns argument parsing, the global options and the mapping of failures to
//! messages and exit codes. Each subcommand lives in its own file under
//! `commands/`; adding one is that file plus one line in [`subcommands!`].

mod commands;
mod filter;
mod output;
mod store_access;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where commands look for a store when `--dir` is not given.
const DEFAULT_DIR: &str = "./batpak-data";

const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 failure, 2 invalid arguments, \
3 store in use by another process, 4 not found (no store, unknown id), \
5 verify found damage.";

#[derive(Parser)]
#[command(
    name = "batpak",
    version,
    about = "Inspect and operate batpak event stores",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts, before or after its name.
#[derive(clap::Args)]
pub struct Global {
    /// Store directory [default: ./batpak-data]
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "url")]
    dir: Option<PathBuf>,
    /// A PostgreSQL store instead of a directory: postgres://user@host/db
    /// (stats, ls, get, tail, verify, export, graph, import).
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// The PostgreSQL schema holding the store (with --url).
    #[arg(long, global = true, value_name = "NAME", default_value = batpak_postgres::DEFAULT_SCHEMA)]
    schema: String,
    /// Machine-readable output (JSON; NDJSON for event lists).
    #[arg(long, global = true)]
    pub json: bool,
    /// Colour: decided once from the terminal, not an option.
    #[arg(skip)]
    pub style: output::Style,
}

impl Global {
    /// The store directory the user asked for, or the default.
    pub fn store_dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
    }

    /// `--dir` only if given explicitly (commands with their own default use this).
    pub fn explicit_dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// The PostgreSQL store asked for with `--url`, if any.
    pub fn postgres(&self) -> Option<batpak_postgres::PgConfig> {
        self.url.as_ref().map(|url| {
            batpak_postgres::PgConfig::new(url.clone())
                .with_schema(self.schema.clone())
                .with_pool_size(2)
        })
    }
}

/// Declares the subcommand enum and its dispatch together, so that a new
/// subcommand cannot be declared without being wired (or the reverse).
macro_rules! subcommands {
    ($( $(#[$meta:meta])* $variant:ident => $module:ident, )*) => {
        #[derive(Subcommand)]
        enum Command {
            $( $(#[$meta])* $variant(commands::$module::Args), )*
        }

        impl Command {
            fn run(self, global: &Global) -> anyhow::Result<()> {
                match self {
                    $( Command::$variant(args) => commands::$module::run(global, &args), )*
                }
            }
        }
    };
}

subcommands! {
    /// Build a small sample store and show the main features.
    Demo => demo,
    /// Counters, index memory and what the last open found.
    Stats => stats,
    /// List events matching filters, in global order.
    #[command(visible_alias = "query")]
    Ls => ls,
    /// Show one event: header, hash chain and payload.
    Get => get,
    /// Print matching events, then follow new ones (Ctrl-C to stop).
    Tail => tail,
    /// Write every event as NDJSON (format version 1), in global order.
    Export => export,
    /// Import an export; idempotent, keeps ids, links, clocks, times and hashes.
    Import => import,
    /// Causal graph of a correlation id (or of an event's tree) as DOT or SVG.
    Graph => graph,
    /// Check every frame, hash chain, footer and the checkpoint (exit 5 on damage).
    Verify => verify,
    /// Merge sealed segments; remove or redact events matching --drop filters.
    Compact => compact,
    /// Write a consistent copy of the store that opens as a store.
    Snapshot => snapshot,
    /// Measure append, read and open throughput on a temporary store.
    Bench => bench,
}

impl Command {
    /// Whether the command works on a PostgreSQL store (`--url`).
    fn takes_url(&self) -> bool {
        matches!(
            self,
            Command::Stats(_)
                | Command::Ls(_)
                | Command::Get(_)
                | Command::Tail(_)
                | Command::Verify(_)
                | Command::Export(_)
                | Command::Graph(_)
                | Command::Import(_)
        )
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.global.style = output::Style::for_stdout(
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    );
    let result = if cli.global.url.is_some() && !cli.command.takes_url() {
        Err(store_access::UsageError(
            "--url works with stats, ls, get, tail, verify, export, graph and import; \
             this command needs a store directory (--dir)"
                .into(),
        )
        .into())
    } else {
        cli.command.run(&cli.global)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `batpak ls | head` closes the pipe early; that is the reader's choice, not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batpak: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code(e: &anyhow::Error) -> u8 {
    use batpak::prelude::StoreError;
    use store_access::AccessError;
    for cause in e.chain() {
        if cause.downcast_ref::<commands::verify::Damaged>().is_some() {
            return 5;
        }
        if cause.downcast_ref::<store_access::UsageError>().is_some() {
            return 2;
        }
        if let Some(a) = cause.downcast_ref::<AccessError>() {
            return match a {
                AccessError::Locked(_) => 3,
                AccessError::NoStore { .. } | AccessError::UnknownId { .. } => 4,
            };
        }
        match cause.downcast_ref::<StoreError>() {
            Some(StoreError::Locked(_)) => return 3,
            Some(StoreError::NotFound(_)) => return 4,
            _ => {}
        }
    }
    1
}
