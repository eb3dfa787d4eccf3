//! The `devplane` binary: everything lives in `devplane-runtime`.

// JSON-heavy work (the API server, the controllers) allocates a lot; mimalloc spends far less
// time in the allocator than glibc's malloc under that load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    devplane_runtime::main()
}
