//! UNSUBSCRIBE (§3.10): remove each subscription; UNSUBACK with a reason code per filter in
//! 5.0 (Success or No Subscription Existed, MQTT-3.11.3-1).

use std::sync::Arc;

use super::Flow;
use crate::broker::connection::Client;
use crate::broker::error::ConnError;
use crate::protocol::topic::parse_shared;
use crate::protocol::{Packet, Properties, ReasonCode, UnsubAck, Unsubscribe};

pub fn handle(client: &mut Client, u: Unsubscribe) -> Result<Flow, ConnError> {
    let mut reasons = Vec::with_capacity(u.filters.len());
    for filter in &u.filters {
        let (share, inner) = match parse_shared(filter) {
            Some(Ok((_, inner))) => (Some(Arc::<str>::from(filter.as_str())), inner),
            _ => (None, filter.as_str()),
        };
        let (had, durable) = {
            let mut st = client.session.state.lock();
            let had = st.subscriptions.remove(filter).is_some();
            (had, st.durable.clone().filter(|_| had))
        };
        // Sent with the session's lock released: the database must never hold up a broker lock.
        if let Some(d) = durable {
            d.store.remove_subscription(&d.client_id, filter);
        }
        let removed = client
            .broker
            .router
            .unsubscribe(&client.session, share, inner);
        reasons.push(if had || removed {
            ReasonCode::Success
        } else {
            ReasonCode::NoSubscriptionExisted
        });
    }
    if !client.version.is_v5() {
        reasons.clear();
    }
    client.outbox.queue(&Packet::UnsubAck(UnsubAck {
        packet_id: u.packet_id,
        properties: Properties::default(),
        reasons,
    }));
    Ok(Flow::Continue)
}
