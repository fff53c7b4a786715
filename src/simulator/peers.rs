//! The peer endpoints of the core, site subnets, regions and client configurations, and the
//! out-of-band changes of peers.

use serde_json::{Value, json};

use super::client_config;
use super::core::{Answer, Core, Failure, Reply, failure, not_found, now_rfc3339, parse_body, valid_id};
use super::render;
use super::share::{self, Refusal};
use super::state::{Owner, State, StoredPeer, now_ms};
use super::validate;
use crate::altostrat::model::{Peer, PeerType, Protocol};

impl Core {
    /// `GET /vpn/instances/{instanceId}/peers`, optionally filtered by the raw query's `type`.
    pub fn list_peers(&self, token: Option<&str>, id: &str, query: Option<&str>) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:view")?;
        let kind = type_filter(query)?;
        let mut state = self.state();
        if state.instance_of(account, id).is_none() {
            return Err(not_found("instance", id));
        }
        let (policy, now) = (self.share_policy(), now_ms());
        let mut changed = false;
        let views: Vec<Value> = state
            .peers_of_mut(id)
            .into_iter()
            .filter(|p| kind.is_none_or(|k| p.peer.peer_type == k))
            .map(|p| {
                changed |= share::on_read(p, policy, now);
                render::peer(&self.config.fidelity, p)
            })
            .collect();
        if changed {
            self.persist(&state);
        }
        Ok(Reply::ok(&views))
    }

    /// How this simulator issues share tokens.
    fn share_policy(&self) -> share::Policy {
        share::Policy {
            ttl: self.config.share_token_ttl,
            mode: self.config.fidelity.share_tokens,
        }
    }

    /// `POST /vpn/instances/{instanceId}/peers`.
    pub fn create_peer(&self, token: Option<&str>, id: &str, body: &[u8]) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:create")?;
        self.require_instance(account, id)?;
        let body = parse_body(body)?;
        let peer = new_peer(validate::object(&body)?)?;
        let mut state = self.state();
        self.check_owner_exists(&state, &peer)?;
        self.check_peer_seats(&state, account)?;
        let stored = self.insert_peer(&mut state, id, peer);
        Ok(Reply::json(201, &render::peer(&self.config.fidelity, &stored)))
    }

    /// Stores `peer` on instance `id`, marks the instance `peer-created` and returns the peer
    /// as read now.
    fn insert_peer(&self, state: &mut State, id: &str, peer: Peer) -> StoredPeer {
        let seq = state.next_seq();
        let clear = self.config.status_clear_delay;
        if let Some(instance) = state.instances.get_mut(id) {
            instance.add_pending("peer-created", clear, now_ms());
        }
        let mut stored = StoredPeer {
            instance_id: id.to_owned(),
            peer,
            seq,
            foreign: false,
            token_generation: 0,
        };
        share::on_read(&mut stored, self.share_policy(), now_ms());
        state.peers.insert(stored.peer.id.clone(), stored.clone());
        self.persist(state);
        stored
    }

    /// Puts a peer described by a create body (`body`) on instance `id` of any account, as if
    /// created out of band at `created_at` (never counted as a call).
    pub fn seed_peer(&self, id: &str, body: &Value, created_at: &str) -> Answer<Peer> {
        let mut peer = new_peer(validate::object(body)?)?;
        peer.created_at = Some(created_at.to_owned());
        let mut state = self.state();
        if !state.instances.contains_key(id) {
            return Err(not_found("instance", id));
        }
        Ok(self.insert_peer(&mut state, id, peer).peer)
    }

    /// A peer for a user or site deleted out of band is refused as the service's `exists`
    /// validation rule refuses it: Laravel's 422 body with `{message}`-only errors, else a 422
    /// ErrorResponse like the simulator's other validation errors.
    fn check_owner_exists(&self, state: &State, peer: &Peer) -> Answer<()> {
        let Some((owner, id)) = Owner::of(peer) else {
            return Ok(());
        };
        if !state.is_deleted(owner, id) {
            return Ok(());
        }
        let what = owner.noun();
        if self.config.fidelity.message_only_errors {
            let message = format!("The selected {what} id is invalid.");
            return Err(Failure::laravel(422, owner.field(), &message));
        }
        Err(failure(
            422,
            "invalid_request_error",
            &format!("{what}_not_found"),
            format!("No such {what}: {id}"),
        ))
    }

    /// With `--peer-seats`, refuses a peer beyond the account's seats as the service's billing
    /// check does: `abort(403, message)`, a bare `{message}` body.
    fn check_peer_seats(&self, state: &State, account: &str) -> Answer<()> {
        let Some(seats) = self.config.fidelity.peer_seats else {
            return Ok(());
        };
        let used = state
            .peers
            .values()
            // A peer of an undocumented kind is the service's own, not a seat the account bought.
            .filter(|p| !p.foreign)
            .filter(|p| {
                state
                    .instances
                    .get(&p.instance_id)
                    .is_some_and(|i| i.account == account)
            })
            .count();
        if used < seats as usize {
            return Ok(());
        }
        let message =
            format!("You have reached the limit of {seats} Managed VPN peer seats for your subscription.");
        let mut f = failure(403, "invalid_request_error", "", message);
        f.message_only = true;
        Err(f)
    }

    /// `GET /vpn/instances/{instanceId}/peers/{peerId}`.
    pub fn get_peer(&self, token: Option<&str>, id: &str, peer_id: &str) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:view")?;
        let mut state = self.state();
        let stored = find_peer(&mut state, account, id, peer_id)?;
        let changed = share::on_read(stored, self.share_policy(), now_ms());
        let view = render::peer(&self.config.fidelity, stored);
        if changed {
            self.persist(&state);
        }
        Ok(Reply::ok(&view))
    }

    /// `PUT /vpn/instances/{instanceId}/peers/{peerId}`.
    pub fn update_peer(&self, token: Option<&str>, id: &str, peer_id: &str, body: &[u8]) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:update")?;
        let mut state = self.state();
        let kind = find_peer(&mut state, account, id, peer_id)?.peer.peer_type;
        let body = parse_body(body)?;
        let body = validate::object(&body)?;
        let subnets = validate::string_list(body, "subnets", false)?;
        let route_all = validate::optional_bool(body, "route_all")?;
        match kind {
            PeerType::Client if subnets.is_some() => {
                return Err(validate::invalid("subnets", "applies to site peers only").into());
            }
            PeerType::Site if route_all.is_some() => {
                return Err(validate::invalid("route_all", "applies to client peers only").into());
            }
            _ => {}
        }
        if let Some(subnets) = &subnets {
            validate::ipv4_networks("subnets", subnets)?;
        }
        let stored = find_peer(&mut state, account, id, peer_id)?;
        if let Some(subnets) = subnets {
            stored.peer.subnets = subnets;
        }
        if let Some(route_all) = route_all {
            stored.peer.route_all = route_all;
        }
        share::on_read(stored, self.share_policy(), now_ms());
        let view = render::peer(&self.config.fidelity, stored);
        self.persist(&state);
        Ok(Reply::ok(&view))
    }

    /// `DELETE /vpn/instances/{instanceId}/peers/{peerId}`.
    pub fn delete_peer(&self, token: Option<&str>, id: &str, peer_id: &str) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:delete")?;
        let mut state = self.state();
        find_peer(&mut state, account, id, peer_id)?;
        state.peers.remove(peer_id);
        let clear = self.config.status_clear_delay;
        if let Some(instance) = state.instances.get_mut(id) {
            instance.add_pending("peer-deleted", clear, now_ms());
        }
        self.persist(&state);
        Ok(Reply::empty(204))
    }

    /// `GET /vpn/site/{siteId}/subnets`: the subnets available at the site, for configuring
    /// site peers (not built from existing peers). The item shape `{subnet, name}` is the
    /// project's choice: the real one is not published.
    pub fn site_subnets(&self, token: Option<&str>, site_id: &str) -> Answer<Reply> {
        self.authorize(token, "vpn:view")?;
        let subnets = valid_id(site_id)
            .then(|| self.state().site_subnets(site_id))
            .flatten()
            .ok_or_else(|| not_found("site", site_id))?;
        let items: Vec<Value> = subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| json!({"subnet": subnet, "name": subnet_name(i)}))
            .collect();
        Ok(Reply::ok(&items))
    }

    /// `GET /vpn/servers/regions`.
    pub fn regions(&self, token: Option<&str>) -> Answer<Reply> {
        self.authorize(token, "vpn:view")?;
        Ok(Reply::ok(&self.config.regions))
    }

    /// `GET /vpn/client`: the caller presents a client peer's share token. A token that opens
    /// nothing is refused as a bearer-auth endpoint refuses it, 401; 404 is kept for a live
    /// token whose instance is gone.
    pub fn client_configuration(&self, share_token: Option<&str>, wants_json: bool) -> Answer<Reply> {
        let Some(presented) = share_token else {
            return Err(failure(
                401,
                "authentication_error",
                "invalid_token",
                "A share token is required.",
            ));
        };
        let state = self.state();
        let stored = share::holder(&state, presented, now_ms()).map_err(share_refused)?;
        let Some(instance) = state.instances.get(&stored.instance_id).map(|i| i.view(now_ms())) else {
            return Err(not_found("instance", &stored.instance_id));
        };
        Ok(client_config::answer(&stored.peer, &instance, wants_json))
    }

    /// The peers of instance `id` as stored, in creation order.
    pub fn peers_of(&self, id: &str) -> Vec<Peer> {
        let state = self.state();
        let mut peers: Vec<&StoredPeer> = state.peers.values().filter(|p| p.instance_id == id).collect();
        peers.sort_by_key(|p| p.seq);
        peers.iter().map(|p| p.peer.clone()).collect()
    }

    /// Removes peer `id` out of band, as a deletion in the portal.
    pub fn remove_peer(&self, id: &str) {
        let mut state = self.state();
        state.peers.remove(id);
        self.persist(&state);
    }

    /// Runs `f` on peer `id` of any account (for out-of-band changes) and persists the change.
    pub fn with_peer<T>(&self, id: &str, f: impl FnOnce(&mut StoredPeer) -> T) -> Answer<T> {
        let mut state = self.state();
        let Some(stored) = state.peers.get_mut(id) else {
            return Err(not_found("peer", id));
        };
        let result = f(stored);
        self.persist(&state);
        Ok(result)
    }

    /// Every share token shown so far, of every peer, expires now, as if its `token_ttl` had
    /// passed.
    pub fn expire_share_tokens(&self) {
        let mut state = self.state();
        state.peers.values_mut().for_each(share::expire);
        self.persist(&state);
    }
}

fn peer_type(value: &str, field: &str) -> Answer<PeerType> {
    match value {
        "client" => Ok(PeerType::Client),
        "site" => Ok(PeerType::Site),
        _ => Err(validate::invalid(field, "must be one of: client, site").into()),
    }
}

/// The `type` filter, parsed by hand so that every malformed query gets an ErrorResponse.
fn type_filter(query: Option<&str>) -> Answer<Option<PeerType>> {
    let values: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(k, _)| *k == "type")
        .map(|(_, v)| v)
        .collect();
    match values.as_slice() {
        [] => Ok(None),
        [one] => peer_type(one, "type").map(Some),
        _ => Err(validate::invalid("type", "must be given at most once").into()),
    }
}

/// The peer a create body describes, validated as the docs require.
fn new_peer(body: &serde_json::Map<String, Value>) -> Answer<Peer> {
    let kind = peer_type(validate::required_str(body, "type")?, "type")?;
    let protocol = match validate::required_str(body, "protocol")? {
        "wireguard" => Protocol::Wireguard,
        "openvpn" => Protocol::Openvpn,
        _ => return Err(validate::invalid("protocol", "must be one of: wireguard, openvpn").into()),
    };
    let mut peer = Peer {
        id: uuid::Uuid::new_v4().to_string(),
        peer_type: kind,
        protocol,
        created_at: Some(now_rfc3339()),
        ..Peer::default()
    };
    match kind {
        PeerType::Client => client_fields(body, &mut peer)?,
        PeerType::Site => site_fields(body, &mut peer)?,
        // `peer_type` never yields it.
        PeerType::Unknown => return Err(validate::invalid("type", "must be one of: client, site").into()),
    }
    Ok(peer)
}

fn client_fields(body: &serde_json::Map<String, Value>, peer: &mut Peer) -> Answer<()> {
    if peer.protocol != Protocol::Wireguard {
        return Err(validate::invalid("protocol", "must be wireguard for client peers").into());
    }
    let user_id = validate::optional_str(body, "user_id")?.ok_or_else(|| validate::missing("user_id"))?;
    validate::uuid("user_id", user_id)?;
    peer.user_id = Some(user_id.to_owned());
    peer.route_all =
        validate::optional_bool(body, "route_all")?.ok_or_else(|| validate::missing("route_all"))?;
    Ok(())
}

fn site_fields(body: &serde_json::Map<String, Value>, peer: &mut Peer) -> Answer<()> {
    let site_id = validate::optional_str(body, "site_id")?.ok_or_else(|| validate::missing("site_id"))?;
    validate::uuid("site_id", site_id)?;
    let subnets = validate::string_list(body, "subnets", true)?.unwrap_or_default();
    validate::ipv4_networks("subnets", &subnets)?;
    peer.site_id = Some(site_id.to_owned());
    peer.subnets = subnets;
    Ok(())
}

fn find_peer<'a>(
    state: &'a mut State,
    account: &str,
    instance_id: &str,
    peer_id: &str,
) -> Answer<&'a mut StoredPeer> {
    if state.instance_of(account, instance_id).is_none() {
        return Err(not_found("instance", instance_id));
    }
    state
        .peers
        .get_mut(peer_id)
        .filter(|p| p.instance_id == instance_id)
        .ok_or_else(|| not_found("peer", peer_id))
}

/// "LAN", "LAN 2", "LAN 3", ...: a site's networks named as a router's interface lists do.
fn subnet_name(index: usize) -> String {
    match index {
        0 => "LAN".to_owned(),
        i => format!("LAN {}", i + 1),
    }
}

fn share_refused(refusal: Refusal) -> Failure {
    match refusal {
        Refusal::Invalid => failure(
            401,
            "authentication_error",
            "invalid_token",
            "The share token is not valid.",
        ),
        Refusal::Expired => failure(
            401,
            "authentication_error",
            "token_expired",
            "The share token has expired.",
        ),
    }
}
