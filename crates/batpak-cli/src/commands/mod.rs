//! One module per subcommand; each exposes `Args` (clap) and
//! `run(&Global, &Args)`, and is wired in `main.rs`'s `subcommands!`.

pub mod bench;
pub mod compact;
pub mod demo;
pub mod export;
pub mod get;
pub mod graph;
pub mod import;
pub mod ls;
pub mod snapshot;
pub mod stats;
pub mod tail;
pub mod verify;
