//! The `devplane` binary: everything lives in `devplane-runtime`.

fn main() -> std::process::ExitCode {
    devplane_runtime::main()
}
