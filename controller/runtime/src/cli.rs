//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// devplane: a Kubernetes-style declarative control plane for IoT devices.
#[derive(Debug, Parser)]
#[command(name = "devplane", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every devplane CustomResourceDefinition as YAML (what `crds/` holds).
    Crds,
    /// Check manifests offline: schemas, model resolution, references between files, attribute
    /// values, batches and commands. Exits 1 when it finds a problem.
    Validate(ValidateArgs),
}

/// Arguments of `devplane validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories of YAML or JSON manifests (`-` reads standard input).
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR"
    )]
    pub files: Vec<PathBuf>,
    /// Descend into subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Do not add the built-in standard feature library (namespace devplane-library) to the
    /// models references may resolve to.
    #[arg(long)]
    pub no_library: bool,
}
