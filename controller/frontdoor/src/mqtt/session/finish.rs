//! The end of a session: what it stores, who is told, and its will.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{End, Role, Session};
use crate::Shared;
use crate::ingest;
use crate::mqtt::codec::{self, ConnectInfo, Outgoing};
use crate::sessions::{Deliver, Kill, Stored};
use crate::status::{GatewayChange, StatusUpdate};
use crate::topic::{self, Identity};

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) async fn finish(mut self, end: End, conn: u64, kill: &Kill, info: &ConnectInfo) {
        if let (End::Killed, Some((code, reason))) = (&end, kill.reason()) {
            tracing::info!(peer = %self.peer, who = %self.who(), %reason, "closing the session");
            self.send(Outgoing::Disconnect { code, reason });
            let _ = tokio::time::timeout(Duration::from_secs(1), self.write_output()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        self.shared
            .metrics
            .sessions_open
            .fetch_sub(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        match self.role.clone() {
            Role::Application(id) => {
                shared.north.detach(&id.namespace, conn);
                shared.apps.remove(&id, conn);
            }
            Role::Gateway(id) => {
                if let Some(mut state) = self.gateway.take() {
                    state.end(&shared).await;
                }
                if shared.gateways.remove(&id, conn) {
                    shared.status_update(StatusUpdate::Gateway {
                        id: id.clone(),
                        change: GatewayChange::Active(0),
                    });
                    shared.status_update(StatusUpdate::Gateway {
                        id: id.clone(),
                        change: GatewayChange::Disconnected,
                    });
                    ingest::presence(&shared, &id, false, &self.peer.to_string()).await;
                }
            }
            Role::Device(id) => {
                // Store a persistent session's state before leaving the table: a connection
                // that resumes it either finds this session still registered (and waits for it
                // to finish) or finds the state stored.
                let ours = shared.devices.get(&id).is_some_and(|h| h.conn == conn);
                let persistent = !info.clean && info.session_expiry != Some(0);
                if persistent && ours {
                    let mut queue: Vec<Deliver> = self.inflight.drain().map(|(_, d)| d).collect();
                    queue.extend(self.waiting.drain(..));
                    let expiry = info
                        .session_expiry
                        .map(|s| Duration::from_secs(u64::from(s)))
                        .unwrap_or(shared.settings.session_expiry)
                        .min(shared.settings.session_expiry);
                    shared.devices.store(
                        &id,
                        Stored {
                            subscriptions: self.subscriptions.read().clone(),
                            queue,
                            expires: Instant::now(),
                        },
                        expiry,
                        shared.settings.offline_queue,
                    );
                }
                let still_ours = shared.devices.remove(&id, conn);
                // EnOS has no wills: an EnOS session's is ignored.
                let will_due = matches!(end, End::Abnormal | End::Clean { with_will: true })
                    && self.enos.is_none();
                if will_due && let Some(will) = &info.will {
                    publish_will(&shared, &id, will).await;
                }
                if still_ours {
                    shared.status_update(StatusUpdate::Disconnected { id: id.clone() });
                    ingest::presence(&shared, &id, false, &self.peer.to_string()).await;
                }
            }
        }
        tracing::debug!(peer = %self.peer, "session ended");
    }
}

/// A will goes through the same validation and ingest as any uplink.
async fn publish_will(shared: &Arc<Shared>, id: &Identity, will: &codec::Will) {
    let Ok(uplink) = topic::classify_publish(id, &will.topic) else {
        return;
    };
    match ingest::judge(shared, id, &uplink, &will.payload) {
        Ok(accepted) => {
            let _ = shared.ingest.send(accepted).await;
        }
        Err(rejection) => {
            shared.metrics.rejected.inc(rejection.reason);
            tracing::info!(device = %id, reason = rejection.reason, "will message rejected");
        }
    }
}
