//! CONNECT (§3.1): check the client's request, authenticate, open or resume its session, answer
//! CONNACK with the server's capabilities (§3.2.2.3), and attach the connection's outbox.
//!
//! A refused CONNECT gets a CONNACK with the reason (5.0) or return code (3.1.1) and the
//! connection is closed (MQTT-3.2.2-7).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::connection::{Client, Reader};
use crate::broker::outbox::Outbox;
use crate::broker::publish::Routing;
use crate::broker::registry::OpenRequest;
use crate::broker::session::{LinkLimits, NEVER_EXPIRES};
use crate::broker::{sys, Broker};
use crate::config::Config;
use crate::login::Login;
use crate::protocol::{
    ConnAck, Connect, Packet, Properties, ProtocolVersion, ReasonCode, MAX_REMAINING_LENGTH,
};
use crate::store::{now_ms, ClientRecord};

/// A CONNACK refusing the connection.
pub fn connack_refusal(reason: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    })
}

/// Why a CONNECT is refused, checked before any session is touched, so a refused client never
/// disturbs the live session of the same client id. `identified`: the username is the TLS
/// client certificate's CN (`use_identity_as_username`), or the connection is a bridge's own
/// loopback session (trusted, see `broker::loopback`), so no password is checked.
fn check(
    broker: &Broker,
    cfg: &Config,
    c: &Connect,
    peer: SocketAddr,
    identified: bool,
) -> Result<(), (ReasonCode, &'static str)> {
    if c.client_id.len() > cfg.max_client_id_len {
        return Err((ReasonCode::ClientIdentifierNotValid, "client id too long"));
    }
    if c.client_id.is_empty() {
        match c.protocol {
            ProtocolVersion::V5 => {}
            // MQTT-3.1.3-8 (3.1.1): an empty id needs Clean Session 1.
            ProtocolVersion::V311 if c.clean_start => {}
            _ => {
                return Err((
                    ReasonCode::ClientIdentifierNotValid,
                    "empty client id without clean session",
                ))
            }
        }
    }
    if c.properties.user_properties.len() > cfg.max_user_properties {
        return Err((ReasonCode::QuotaExceeded, "too many user properties"));
    }
    if c.properties.authentication_method.is_some() {
        return Err((
            ReasonCode::BadAuthenticationMethod,
            "enhanced authentication is not supported",
        ));
    }
    if let Some(will) = &c.will {
        if will.retain && !cfg.retain_available {
            return Err((ReasonCode::RetainNotSupported, "will retain not available"));
        }
        if will.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&will.payload).is_err()
        {
            return Err((
                ReasonCode::PayloadFormatInvalid,
                "will payload is not UTF-8",
            ));
        }
        if will.properties.user_properties.len() > cfg.max_user_properties {
            return Err((ReasonCode::QuotaExceeded, "too many will user properties"));
        }
        if will.topic.split('/').count() > cfg.max_topic_levels
            || will.topic.len() > cfg.max_topic_len
            || !sys::client_may_publish(&will.topic)
        {
            return Err((ReasonCode::TopicNameInvalid, "will topic not allowed"));
        }
    }
    let acl = broker.store.acl();
    if acl.is_banned(&c.client_id, c.username.as_deref()) {
        return Err((ReasonCode::Banned, "banned"));
    }
    // Before any password is verified: a guesser who rotates client ids meets the backoff per
    // address below, one who keeps its id meets this.
    if broker.connect_rate_exceeded(&c.client_id) {
        return Err((
            ReasonCode::ConnectionRateExceeded,
            "too many connects for this client id",
        ));
    }
    match &c.username {
        // The certificate, verified against `cafile` during the handshake, is the credential.
        Some(_) if identified => {}
        // With anonymous access on and no account at all, a username is only a label.
        Some(_) if cfg.allow_anonymous && acl.user_count() == 0 => {}
        Some(name) => login(broker, &acl, peer, name, c.password.as_deref())?,
        None if !cfg.allow_anonymous => {
            return Err((ReasonCode::NotAuthorized, "anonymous access is off"));
        }
        None => {}
    }
    if let Some(will) = &c.will {
        // Refused up front, as Mosquitto does: a will the client may not publish would
        // otherwise be accepted now and silently never delivered.
        if !acl.can_publish(c.username.as_deref(), &c.client_id, &will.topic) {
            return Err((
                ReasonCode::NotAuthorized,
                "will topic not allowed by the ACL",
            ));
        }
    }
    Ok(())
}

/// Verifies `name`'s password, on the client's own thread (a slow hash never stalls the
/// store), through the broker's [`Logins`](crate::login::Logins): an address that keeps
/// guessing waits before it is checked again, and at most a few hashes run at once. A hash made
/// with weaker parameters than today's is replaced once the password has verified.
fn login(
    broker: &Broker,
    acl: &crate::auth::AclSet,
    peer: SocketAddr,
    name: &str,
    password: Option<&[u8]>,
) -> Result<(), (ReasonCode, &'static str)> {
    let stored = acl.password_hash(name);
    let password = password.unwrap_or_default();
    match broker
        .logins
        .check(peer.ip(), name, stored, password, Instant::now())
    {
        Login::Accepted => {}
        Login::Refused { in_a_row, wait } => {
            if in_a_row >= crate::login::FREE_FAILURES {
                log::warn!(
                    "wrong password for {name:?} from {}: {in_a_row} in a row; the next attempt \
                     from there is checked in {} s",
                    peer.ip(),
                    wait.as_secs()
                );
            }
            return Err((
                ReasonCode::BadUserNameOrPassword,
                "wrong username or password",
            ));
        }
        Login::Throttled(_) => {
            return Err((
                ReasonCode::ConnectionRateExceeded,
                "not checked: too many wrong passwords from this address",
            ))
        }
        Login::Busy => {
            return Err((
                ReasonCode::ServerBusy,
                "not checked: every password verification slot is busy",
            ))
        }
    }
    if let (Some(old), Ok(text)) = (stored, std::str::from_utf8(password)) {
        if crate::auth::needs_rehash(old) {
            match crate::auth::hash_password(text) {
                Ok(new) => broker.store.user_rehash(name, old, new),
                Err(e) => log::warn!("cannot upgrade the password hash of {name:?}: {e}"),
            }
        }
    }
    Ok(())
}

fn assigned_client_id() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    format!("auto-{:016x}", h.finish())
}

/// Accepts or refuses the connection. On success CONNACK has been written, ahead of anything
/// the session holds.
pub fn accept(
    broker: &Arc<Broker>,
    reader: &mut Reader,
    mut c: Connect,
    peer: SocketAddr,
    conn_id: u64,
    cfg: Arc<Config>,
    trusted: bool,
) -> Option<Client> {
    let version = c.protocol;
    reader.version = Some(version);
    // `use_identity_as_username` (TLS only, as in Mosquitto): the certificate's CN replaces
    // whatever username and password the CONNECT carries; no usable certificate, no entry:
    // CONNACK 0x87 Not authorized (5.0, §3.2.2.2), 0x05 Not authorized (3.1.1, §3.2.2.3).
    let by_certificate = cfg.use_identity_as_username && reader.pipe().is_tls();
    let identified = by_certificate || trusted;
    if by_certificate {
        match reader.pipe().peer_common_name() {
            Some(cn) => {
                c.username = Some(cn);
                c.password = None;
            }
            None => {
                log::info!(
                    "client {:?} from {peer} (MQTT {}) refused: no client certificate with a CN (use_identity_as_username)",
                    c.client_id,
                    version.name()
                );
                reader.write_and_close(Some(&connack_refusal(ReasonCode::NotAuthorized)), version);
                return None;
            }
        }
    }
    // Full already: refused before any password is verified for it. A bridge's own session
    // takes no place: the limit is for the network's clients.
    if !trusted && broker.active_connections.load(Ordering::Acquire) >= broker.config().max_clients
    {
        refuse_max_clients(broker, reader, &c, peer);
        return None;
    }
    if let Err((reason, why)) = check(broker, &cfg, &c, peer, identified) {
        log::info!(
            "client {:?} from {peer} (MQTT {}) refused: {why} ({reason:?})",
            c.client_id,
            version.name()
        );
        reader.write_and_close(Some(&connack_refusal(reason)), version);
        return None;
    }
    // Taken only now, so that a CONNECT being checked (a password being verified) holds no
    // place; another may have taken the last one meanwhile.
    let slot = if trusted {
        None
    } else {
        let Some(slot) = broker.take_client_slot() else {
            refuse_max_clients(broker, reader, &c, peer);
            return None;
        };
        Some(slot)
    };
    let mut props = Properties::default();
    let client_id: Arc<str> = if c.client_id.is_empty() {
        let id = assigned_client_id();
        if version.is_v5() {
            props.assigned_client_identifier = Some(id.clone());
        }
        Arc::from(id)
    } else {
        Arc::from(c.client_id.as_str())
    };
    let link = LinkLimits {
        protocol: version,
        receive_maximum: if version.is_v5() {
            c.properties.receive_maximum.unwrap_or(u16::MAX)
        } else {
            cfg.max_inflight_messages
        },
        max_packet_size: c
            .properties
            .maximum_packet_size
            .unwrap_or(MAX_REMAINING_LENGTH + 5),
        topic_alias_maximum: c.properties.topic_alias_maximum.unwrap_or(0),
    };
    let requested_expiry = if version.is_v5() {
        c.properties.session_expiry_interval.unwrap_or(0)
    } else if c.clean_start {
        0
    } else {
        NEVER_EXPIRES
    };
    let expiry = broker.cap_session_expiry(requested_expiry);
    if version.is_v5() && expiry != requested_expiry {
        props.session_expiry_interval = Some(expiry);
    }
    let keep_alive = effective_keep_alive(c.keep_alive, cfg.max_keepalive, version);
    if version.is_v5() && keep_alive != c.keep_alive {
        props.server_keep_alive = Some(keep_alive);
    }
    if version.is_v5() {
        server_capabilities(&cfg, &mut props);
        if c.properties.request_response_information == Some(1) {
            props.response_information = Some(format!("response/{client_id}"));
        }
    }

    let outbox = Arc::new(Outbox::new(
        conn_id,
        version,
        reader.pipe().clone(),
        broker.stats.clone(),
        broker.writer.clone(),
    ));
    let request = OpenRequest {
        client_id: &client_id,
        clean_start: c.clean_start,
        link,
        expiry_interval: expiry,
        username: c.username.as_deref(),
    };
    let opened = broker.open_session(request, &outbox, |session_present| {
        Packet::ConnAck(ConnAck {
            session_present,
            reason: ReasonCode::Success,
            properties: props,
        })
    });
    outbox.attach(&opened.session, cfg.outbound_topic_aliases);
    let will_kept = c
        .will
        .as_ref()
        .is_some_and(|w| opened.session.keep_will(&outbox, Some(w)));
    broker.attach_conn(
        conn_id,
        outbox.clone(),
        client_id.clone(),
        keep_alive,
        link.max_packet_size,
        c.bridge,
    );
    broker.stats.client_connected();
    // From now on the outbox sends whatever the pipe holds (TLS records the reader made).
    reader.own_writes = false;
    // CONNACK, then whatever a resumed session held: only now that the connection is in the
    // table, where the control page (ban, delete, disconnect) finds it.
    outbox.open();
    broker.store.client_connected(ClientRecord {
        client_id: client_id.to_string(),
        username: c.username.clone(),
        protocol_version: version,
        address: peer.to_string(),
        time: now_ms(),
    });
    log::info!(
        "client {client_id} connected from {peer} (MQTT {}{}, clean start {}, keep alive {}s, session present {})",
        version.name(),
        if c.bridge { ", bridge" } else { "" },
        c.clean_start,
        keep_alive,
        opened.session_present
    );
    let acks = Arc::new(super::publish::AckQueue::new(
        outbox.clone(),
        version.is_v5(),
        client_id.clone(),
    ));
    Some(Client {
        broker: broker.clone(),
        session: opened.session,
        outbox,
        version,
        client_id,
        peer,
        conn_id,
        keep_alive,
        topic_aliases: HashMap::new(),
        will: c.will,
        will_kept,
        connect_expiry: requested_expiry,
        scratch: Routing::deferred(),
        username: c.username,
        bridge: c.bridge,
        slot,
        cfg,
        acks,
        pubacks: Vec::new(),
        write_hold: None,
        publishes_stored: false,
    })
}

/// Refuses a CONNECT over `max_clients`: CONNACK 0x97 Quota exceeded (5.0), which encodes as
/// 0x03 Server unavailable for 3.1.1, then the close (MQTT-3.2.2-7).
fn refuse_max_clients(broker: &Broker, reader: &mut Reader, c: &Connect, peer: SocketAddr) {
    log::warn!(
        "client {:?} from {peer} (MQTT {}) refused: max_clients ({}) reached; --max-clients \
         raises it",
        c.client_id,
        c.protocol.name(),
        broker.config().max_clients
    );
    reader.write_and_close(
        Some(&connack_refusal(ReasonCode::QuotaExceeded)),
        c.protocol,
    );
}

/// The keep alive we enforce: the client's, lowered to `max_keepalive` for 5.0 clients, which
/// are told so with Server Keep Alive (§3.2.2.3.14). A 3.1.1 client cannot be told, so its own
/// value stands.
fn effective_keep_alive(requested: u16, maximum: u16, version: ProtocolVersion) -> u16 {
    if !version.is_v5() || maximum == u16::MAX {
        return requested;
    }
    if requested == 0 || requested > maximum {
        maximum
    } else {
        requested
    }
}

/// CONNACK properties that state what this server supports (§3.2.2.3).
fn server_capabilities(cfg: &Config, props: &mut Properties) {
    // Absent means 65535 (§3.2.2.3.3); inbound QoS 2 state is a compact id set, so the
    // default needs no advertisement.
    if cfg.receive_maximum != u16::MAX {
        props.receive_maximum = Some(cfg.receive_maximum);
    }
    if cfg.max_packet_size < MAX_REMAINING_LENGTH {
        props.maximum_packet_size = Some(cfg.max_packet_size);
    }
    if cfg.max_topic_alias > 0 {
        props.topic_alias_maximum = Some(cfg.max_topic_alias);
    }
    if !cfg.retain_available {
        props.retain_available = Some(0);
    }
    props.wildcard_subscription_available = Some(1);
    props.subscription_identifier_available = Some(1);
    props.shared_subscription_available = Some(1);
}

#[cfg(test)]
mod tests {
    use super::effective_keep_alive;
    use crate::protocol::ProtocolVersion::{V311, V5};

    #[test]
    fn mqtt_3_2_2_3_14_server_keep_alive_caps_5_0_clients_only() {
        assert_eq!(effective_keep_alive(120, 60, V5), 60);
        assert_eq!(effective_keep_alive(0, 60, V5), 60);
        assert_eq!(effective_keep_alive(30, 60, V5), 30);
        assert_eq!(effective_keep_alive(120, 60, V311), 120);
        assert_eq!(effective_keep_alive(0, u16::MAX, V5), 0);
    }
}
