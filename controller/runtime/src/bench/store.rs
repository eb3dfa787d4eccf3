//! Memory of the embedded store alone: bytes of RSS per stored ~1 KiB object, with the history
//! trimmed to the default retention as automatic compaction keeps it. `devplane bench api`
//! runs it in a process of its own (`devplane bench store-memory`), so neither its figure nor
//! the API server's counts memory the other freed.

use bytes::Bytes;
use devplane_store::{Embedded, EmbeddedOptions, Store};
use tokio::process::Command;

/// The line the measuring process prints its figure on.
const FIGURE: &str = "bytes per stored object: ";

/// `devplane bench store-memory`: fill an in-memory store with `objects` values of 1 KiB and
/// print the RSS growth per object.
pub async fn run(objects: u64) -> Result<(), String> {
    let options = EmbeddedOptions {
        // Compacted here, every 1,000 writes, so the figure does not depend on a timer.
        compaction_interval: None,
        ..EmbeddedOptions::default()
    };
    let retain = options.retain_revisions;
    let store = Embedded::in_memory(options).map_err(|e| e.to_string())?;
    // The runtime, channels and allocator warm up before the baseline is taken.
    store
        .create("warm-up", Bytes::from_static(b"x"))
        .await
        .map_err(|e| e.to_string())?;
    let baseline = super::rss_bytes().ok_or("no VmRSS in /proc/self/status")?;
    for i in 0..objects {
        let kv = store
            .create(
                &format!("/registry/devices/bench/device-{i:07}"),
                Bytes::from(vec![b'x'; 1024]),
            )
            .await
            .map_err(|e| e.to_string())?;
        if i % 1000 == 999 && kv.mod_rev > retain {
            store
                .compact(kv.mod_rev - retain + 1)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let grown = super::rss_bytes()
        .ok_or("no VmRSS in /proc/self/status")?
        .saturating_sub(baseline);
    println!("{FIGURE}{}", grown / objects.max(1));
    println!(
        "of which value chunks: {} bytes per object",
        store.stats().value_chunk_bytes / objects.max(1)
    );
    Ok(())
}

/// Run `devplane bench store-memory` in a new process of this binary; its figure.
pub async fn in_own_process(objects: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(["bench", "store-memory", "--objects", &objects.to_string()])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the measuring process failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(FIGURE)?.trim().parse().ok())
        .ok_or_else(|| format!("no figure in the measuring process's output: {stdout}"))
}
