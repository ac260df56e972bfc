//! The JSON text kept in the `properties` columns: a message's MQTT 5 properties in, the same
//! properties out. Pure functions; run on the `store` thread (and by the web page, which may
//! show the JSON as is).
//!
//! Only message properties are kept: payload_format_indicator, message_expiry_interval,
//! content_type, response_topic, correlation_data (lower-case hex), user_properties
//! (`[[key, value], …]`, order kept). Unknown keys and wrong types are ignored when reading, so a
//! damaged value never stops the broker from starting.

use serde_json::{json, Map, Value};

use crate::protocol::Properties;

/// The JSON object for the message properties of `p`, or `None` when there are none.
pub fn properties_to_json(p: &Properties) -> Option<String> {
    let mut m = Map::new();
    if let Some(v) = p.payload_format_indicator {
        m.insert("payload_format_indicator".into(), json!(v));
    }
    if let Some(v) = p.message_expiry_interval {
        m.insert("message_expiry_interval".into(), json!(v));
    }
    if let Some(v) = &p.content_type {
        m.insert("content_type".into(), json!(v));
    }
    if let Some(v) = &p.response_topic {
        m.insert("response_topic".into(), json!(v));
    }
    if let Some(v) = &p.correlation_data {
        m.insert("correlation_data".into(), json!(hex(v)));
    }
    if !p.user_properties.is_empty() {
        let pairs: Vec<Value> = p
            .user_properties
            .iter()
            .map(|(k, v)| json!([k, v]))
            .collect();
        m.insert("user_properties".into(), Value::Array(pairs));
    }
    if m.is_empty() {
        None
    } else {
        Some(Value::Object(m).to_string())
    }
}

/// The properties stored as JSON by [`properties_to_json`]; defaults for anything unreadable.
pub fn properties_from_json(text: Option<&str>) -> Properties {
    let mut p = Properties::default();
    let Some(text) = text else {
        return p;
    };
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
        log::warn!("store: ignoring unreadable message properties {text:?}");
        return p;
    };
    p.payload_format_indicator = m
        .get("payload_format_indicator")
        .and_then(Value::as_u64)
        .and_then(|v| u8::try_from(v).ok());
    p.message_expiry_interval = m
        .get("message_expiry_interval")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    p.content_type = m
        .get("content_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    p.response_topic = m
        .get("response_topic")
        .and_then(Value::as_str)
        .map(str::to_owned);
    p.correlation_data = m
        .get("correlation_data")
        .and_then(Value::as_str)
        .and_then(unhex);
    if let Some(Value::Array(pairs)) = m.get("user_properties") {
        for pair in pairs {
            if let Some([Value::String(k), Value::String(v)]) = pair.as_array().map(Vec::as_slice) {
                p.user_properties.push((k.clone(), v.clone()));
            }
        }
    }
    p
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_properties_round_trip() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(vec![0, 1, 0xfe, 0xff]),
            user_properties: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
            ..Properties::default()
        };
        let text = properties_to_json(&p).unwrap();
        assert_eq!(properties_from_json(Some(&text)), p);
    }

    #[test]
    fn no_properties_is_null_and_garbage_is_default() {
        assert_eq!(properties_to_json(&Properties::default()), None);
        assert_eq!(properties_from_json(None), Properties::default());
        assert_eq!(properties_from_json(Some("{oops")), Properties::default());
        let p = properties_from_json(Some(r#"{"correlation_data":"zz","content_type":5}"#));
        assert_eq!(p, Properties::default());
    }
}
