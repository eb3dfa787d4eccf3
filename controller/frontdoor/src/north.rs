//! The northbound application stream: accepted device data fanned out to the application
//! sessions of the device's namespace whose filters match.
//!
//! A QoS 1 subscriber is never skipped: when its queue is full, the fan-out waits, which slows
//! ingest, which stops PUBACKs to devices — backpressure end to end instead of loss. Ingest is
//! one stream for every namespace, so a subscriber whose full queue takes nothing for the
//! stall timeout (it acknowledges nothing, or reads nothing) is closed and no longer waited
//! for. A QoS 0 subscriber with a full queue misses the message, and the miss is counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::mqtt::codec::CloseCode;
use crate::sessions::{Deliver, Kill};
use crate::topic::matches;

/// One application session's subscriptions and queue.
#[derive(Clone)]
pub struct Sink {
    /// Connection number.
    pub conn: u64,
    /// Its filters and granted QoS (updated by the session).
    pub filters: Arc<RwLock<Vec<(String, u8)>>>,
    /// Its queue.
    pub tx: mpsc::Sender<Box<Deliver>>,
    /// Ends the session.
    pub kill: Kill,
}

/// Application sessions by namespace.
#[derive(Default)]
pub struct Northbound {
    sinks: RwLock<HashMap<String, Vec<Sink>>>,
}

impl Northbound {
    /// Attach an application session of `namespace`.
    pub fn attach(&self, namespace: &str, sink: Sink) {
        self.sinks
            .write()
            .entry(namespace.to_string())
            .or_default()
            .push(sink);
    }

    /// Detach a session.
    pub fn detach(&self, namespace: &str, conn: u64) {
        let mut sinks = self.sinks.write();
        if let Some(list) = sinks.get_mut(namespace) {
            list.retain(|s| s.conn != conn);
            if list.is_empty() {
                sinks.remove(namespace);
            }
        }
    }

    /// Hand a message of `namespace` to every matching session; waits for QoS 1 subscribers
    /// with a full queue, each up to `stall`.
    pub async fn publish(
        &self,
        namespace: &str,
        topic: Arc<str>,
        payload: bytes::Bytes,
        metrics: &Metrics,
        stall: Duration,
    ) {
        let targets: Vec<(Sink, u8)> = {
            let sinks = self.sinks.read();
            let Some(list) = sinks.get(namespace) else {
                return;
            };
            list.iter()
                .filter_map(|s| {
                    let qos = s
                        .filters
                        .read()
                        .iter()
                        .filter(|(f, _)| matches(&topic, f))
                        .map(|(_, q)| *q)
                        .max()?;
                    Some((s.clone(), qos))
                })
                .collect()
        };
        for (sink, qos) in targets {
            let deliver = Box::new(Deliver {
                topic: topic.clone(),
                payload: payload.clone(),
                qos,
                command: None,
            });
            if qos == 0 {
                match sink.tx.try_send(deliver) {
                    Ok(()) => metrics.north_delivered.fetch_add(1, Ordering::Relaxed),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics.north_dropped.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => 0,
                };
            } else {
                match tokio::time::timeout(stall, sink.tx.send(deliver)).await {
                    Ok(Ok(())) => {
                        metrics.north_delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => {}
                    Err(_) => {
                        tracing::warn!(
                            namespace,
                            conn = sink.conn,
                            "an application session took no message for {stall:?} with its queue full; closing it"
                        );
                        metrics.north_dropped.fetch_add(1, Ordering::Relaxed);
                        self.detach(namespace, sink.conn);
                        sink.kill.kill(
                            CloseCode::QuotaExceeded,
                            format!("no message taken for {stall:?} with the queue full"),
                        );
                    }
                }
            }
        }
    }
}
