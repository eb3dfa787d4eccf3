//! The gateway part of a session: what a gateway's publish is, and its requests about
//! sub-devices.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::mqtt::codec::{AckCode, Outgoing};
use crate::sessions::Deliver;
use crate::topic::{self, Denial, GatewayPublish, Identity};

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// What a gateway's publish is: data of itself or of a sub-device logged in through it
    /// (`Some`), a request about sub-devices (`None`), or denied.
    pub(super) fn classify_for_gateway<'t>(
        &self,
        gateway: &Identity,
        topic: &'t str,
    ) -> Result<Option<(Identity, topic::Uplink<'t>)>, Denial> {
        match topic::classify_gateway_publish(gateway, topic)? {
            GatewayPublish::Own(uplink) => Ok(Some((gateway.clone(), uplink))),
            GatewayPublish::Sub(device, uplink) => {
                let acting = self
                    .gateway
                    .as_ref()
                    .is_some_and(|g| g.acts_for(&self.shared, &device));
                if acting {
                    Ok(Some((device, uplink)))
                } else {
                    // Not logged in through this session: exactly like another device's topic.
                    Err(Denial::ForeignTopic)
                }
            }
            GatewayPublish::Request(_) => Ok(None),
        }
    }

    /// A gateway's request about its sub-devices: answer it, then offer the downlink of
    /// sub-devices that just logged in.
    pub(super) async fn gateway_request(
        &mut self,
        gateway: &Identity,
        topic: &str,
        pkid: u16,
        qos: u8,
        payload: &[u8],
    ) {
        let Ok(GatewayPublish::Request(request)) = topic::classify_gateway_publish(gateway, topic)
        else {
            return;
        };
        let Some(mut state) = self.gateway.take() else {
            return;
        };
        let answer = state.request(&self.shared, request, payload).await;
        let response_topic = state.response_topic(request);
        self.gateway = Some(state);
        if qos == 1 {
            self.send(Outgoing::PubAck {
                pkid,
                code: AckCode::Success,
                reason: None,
            });
        }
        self.deliver(Deliver {
            topic: response_topic.into(),
            payload: Bytes::from(answer.response.to_string()),
            qos: 1,
            command: None,
        });
        for deliver in answer.downlink {
            self.deliver(deliver);
        }
        self.seen(gateway);
    }
}
