//! SUBSCRIBE (§3.8): validate each filter, add or replace the subscription, answer SUBACK with a
//! reason code per filter in order (MQTT-3.8.4-6), then send retained messages per Retain
//! Handling (§3.8.3.1).

use std::sync::Arc;
use std::time::Instant;

use super::Flow;
use crate::broker::connection::Client;
use crate::broker::error::ConnError;
use crate::broker::router::SubEntry;
use crate::broker::session::{Delivery, DropReason, SubscriptionRecord};
use crate::protocol::topic::{parse_shared, valid_topic_filter};
use crate::protocol::{
    Packet, Properties, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    TopicSubscription,
};
use crate::store::SubscriptionRow;

pub fn handle(client: &mut Client, s: Subscribe) -> Result<Flow, ConnError> {
    let sub_id = s.properties.subscription_identifiers.first().copied();
    let mut reasons = Vec::with_capacity(s.filters.len());
    let mut retained: Vec<Delivery> = Vec::new();
    let limit = client.cfg.max_filters_per_subscribe;
    if s.filters.len() > limit {
        log::info!(
            "client {}: SUBSCRIBE with {} filters, limit {limit}: the rest get 0x97",
            client.client_id,
            s.filters.len()
        );
    }
    for (i, sub) in s.filters.iter().enumerate() {
        let reason = if i < limit {
            subscribe_one(client, sub, sub_id, &mut retained)?
        } else {
            ReasonCode::QuotaExceeded
        };
        reasons.push(reason);
    }
    let reasons = if client.version.is_v5() {
        reasons
    } else {
        // 3.1.1 knows only Failure 0x80 (3.1.1 §3.9.3).
        reasons
            .into_iter()
            .map(|r| {
                if r.is_error() {
                    ReasonCode::UnspecifiedError
                } else {
                    r
                }
            })
            .collect()
    };
    client.outbox.queue(&Packet::SubAck(SubAck {
        packet_id: s.packet_id,
        properties: Properties::default(),
        reasons,
    }));
    if !retained.is_empty() {
        let limits = client.broker.queue_limits();
        // A filter the client may read can still cover topics an ACL deny rule hides; those
        // retained messages are skipped exactly as live ones are.
        let acl = client.broker.delivery_acl();
        for d in retained {
            match client.session.enqueue_checked(
                d,
                &limits,
                acl.as_deref(),
                &mut client.scratch.wakes,
            ) {
                Ok(_) | Err(DropReason::NotAuthorized) => {}
                Err(_) => {
                    client
                        .broker
                        .stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
    Ok(Flow::Continue)
}

fn subscribe_one(
    client: &mut Client,
    sub: &TopicSubscription,
    sub_id: Option<u32>,
    retained: &mut Vec<Delivery>,
) -> Result<ReasonCode, ConnError> {
    let cfg = &client.cfg;
    let (share, inner) = match parse_shared(&sub.filter) {
        None => (None, sub.filter.as_str()),
        Some(Ok((_group, inner))) => {
            if sub.options.no_local {
                return Err(ConnError::protocol(
                    ReasonCode::ProtocolError,
                    "No Local on a shared subscription (MQTT-3.8.3-4)",
                ));
            }
            (Some(Arc::<str>::from(sub.filter.as_str())), inner)
        }
        Some(Err(_)) => return Ok(ReasonCode::TopicFilterInvalid),
    };
    if !valid_topic_filter(inner)
        || sub.filter.len() > cfg.max_topic_len
        || inner.split('/').count() > cfg.max_topic_levels
    {
        return Ok(ReasonCode::TopicFilterInvalid);
    }
    if !client.broker.store.acl().can_subscribe(
        client.username.as_deref(),
        &client.client_id,
        &sub.filter,
    ) {
        log::debug!(
            "client {}: subscription to {} not authorized",
            client.client_id,
            sub.filter
        );
        return Ok(ReasonCode::NotAuthorized);
    }
    let limit = cfg.max_subscriptions;
    if limit != 0 {
        let st = client.session.state.lock();
        if st.subscriptions.len() >= limit && !st.subscriptions.contains_key(&sub.filter) {
            log::info!(
                "client {}: subscription to {} refused: already {limit} subscriptions",
                client.client_id,
                sub.filter
            );
            return Ok(ReasonCode::QuotaExceeded);
        }
    }
    let options = if client.bridge {
        bridge_options(sub.options, share.is_some())
    } else {
        sub.options
    };
    let entry = SubEntry {
        options,
        subscription_id: sub_id,
    };
    let is_shared = share.is_some();
    let existed = client
        .broker
        .router
        .subscribe(&client.session, share.clone(), inner, entry);
    let durable = {
        let mut st = client.session.state.lock();
        if st.ended {
            // Taken over with Clean Start while this packet was in hand: the session is gone,
            // so the subscription must not outlive it in the router.
            drop(st);
            client
                .broker
                .router
                .unsubscribe(&client.session, share, inner);
            return Err(ConnError::ClosedByServer);
        }
        st.subscriptions.insert(
            sub.filter.clone(),
            SubscriptionRecord {
                options,
                subscription_id: sub_id,
            },
        );
        st.durable.clone()
    };
    // Sent with the session's lock released: the database must never hold up a broker lock.
    if let Some(d) = durable {
        d.store.save_subscription(
            &d.client_id,
            SubscriptionRow {
                filter: sub.filter.clone(),
                options,
                subscription_id: sub_id,
            },
        );
    }
    // Retained messages are not sent for shared subscriptions (§4.8.2).
    let send_retained = !is_shared
        && match sub.options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendAtSubscribeIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
    if send_retained {
        for msg in client.broker.retained.matching(inner, Instant::now()) {
            retained.push(Delivery {
                qos: sub.options.qos.min(msg.qos),
                // MQTT-3.3.1-8: retained messages sent at subscribe keep RETAIN set.
                retain: true,
                sub_ids: sub_id.into_iter().collect(),
                share: None,
                seq: 0,
                msg,
            });
        }
    }
    Ok(ReasonCode::granted(sub.options.qos))
}

/// A bridge's subscription, as Mosquitto makes it for a client with the bridge bit: No Local,
/// so what the bridge published here is not sent back to it (else `both` topics loop), and
/// Retain As Published, so a retained message stays retained on the broker behind the bridge.
/// A 3.1.1 bridge cannot ask for either; a 5.0 one gets them whatever it asked. No Local is left
/// off shared subscriptions, where the spec forbids it (MQTT-3.8.3-4).
fn bridge_options(asked: SubscriptionOptions, shared: bool) -> SubscriptionOptions {
    SubscriptionOptions {
        no_local: !shared,
        retain_as_published: true,
        ..asked
    }
}
