//! `rebase-snap`: lays a Diff snapshot's memory file onto the Full snapshot's memory file it follows (as
//! Firecracker's tool of the same name): the data extents of the sparse Diff file are copied in place into
//! the base, which then restores the latest state with the Diff's state file. Exit status 1 and one line
//! on stderr if anything fails.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Applies a Diff snapshot's memory file onto its base (Full) memory file, in place.
#[derive(Parser, Debug)]
#[command(name = "rebase-snap", version, about)]
struct Cli {
    /// The Full snapshot's memory file (a copy of it, if the Full snapshot should stay as it was).
    #[arg(long, value_name = "PATH")]
    base_file: PathBuf,
    /// The Diff snapshot's memory file.
    #[arg(long, value_name = "PATH")]
    diff_file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match vmm::persist::memfile::rebase(&cli.base_file, &cli.diff_file) {
        Ok(n) => {
            println!(
                "rebase-snap: {} bytes of {} laid onto {}",
                n,
                cli.diff_file.display(),
                cli.base_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rebase-snap: {e}");
            ExitCode::FAILURE
        }
    }
}
