//! The JSON the API answers for instances and peers, built in one place. With
//! `--unknown-values` it carries what the docs do not mention and a client must tolerate:
//! undocumented fields on every object and peers of an undocumented kind.

use serde_json::{Value, json};

use super::Fidelity;
use super::state::{StoredInstance, StoredPeer};
use crate::altostrat::model::{Peer, PeerType, Protocol};

/// Instance `stored` as the API answers it at `now`.
pub fn instance(fidelity: &Fidelity, stored: &StoredInstance, now: u64) -> Value {
    undocumented(fidelity, to_json(&stored.view(now)))
}

/// Peer `stored` as the API answers it.
pub fn peer(fidelity: &Fidelity, stored: &StoredPeer) -> Value {
    let mut value = to_json(&stored.peer);
    if stored.foreign
        && let Value::Object(fields) = &mut value
    {
        // The model cannot spell an undocumented kind, so the stored peer says `Unknown` (what
        // a client reads) and the wire form is written here.
        fields.insert("type".into(), json!("gateway"));
        fields.insert("protocol".into(), json!("ipsec"));
        fields.insert("user_id".into(), Value::Null);
        fields.insert("site_id".into(), Value::Null);
        fields.insert("subnets".into(), json!([]));
    }
    undocumented(fidelity, value)
}

/// The peer of an undocumented kind every instance gets at creation with `--unknown-values`:
/// a gateway over IPsec that belongs to no user or site and takes no peer seat.
pub fn foreign_peer(instance_id: &str, seq: u64, created_at: String) -> StoredPeer {
    StoredPeer {
        instance_id: instance_id.to_owned(),
        peer: Peer {
            id: uuid::Uuid::new_v4().to_string(),
            peer_type: PeerType::Unknown,
            protocol: Protocol::Unknown,
            created_at: Some(created_at),
            ..Peer::default()
        },
        seq,
        foreign: true,
        token_generation: 0,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Fields the docs never mention, as a newer service version might add them.
fn undocumented(fidelity: &Fidelity, mut value: Value) -> Value {
    if fidelity.unknown_values
        && let Value::Object(fields) = &mut value
    {
        fields.insert("labels".into(), json!({}));
        fields.insert("billing".into(), json!({"plan": "pro", "seats": 5}));
    }
    value
}
