//! MQTT 5.0 properties (§2.2.2): identifiers, the decoded set, and which packet may carry which.
//!
//! One `Properties` struct serves every packet kind; the codec rejects a property that the packet
//! kind may not carry (a Malformed Packet, 0x81: "A Control Packet which contains an Identifier
//! which is not valid for its packet type ... is a Malformed Packet", §2.2.2.2), an unknown
//! identifier (0x81), and a duplicate of any property except User Property and, in PUBLISH,
//! Subscription Identifier (Protocol Error 0x82, stated per property in §3.x).
//!
//! `read` parses a Property Length and exactly that many bytes of properties; `write` and
//! `len` encode a set, in ascending identifier order, writing only the properties the context
//! allows (so the encoder never produces a packet a peer must reject).

use super::primitives::{binary_len, string_len, varint_len, Reader};
use super::primitives::{write_binary, write_string, write_string_pair, write_u16, write_u32};
use super::primitives::{write_u8, write_varint};
use super::DecodeError;

/// Property identifiers with their spec values (§2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQos = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// The properties of one packet. Absent properties are `None` / empty.
///
/// Boolean-valued properties (Payload Format Indicator, Request Problem Information, …) keep their
/// wire byte so that a round trip is exact; the codec rejects values other than 0 and 1 where the
/// spec requires it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    /// Several in a PUBLISH sent to a subscriber with overlapping subscriptions; at most one in a
    /// SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Vec<u8>>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// In the order they were received; order must be preserved when forwarded (§3.3.2.3.7).
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

impl PropertyId {
    /// Every identifier, in ascending order.
    pub const ALL: [PropertyId; 27] = [
        PropertyId::PayloadFormatIndicator,
        PropertyId::MessageExpiryInterval,
        PropertyId::ContentType,
        PropertyId::ResponseTopic,
        PropertyId::CorrelationData,
        PropertyId::SubscriptionIdentifier,
        PropertyId::SessionExpiryInterval,
        PropertyId::AssignedClientIdentifier,
        PropertyId::ServerKeepAlive,
        PropertyId::AuthenticationMethod,
        PropertyId::AuthenticationData,
        PropertyId::RequestProblemInformation,
        PropertyId::WillDelayInterval,
        PropertyId::RequestResponseInformation,
        PropertyId::ResponseInformation,
        PropertyId::ServerReference,
        PropertyId::ReasonString,
        PropertyId::ReceiveMaximum,
        PropertyId::TopicAliasMaximum,
        PropertyId::TopicAlias,
        PropertyId::MaximumQos,
        PropertyId::RetainAvailable,
        PropertyId::UserProperty,
        PropertyId::MaximumPacketSize,
        PropertyId::WildcardSubscriptionAvailable,
        PropertyId::SubscriptionIdentifierAvailable,
        PropertyId::SharedSubscriptionAvailable,
    ];

    /// The wire value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses an identifier (a Variable Byte Integer on the wire); `None` if undefined.
    pub fn from_u32(v: u32) -> Option<PropertyId> {
        PropertyId::ALL
            .into_iter()
            .find(|id| u32::from(id.code()) == v)
    }

    /// The spec name, for error messages.
    pub fn name(self) -> &'static str {
        use PropertyId as P;
        match self {
            P::PayloadFormatIndicator => "Payload Format Indicator",
            P::MessageExpiryInterval => "Message Expiry Interval",
            P::ContentType => "Content Type",
            P::ResponseTopic => "Response Topic",
            P::CorrelationData => "Correlation Data",
            P::SubscriptionIdentifier => "Subscription Identifier",
            P::SessionExpiryInterval => "Session Expiry Interval",
            P::AssignedClientIdentifier => "Assigned Client Identifier",
            P::ServerKeepAlive => "Server Keep Alive",
            P::AuthenticationMethod => "Authentication Method",
            P::AuthenticationData => "Authentication Data",
            P::RequestProblemInformation => "Request Problem Information",
            P::WillDelayInterval => "Will Delay Interval",
            P::RequestResponseInformation => "Request Response Information",
            P::ResponseInformation => "Response Information",
            P::ServerReference => "Server Reference",
            P::ReasonString => "Reason String",
            P::ReceiveMaximum => "Receive Maximum",
            P::TopicAliasMaximum => "Topic Alias Maximum",
            P::TopicAlias => "Topic Alias",
            P::MaximumQos => "Maximum QoS",
            P::RetainAvailable => "Retain Available",
            P::UserProperty => "User Property",
            P::MaximumPacketSize => "Maximum Packet Size",
            P::WildcardSubscriptionAvailable => "Wildcard Subscription Available",
            P::SubscriptionIdentifierAvailable => "Subscription Identifier Available",
            P::SharedSubscriptionAvailable => "Shared Subscription Available",
        }
    }
}

/// Where a set of properties appears; decides which identifiers are allowed (§2.2.2.2, Table
/// 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    Connect,
    /// The Will Properties in the CONNECT payload (§3.1.3.2).
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    /// Whether a property with this identifier may appear here (§2.2.2.2, Table 2-4).
    pub fn allows(self, id: PropertyId) -> bool {
        use PropertyContext as C;
        use PropertyId as P;
        match id {
            P::UserProperty => true,
            P::PayloadFormatIndicator
            | P::MessageExpiryInterval
            | P::ContentType
            | P::ResponseTopic
            | P::CorrelationData => matches!(self, C::Publish | C::Will),
            P::SubscriptionIdentifier => matches!(self, C::Publish | C::Subscribe),
            P::SessionExpiryInterval => matches!(self, C::Connect | C::ConnAck | C::Disconnect),
            P::AssignedClientIdentifier
            | P::ServerKeepAlive
            | P::ResponseInformation
            | P::MaximumQos
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => self == C::ConnAck,
            P::AuthenticationMethod | P::AuthenticationData => {
                matches!(self, C::Connect | C::ConnAck | C::Auth)
            }
            P::RequestProblemInformation | P::RequestResponseInformation => self == C::Connect,
            P::WillDelayInterval => self == C::Will,
            P::ServerReference => matches!(self, C::ConnAck | C::Disconnect),
            P::ReasonString => matches!(
                self,
                C::ConnAck
                    | C::PubAck
                    | C::PubRec
                    | C::PubRel
                    | C::PubComp
                    | C::SubAck
                    | C::UnsubAck
                    | C::Disconnect
                    | C::Auth
            ),
            P::ReceiveMaximum | P::TopicAliasMaximum | P::MaximumPacketSize => {
                matches!(self, C::Connect | C::ConnAck)
            }
            P::TopicAlias => self == C::Publish,
        }
    }

    /// Whether several Subscription Identifiers may appear (PUBLISH only, §3.3.2.3.8).
    fn allows_repeated_subscription_identifier(self) -> bool {
        self == PropertyContext::Publish
    }

    /// A name for error messages.
    pub fn name(self) -> &'static str {
        use PropertyContext as C;
        match self {
            C::Connect => "CONNECT",
            C::Will => "Will Properties",
            C::ConnAck => "CONNACK",
            C::Publish => "PUBLISH",
            C::PubAck => "PUBACK",
            C::PubRec => "PUBREC",
            C::PubRel => "PUBREL",
            C::PubComp => "PUBCOMP",
            C::Subscribe => "SUBSCRIBE",
            C::SubAck => "SUBACK",
            C::Unsubscribe => "UNSUBSCRIBE",
            C::UnsubAck => "UNSUBACK",
            C::Disconnect => "DISCONNECT",
            C::Auth => "AUTH",
        }
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    id: PropertyId,
    context: PropertyContext,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty { id, context });
    }
    *slot = Some(value);
    Ok(())
}

/// A Byte property that may only be 0 or 1 (Protocol Error otherwise, e.g. §3.1.2.11.6,
/// §3.2.2.3.4).
fn read_flag_byte(r: &mut Reader<'_>, id: PropertyId) -> Result<u8, DecodeError> {
    let v = r.u8(id.name())?;
    if v > 1 {
        return Err(DecodeError::InvalidPropertyValue {
            id,
            value: u32::from(v),
        });
    }
    Ok(v)
}

fn nonzero<T: Into<u32> + Copy>(v: T, id: PropertyId) -> Result<T, DecodeError> {
    if v.into() == 0 {
        return Err(DecodeError::InvalidPropertyValue { id, value: 0 });
    }
    Ok(v)
}

/// Reads a Property Length and the properties it covers (§2.2.2).
///
/// The properties must fill the Property Length exactly and the Property Length must fit in the
/// packet (otherwise Malformed). Checks, per identifier: allowed in `context` (0x81), defined
/// (0x81), not duplicated (0x82), value in range (0x82). Topic Alias 0 is decoded as is; the
/// broker answers it with 0x94 (§3.3.2.3.4).
pub(crate) fn read(
    r: &mut Reader<'_>,
    context: PropertyContext,
) -> Result<Properties, DecodeError> {
    let len = r.varint("property length")?;
    let bytes = r.take(usize::try_from(len).unwrap_or(usize::MAX), "properties")?;
    let mut r = Reader::new(bytes);
    let mut p = Properties::default();
    while !r.is_empty() {
        let raw = r.varint("property identifier")?;
        let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty { id: raw })?;
        if !context.allows(id) {
            return Err(DecodeError::InvalidProperty { id, context });
        }
        let what = id.name();
        use PropertyId as P;
        match id {
            P::PayloadFormatIndicator => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.payload_format_indicator, v, id, context)?;
            }
            P::MessageExpiryInterval => {
                let v = r.u32(what)?;
                set_once(&mut p.message_expiry_interval, v, id, context)?;
            }
            P::ContentType => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.content_type, v, id, context)?;
            }
            P::ResponseTopic => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.response_topic, v, id, context)?;
            }
            P::CorrelationData => {
                let v = r.binary(what)?.to_vec();
                set_once(&mut p.correlation_data, v, id, context)?;
            }
            P::SubscriptionIdentifier => {
                let v = nonzero(r.varint(what)?, id)?;
                if !p.subscription_identifiers.is_empty()
                    && !context.allows_repeated_subscription_identifier()
                {
                    return Err(DecodeError::DuplicateProperty { id, context });
                }
                p.subscription_identifiers.push(v);
            }
            P::SessionExpiryInterval => {
                let v = r.u32(what)?;
                set_once(&mut p.session_expiry_interval, v, id, context)?;
            }
            P::AssignedClientIdentifier => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.assigned_client_identifier, v, id, context)?;
            }
            P::ServerKeepAlive => {
                let v = r.u16(what)?;
                set_once(&mut p.server_keep_alive, v, id, context)?;
            }
            P::AuthenticationMethod => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.authentication_method, v, id, context)?;
            }
            P::AuthenticationData => {
                let v = r.binary(what)?.to_vec();
                set_once(&mut p.authentication_data, v, id, context)?;
            }
            P::RequestProblemInformation => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.request_problem_information, v, id, context)?;
            }
            P::WillDelayInterval => {
                let v = r.u32(what)?;
                set_once(&mut p.will_delay_interval, v, id, context)?;
            }
            P::RequestResponseInformation => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.request_response_information, v, id, context)?;
            }
            P::ResponseInformation => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.response_information, v, id, context)?;
            }
            P::ServerReference => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.server_reference, v, id, context)?;
            }
            P::ReasonString => {
                let v = r.string(what)?.to_owned();
                set_once(&mut p.reason_string, v, id, context)?;
            }
            P::ReceiveMaximum => {
                let v = nonzero(r.u16(what)?, id)?;
                set_once(&mut p.receive_maximum, v, id, context)?;
            }
            P::TopicAliasMaximum => {
                let v = r.u16(what)?;
                set_once(&mut p.topic_alias_maximum, v, id, context)?;
            }
            P::TopicAlias => {
                let v = r.u16(what)?;
                set_once(&mut p.topic_alias, v, id, context)?;
            }
            P::MaximumQos => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.maximum_qos, v, id, context)?;
            }
            P::RetainAvailable => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.retain_available, v, id, context)?;
            }
            P::UserProperty => {
                let (name, value) = r.string_pair(what)?;
                p.user_properties.push((name.to_owned(), value.to_owned()));
            }
            P::MaximumPacketSize => {
                let v = nonzero(r.u32(what)?, id)?;
                set_once(&mut p.maximum_packet_size, v, id, context)?;
            }
            P::WildcardSubscriptionAvailable => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.wildcard_subscription_available, v, id, context)?;
            }
            P::SubscriptionIdentifierAvailable => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.subscription_identifier_available, v, id, context)?;
            }
            P::SharedSubscriptionAvailable => {
                let v = read_flag_byte(&mut r, id)?;
                set_once(&mut p.shared_subscription_available, v, id, context)?;
            }
        }
    }
    Ok(p)
}

/// Per-subscriber replacements for three PUBLISH properties (see `PublishOut`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishOverrides<'a> {
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub subscription_identifiers: &'a [u32],
}

/// Receives the properties to encode; one implementation counts, the other writes, so that
/// lengths and bytes cannot disagree.
trait Sink {
    fn byte(&mut self, id: PropertyId, v: u8);
    fn two(&mut self, id: PropertyId, v: u16);
    fn four(&mut self, id: PropertyId, v: u32);
    fn var(&mut self, id: PropertyId, v: u32);
    fn string(&mut self, id: PropertyId, v: &str);
    fn binary(&mut self, id: PropertyId, v: &[u8]);
    fn pair(&mut self, id: PropertyId, name: &str, value: &str);
}

/// Identifiers are all below 128, so each takes one byte as a Variable Byte Integer.
const ID_LEN: usize = 1;

struct Counter(usize);

impl Sink for Counter {
    fn byte(&mut self, _: PropertyId, _: u8) {
        self.0 += ID_LEN + 1;
    }
    fn two(&mut self, _: PropertyId, _: u16) {
        self.0 += ID_LEN + 2;
    }
    fn four(&mut self, _: PropertyId, _: u32) {
        self.0 += ID_LEN + 4;
    }
    fn var(&mut self, _: PropertyId, v: u32) {
        self.0 += ID_LEN + varint_len(v);
    }
    fn string(&mut self, _: PropertyId, v: &str) {
        self.0 += ID_LEN + string_len(v);
    }
    fn binary(&mut self, _: PropertyId, v: &[u8]) {
        self.0 += ID_LEN + binary_len(v);
    }
    fn pair(&mut self, _: PropertyId, name: &str, value: &str) {
        self.0 += ID_LEN + string_len(name) + string_len(value);
    }
}

struct Writer<'o>(&'o mut Vec<u8>);

impl Sink for Writer<'_> {
    fn byte(&mut self, id: PropertyId, v: u8) {
        write_u8(self.0, id.code());
        write_u8(self.0, v);
    }
    fn two(&mut self, id: PropertyId, v: u16) {
        write_u8(self.0, id.code());
        write_u16(self.0, v);
    }
    fn four(&mut self, id: PropertyId, v: u32) {
        write_u8(self.0, id.code());
        write_u32(self.0, v);
    }
    fn var(&mut self, id: PropertyId, v: u32) {
        write_u8(self.0, id.code());
        write_varint(self.0, v);
    }
    fn string(&mut self, id: PropertyId, v: &str) {
        write_u8(self.0, id.code());
        write_string(self.0, v);
    }
    fn binary(&mut self, id: PropertyId, v: &[u8]) {
        write_u8(self.0, id.code());
        write_binary(self.0, v);
    }
    fn pair(&mut self, id: PropertyId, name: &str, value: &str) {
        write_u8(self.0, id.code());
        write_string_pair(self.0, name, value);
    }
}

/// Feeds every property of `p` that `context` allows to `sink`, in ascending identifier order.
fn emit<S: Sink>(
    sink: &mut S,
    p: &Properties,
    context: PropertyContext,
    overrides: Option<&PublishOverrides<'_>>,
) {
    use PropertyId as P;
    let on = |id: PropertyId| context.allows(id);
    let (message_expiry_interval, topic_alias, subscription_identifiers) = match overrides {
        Some(o) => (
            o.message_expiry_interval,
            o.topic_alias,
            o.subscription_identifiers,
        ),
        None => (
            p.message_expiry_interval,
            p.topic_alias,
            p.subscription_identifiers.as_slice(),
        ),
    };
    if let (true, Some(v)) = (on(P::PayloadFormatIndicator), p.payload_format_indicator) {
        sink.byte(P::PayloadFormatIndicator, v);
    }
    if let (true, Some(v)) = (on(P::MessageExpiryInterval), message_expiry_interval) {
        sink.four(P::MessageExpiryInterval, v);
    }
    if let (true, Some(v)) = (on(P::ContentType), &p.content_type) {
        sink.string(P::ContentType, v);
    }
    if let (true, Some(v)) = (on(P::ResponseTopic), &p.response_topic) {
        sink.string(P::ResponseTopic, v);
    }
    if let (true, Some(v)) = (on(P::CorrelationData), &p.correlation_data) {
        sink.binary(P::CorrelationData, v);
    }
    if on(P::SubscriptionIdentifier) {
        let ids = if context.allows_repeated_subscription_identifier() {
            subscription_identifiers
        } else {
            subscription_identifiers
                .get(..1)
                .unwrap_or(subscription_identifiers)
        };
        for &v in ids {
            sink.var(P::SubscriptionIdentifier, v);
        }
    }
    if let (true, Some(v)) = (on(P::SessionExpiryInterval), p.session_expiry_interval) {
        sink.four(P::SessionExpiryInterval, v);
    }
    if let (true, Some(v)) = (
        on(P::AssignedClientIdentifier),
        &p.assigned_client_identifier,
    ) {
        sink.string(P::AssignedClientIdentifier, v);
    }
    if let (true, Some(v)) = (on(P::ServerKeepAlive), p.server_keep_alive) {
        sink.two(P::ServerKeepAlive, v);
    }
    if let (true, Some(v)) = (on(P::AuthenticationMethod), &p.authentication_method) {
        sink.string(P::AuthenticationMethod, v);
    }
    if let (true, Some(v)) = (on(P::AuthenticationData), &p.authentication_data) {
        sink.binary(P::AuthenticationData, v);
    }
    if let (true, Some(v)) = (
        on(P::RequestProblemInformation),
        p.request_problem_information,
    ) {
        sink.byte(P::RequestProblemInformation, v);
    }
    if let (true, Some(v)) = (on(P::WillDelayInterval), p.will_delay_interval) {
        sink.four(P::WillDelayInterval, v);
    }
    if let (true, Some(v)) = (
        on(P::RequestResponseInformation),
        p.request_response_information,
    ) {
        sink.byte(P::RequestResponseInformation, v);
    }
    if let (true, Some(v)) = (on(P::ResponseInformation), &p.response_information) {
        sink.string(P::ResponseInformation, v);
    }
    if let (true, Some(v)) = (on(P::ServerReference), &p.server_reference) {
        sink.string(P::ServerReference, v);
    }
    if let (true, Some(v)) = (on(P::ReasonString), &p.reason_string) {
        sink.string(P::ReasonString, v);
    }
    if let (true, Some(v)) = (on(P::ReceiveMaximum), p.receive_maximum) {
        sink.two(P::ReceiveMaximum, v);
    }
    if let (true, Some(v)) = (on(P::TopicAliasMaximum), p.topic_alias_maximum) {
        sink.two(P::TopicAliasMaximum, v);
    }
    if let (true, Some(v)) = (on(P::TopicAlias), topic_alias) {
        sink.two(P::TopicAlias, v);
    }
    if let (true, Some(v)) = (on(P::MaximumQos), p.maximum_qos) {
        sink.byte(P::MaximumQos, v);
    }
    if let (true, Some(v)) = (on(P::RetainAvailable), p.retain_available) {
        sink.byte(P::RetainAvailable, v);
    }
    for (name, value) in &p.user_properties {
        sink.pair(P::UserProperty, name, value);
    }
    if let (true, Some(v)) = (on(P::MaximumPacketSize), p.maximum_packet_size) {
        sink.four(P::MaximumPacketSize, v);
    }
    if let (true, Some(v)) = (
        on(P::WildcardSubscriptionAvailable),
        p.wildcard_subscription_available,
    ) {
        sink.byte(P::WildcardSubscriptionAvailable, v);
    }
    if let (true, Some(v)) = (
        on(P::SubscriptionIdentifierAvailable),
        p.subscription_identifier_available,
    ) {
        sink.byte(P::SubscriptionIdentifierAvailable, v);
    }
    if let (true, Some(v)) = (
        on(P::SharedSubscriptionAvailable),
        p.shared_subscription_available,
    ) {
        sink.byte(P::SharedSubscriptionAvailable, v);
    }
}

/// Bytes of the properties themselves (the value of the Property Length field).
pub(crate) fn body_len(
    p: &Properties,
    context: PropertyContext,
    overrides: Option<&PublishOverrides<'_>>,
) -> usize {
    let mut counter = Counter(0);
    emit(&mut counter, p, context, overrides);
    counter.0
}

/// Bytes [`write()`] appends: the Property Length field and the properties.
pub(crate) fn len(p: &Properties, context: PropertyContext) -> usize {
    len_with(p, context, None)
}

pub(crate) fn len_with(
    p: &Properties,
    context: PropertyContext,
    overrides: Option<&PublishOverrides<'_>>,
) -> usize {
    let body = body_len(p, context, overrides);
    varint_len(u32::try_from(body).unwrap_or(u32::MAX)) + body
}

/// Appends the Property Length and the properties `context` allows.
pub(crate) fn write(out: &mut Vec<u8>, p: &Properties, context: PropertyContext) {
    write_with(out, p, context, None);
}

pub(crate) fn write_with(
    out: &mut Vec<u8>,
    p: &Properties,
    context: PropertyContext,
    overrides: Option<&PublishOverrides<'_>>,
) {
    let body = body_len(p, context, overrides);
    write_varint(out, u32::try_from(body).unwrap_or(u32::MAX));
    write_body(out, p, context, overrides);
}

/// Appends the properties without the Property Length (for callers that computed it).
pub(crate) fn write_body(
    out: &mut Vec<u8>,
    p: &Properties,
    context: PropertyContext,
    overrides: Option<&PublishOverrides<'_>>,
) {
    emit(&mut Writer(out), p, context, overrides);
}

/// Whether [`write()`] would write no property at all for `p` in `context`.
pub(crate) fn is_empty_in(p: &Properties, context: PropertyContext) -> bool {
    body_len(p, context, None) == 0
}
