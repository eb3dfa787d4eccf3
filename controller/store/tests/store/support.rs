//! Helpers shared by the integration tests.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use devplane_store::{EmbeddedOptions, Event, WatchStream};
use futures::StreamExt;

/// Longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// The next event of a watch stream, which must arrive and be `Ok`.
pub async fn next_event(stream: &mut WatchStream) -> Event {
    match within("next watch event", stream.next()).await {
        Some(Ok(event)) => event,
        Some(Err(e)) => panic!("watch stream failed: {e}"),
        None => panic!("watch stream ended early"),
    }
}

pub fn value(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

/// Options without background compaction, so tests decide when history goes.
pub fn manual_options() -> EmbeddedOptions {
    EmbeddedOptions {
        compaction_interval: None,
        ..EmbeddedOptions::default()
    }
}

/// A temporary directory on the real disk (fsync timings there are realistic).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("devplane-store-test-")
        .tempdir()
        .expect("temp dir")
}
