//! Share tokens: what a client peer's `token` holds and `GET /vpn/client` takes as its bearer.
//!
//! A token has the shape of the documented example (`eyJpdiI6...`), a Laravel
//! `Crypt::encrypt` payload: base64 of `{"iv", "value", "mac", "tag"}`. Like a real encrypted
//! payload it carries what checking it needs (its peer, the peer's token generation and its
//! expiry), so no table of issued tokens is kept: with [`ShareTokens::EveryRead`] a peer has as
//! many live tokens as it had reads. The `value` is scrambled and the `mac` is a keyed hash,
//! neither of them cryptographic: they keep clients from parsing the token and a mangled token
//! from passing, nothing more.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ShareTokens;
use super::encoding::{base64, hex, pseudo_bytes, unbase64};
use super::state::{State, StoredPeer};
use crate::altostrat::model::PeerType;

/// Mixed into the scrambling and the mac, so that a token is this simulator's.
const KEY: &[u8] = b"altostrat-simulator-share-token";

/// How long tokens live and when a read shows a new one.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub ttl: Duration,
    pub mode: ShareTokens,
}

/// Why a presented share token opens nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token this simulator issued, or its peer is gone.
    Invalid,
    /// Issued for a peer that still exists, but past its expiry (or expired by the admin API).
    Expired,
}

/// The JSON inside a token, in Laravel's field order (so a token starts with `eyJpdiI6`).
#[derive(Serialize, Deserialize)]
struct Payload {
    iv: String,
    value: String,
    mac: String,
    #[serde(default)]
    tag: String,
}

/// What a token says about itself.
#[derive(Debug, PartialEq, Eq)]
struct Claims {
    peer_id: String,
    generation: u64,
    expires_ms: u64,
}

/// Prepares `stored` for a read that shows it at `now`: `token_ttl` is the configured life; a
/// client peer shows a new token when the policy asks for one, any other peer none. True if
/// the peer changed (the state should be saved).
pub fn on_read(stored: &mut StoredPeer, policy: Policy, now: u64) -> bool {
    if stored.foreign {
        return false;
    }
    let before = (stored.peer.token.clone(), stored.peer.token_ttl);
    stored.peer.token_ttl = Some(i64::try_from(policy.ttl.as_secs()).unwrap_or(i64::MAX));
    if stored.peer.peer_type != PeerType::Client {
        stored.peer.token = None;
    } else if policy.mode == ShareTokens::EveryRead || !shows_live_token(stored, now) {
        let expires_ms = now.saturating_add(policy.ttl.as_millis() as u64);
        stored.peer.token = Some(issue(&stored.peer.id, stored.token_generation, expires_ms));
    }
    before != (stored.peer.token.clone(), stored.peer.token_ttl)
}

/// Every token issued for `stored` so far is expired from now on.
pub fn expire(stored: &mut StoredPeer) {
    stored.token_generation += 1;
}

/// The client peer `token` opens at `now`.
pub fn holder<'a>(state: &'a State, token: &str, now: u64) -> Result<&'a StoredPeer, Refusal> {
    let claims = claims(token).ok_or(Refusal::Invalid)?;
    let stored = state
        .peers
        .get(&claims.peer_id)
        .filter(|p| p.peer.peer_type == PeerType::Client && !p.foreign)
        .ok_or(Refusal::Invalid)?;
    if claims.generation != stored.token_generation || claims.expires_ms <= now {
        return Err(Refusal::Expired);
    }
    Ok(stored)
}

/// Whether the token `stored` shows would still be accepted at `now`. A token from an older
/// state file (another shape) is not, so it is replaced at the first read.
fn shows_live_token(stored: &StoredPeer, now: u64) -> bool {
    stored.peer.token.as_deref().and_then(claims).is_some_and(|c| {
        c.peer_id == stored.peer.id && c.generation == stored.token_generation && c.expires_ms > now
    })
}

fn issue(peer_id: &str, generation: u64, expires_ms: u64) -> String {
    let iv: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let claims = format!("{peer_id}|{generation}|{expires_ms}");
    let value = base64(&scramble(&iv, claims.as_bytes()));
    let iv = base64(&iv);
    let payload = Payload {
        mac: mac(&iv, &value),
        iv,
        value,
        tag: String::new(),
    };
    base64(&serde_json::to_vec(&payload).unwrap_or_default())
}

fn claims(token: &str) -> Option<Claims> {
    let payload: Payload = serde_json::from_slice(&unbase64(token)?).ok()?;
    if mac(&payload.iv, &payload.value) != payload.mac {
        return None;
    }
    let iv = unbase64(&payload.iv)?;
    let text = String::from_utf8(scramble(&iv, &unbase64(&payload.value)?)).ok()?;
    let mut parts = text.split('|');
    let claims = Claims {
        peer_id: parts.next()?.to_owned(),
        generation: parts.next()?.parse().ok()?,
        expires_ms: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(claims)
}

/// XOR with a stream derived from the iv: applied twice, it gives the input back.
fn scramble(iv: &[u8], data: &[u8]) -> Vec<u8> {
    let stream = pseudo_bytes(&[KEY, iv].concat(), data.len());
    data.iter().zip(stream).map(|(d, k)| d ^ k).collect()
}

/// 64 hexadecimal digits, as Laravel's HMAC-SHA256 mac has.
fn mac(iv: &str, value: &str) -> String {
    hex(&pseudo_bytes(
        &[KEY, iv.as_bytes(), value.as_bytes()].concat(),
        32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::altostrat::model::Peer;

    const PEER: &str = "550e8400-e29b-41d4-a716-446655440000";

    fn stored(peer_type: PeerType) -> StoredPeer {
        StoredPeer {
            instance_id: "i".into(),
            peer: Peer {
                id: PEER.into(),
                peer_type,
                ..Peer::default()
            },
            seq: 1,
            foreign: false,
            token_generation: 0,
        }
    }

    fn policy(mode: ShareTokens) -> Policy {
        Policy {
            ttl: Duration::from_secs(60),
            mode,
        }
    }

    fn state_with(stored: StoredPeer) -> State {
        let mut state = State::default();
        state.peers.insert(stored.peer.id.clone(), stored);
        state
    }

    #[test]
    fn a_token_looks_like_a_laravel_payload_and_says_what_it_was_issued_for() {
        let token = issue(PEER, 3, 1_000);
        assert!(token.starts_with("eyJpdiI6"), "{token}");
        let payload: serde_json::Value = serde_json::from_slice(&unbase64(&token).unwrap()).unwrap();
        assert_eq!(payload["mac"].as_str().unwrap().len(), 64, "{payload}");
        assert!(
            !payload.to_string().contains(PEER),
            "the claims are not readable: {payload}"
        );
        let expected = Claims {
            peer_id: PEER.into(),
            generation: 3,
            expires_ms: 1_000,
        };
        assert_eq!(claims(&token), Some(expected));
        assert_ne!(issue(PEER, 3, 1_000), token, "each token is new");
    }

    #[test]
    fn a_mangled_token_says_nothing() {
        let token = issue(PEER, 0, 1_000);
        let mut payload: Payload = serde_json::from_slice(&unbase64(&token).unwrap()).unwrap();
        payload.value = base64(&scramble(&unbase64(&payload.iv).unwrap(), b"other|0|9999"));
        let forged = base64(&serde_json::to_vec(&payload).unwrap());
        assert_eq!(claims(&forged), None, "the mac no longer matches");
        assert_eq!(claims("shr_0123"), None);
        assert_eq!(claims(""), None);
    }

    #[test]
    fn a_read_reissues_an_expired_token_only() {
        let mut peer = stored(PeerType::Client);
        let policy = policy(ShareTokens::ReissuedWhenExpired);
        assert!(on_read(&mut peer, policy, 10_000), "the first read issues one");
        let first = peer.peer.token.clone().unwrap();
        assert_eq!(peer.peer.token_ttl, Some(60));
        assert!(!on_read(&mut peer, policy, 69_999), "still live: unchanged");
        assert_eq!(peer.peer.token.as_deref(), Some(first.as_str()));
        assert!(on_read(&mut peer, policy, 70_000), "expired at issue + ttl");
        let second = peer.peer.token.clone().unwrap();
        assert_ne!(second, first);
        expire(&mut peer);
        assert!(on_read(&mut peer, policy, 70_001), "expired by the admin API");
        assert_ne!(peer.peer.token.as_deref(), Some(second.as_str()));
    }

    #[test]
    fn every_read_issues_a_token_and_the_older_ones_stay_valid_until_they_expire() {
        let mut peer = stored(PeerType::Client);
        let policy = policy(ShareTokens::EveryRead);
        on_read(&mut peer, policy, 10_000);
        let first = peer.peer.token.clone().unwrap();
        assert!(on_read(&mut peer, policy, 10_001));
        let second = peer.peer.token.clone().unwrap();
        assert_ne!(first, second);
        let mut state = state_with(peer);
        assert!(holder(&state, &first, 69_999).is_ok());
        assert_eq!(holder(&state, &first, 70_000).err(), Some(Refusal::Expired));
        assert!(holder(&state, &second, 70_000).is_ok(), "its own expiry is later");
        expire(state.peers.get_mut(PEER).unwrap());
        assert_eq!(holder(&state, &second, 10_002).err(), Some(Refusal::Expired));
        state.peers.clear();
        assert_eq!(
            holder(&state, &second, 10_002).err(),
            Some(Refusal::Invalid),
            "peer gone"
        );
    }

    #[test]
    fn site_and_undocumented_peers_carry_no_token() {
        let mut site = stored(PeerType::Site);
        site.peer.token = Some(issue(PEER, 0, u64::MAX));
        assert!(on_read(&mut site, policy(ShareTokens::EveryRead), 0));
        assert_eq!(
            (site.peer.token.as_deref(), site.peer.token_ttl),
            (None, Some(60))
        );
        let token = issue(PEER, 0, u64::MAX);
        assert_eq!(holder(&state_with(site), &token, 0).err(), Some(Refusal::Invalid));
        let mut foreign = stored(PeerType::Unknown);
        foreign.foreign = true;
        assert!(!on_read(&mut foreign, policy(ShareTokens::EveryRead), 0));
        assert_eq!((foreign.peer.token, foreign.peer.token_ttl), (None, None));
    }
}
