//! The `devplane` command line: argument parsing and the wiring of each subcommand.

pub mod admin;
pub mod bench;
mod cli;
pub mod coap_client;
pub mod controller;
pub mod frontdoor;
pub mod leader;
pub mod mqtt_client;
pub mod onboard;
pub mod pki;
pub mod qr;
pub mod simulate;
pub mod up;
pub mod validate;
pub mod webhook;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use cli::{Cli, Command, QrArgs, UpArgs, ValidateArgs};

/// Run the command line and return the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print_crds(),
        Command::Validate(args) => validate::run(&args),
        Command::Up(args) => {
            run_async(async move { up::run(&args).await.map_err(|e| e.to_string()) })
        }
        Command::Controller(args) => run_async(async move { controller::run(&args).await }),
        Command::Onboard(args) => onboard_command(&args),
        Command::Frontdoor(args) => run_async(async move { frontdoor::run(&args).await }),
        Command::Simulate(args) => run_async(async move { simulate::run(&args).await }),
        Command::Qr(args) => {
            run_async(async move { qr::run(&args).await.map_err(|e| e.to_string()) })
        }
        Command::Webhook(args) => run_async(async move { webhook::run(&args).await }),
        Command::Bench(cli::BenchCommand::Api(args)) => {
            run_async(async move { bench::run(&args).await })
        }
        Command::Bench(cli::BenchCommand::Onboard(args)) => {
            run_async(async move { bench::onboard(&args).await })
        }
        Command::Bench(cli::BenchCommand::Mqtt(args)) => {
            run_async(async move { bench::mqtt(&args).await })
        }
        Command::Bench(cli::BenchCommand::Http(args)) => {
            run_async(async move { bench::http(&args).await })
        }
        Command::Bench(cli::BenchCommand::HttpBaseline(args)) => {
            run_async(async move { bench::http_baseline(args.addr).await })
        }
        Command::Bench(cli::BenchCommand::Provision(args)) => {
            run_async(async move { bench::provision(&args).await })
        }
        Command::Bench(cli::BenchCommand::StoreMemory(args)) => {
            run_async(async move { bench::store_memory(args.objects).await })
        }
        Command::Bench(cli::BenchCommand::Coap(args)) => {
            run_async(async move { bench::coap(&args).await })
        }
    }
}

fn onboard_command(args: &cli::OnboardCliArgs) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("devplane: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut options = match (&args.file, &args.csv, &args.template) {
        (_, Some(csv), Some(template)) => onboard::OnboardArgs::from_csv(csv, template),
        (Some(file), _, _) => onboard::OnboardArgs::new(file),
        // clap asks for -f or both --csv and --template.
        _ => {
            eprintln!(
                "devplane onboard: give -f FILE, or --csv ROWS.csv with --template FILE.yaml"
            );
            return ExitCode::from(2);
        }
    };
    options.wait = args.wait;
    options.kubeconfig = args.kubeconfig.clone();
    options.namespace = args.namespace.clone();
    options.timeout = std::time::Duration::from_secs(args.timeout_seconds);
    match runtime.block_on(onboard::run(&options)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("devplane onboard: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging() {
    // webrtc-dtls warns about every TLS extension a client offers that it does not know.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Ok(quiet) = "webrtc_dtls=error".parse() {
        filter = filter.add_directive(quiet);
    }
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Run an async command on a multi-threaded runtime; errors are printed and exit 1.
fn run_async(future: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("devplane: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devplane: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every CRD as YAML, separated by `---` lines: the files under `crds/`, concatenated.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (i, crd) in devplane_api::all_crds().iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&devplane_api::crds::render_yaml(crd)?);
    }
    Ok(out)
}

fn print_crds() -> ExitCode {
    let yaml = match crds_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("devplane crds: cannot render the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().lock().write_all(yaml.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (e.g. `devplane crds | head`) is not worth an error message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devplane crds: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
