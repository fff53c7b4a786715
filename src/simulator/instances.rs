//! The instance endpoints of the core, and the out-of-band changes of instances.

use serde_json::Value;

use super::core::{Answer, Core, Failure, Reply, failure, not_found, now_rfc3339, parse_body, valid_id};
use super::render;
use super::state::{StoredInstance, now_ms};
use super::validate;
use super::{DEFAULT_ACCOUNT, InstanceDelete};
use crate::altostrat::model::{DnsCustomRecord, DnsRecordType, FirewallRule, Instance, region_codes};

/// An instance put in place out of band, as if created in the Altostrat portal.
#[derive(Clone, Debug)]
pub struct SeedInstance<'a> {
    pub account: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub region: &'a str,
    /// `created_at` as Altostrat shows it.
    pub created_at: &'a str,
}

impl Default for SeedInstance<'_> {
    fn default() -> Self {
        Self {
            account: DEFAULT_ACCOUNT,
            name: "Made elsewhere",
            hostname: "elsewhere",
            region: "sjc",
            created_at: "2026-01-01T00:00:00Z",
        }
    }
}

/// The validated fields of an instance update.
struct InstanceChange {
    name: String,
    pushed_routes: Vec<String>,
    public_dns: Vec<String>,
    domains: Vec<String>,
    split_dns: Vec<String>,
    dns_custom: Vec<DnsCustomRecord>,
}

impl InstanceChange {
    fn parse(body: &[u8]) -> Answer<Self> {
        let body = parse_body(body)?;
        let body = validate::object(&body)?;
        let name = validate::required_str(body, "name")?;
        validate::name(name)?;
        let pushed_routes = validate::string_list(body, "pushed_routes", true)?.unwrap_or_default();
        validate::ipv4_networks("pushed_routes", &pushed_routes)?;
        let public_dns = validate::string_list(body, "public_dns", true)?.unwrap_or_default();
        validate::public_dns(&public_dns)?;
        let domains = validate::string_list(body, "domains", false)?.unwrap_or_default();
        validate::domains(&domains)?;
        let split_dns = validate::string_list(body, "split_dns", false)?.unwrap_or_default();
        validate::ipv4s("split_dns", &split_dns)?;
        Ok(Self {
            name: name.to_owned(),
            pushed_routes,
            public_dns,
            domains,
            split_dns,
            dns_custom: dns_records(body)?,
        })
    }

    /// Applies the change; true if anything differs from before.
    fn apply(self, i: &mut Instance) -> bool {
        let changed = i.name != self.name
            || i.pushed_routes != self.pushed_routes
            || i.public_dns != self.public_dns
            || i.domains != self.domains
            || i.split_dns != self.split_dns
            || i.dns_custom != self.dns_custom;
        i.name = self.name;
        i.pushed_routes = self.pushed_routes;
        i.public_dns = self.public_dns;
        i.domains = self.domains;
        i.split_dns = self.split_dns;
        i.dns_custom = self.dns_custom;
        changed
    }
}

impl Core {
    /// `GET /vpn/instances`: the account's instances in creation order.
    pub fn list_instances(&self, token: Option<&str>) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:view")?;
        let now = now_ms();
        let state = self.state();
        let views: Vec<Value> = state
            .instances_in_order()
            .iter()
            .filter(|i| i.account == account)
            .map(|i| render::instance(&self.config.fidelity, i, now))
            .collect();
        Ok(Reply::ok(&views))
    }

    /// `POST /vpn/instances`.
    pub fn create_instance(&self, token: Option<&str>, body: &[u8]) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:create")?;
        let body = parse_body(body)?;
        let body = validate::object(&body)?;
        let name = validate::required_str(body, "name")?;
        validate::name(name)?;
        let hostname = validate::required_str(body, "hostname")?;
        validate::hostname(hostname)?;
        let region = validate::required_str(body, "region")?;
        let codes = region_codes(&self.config.regions);
        if !codes.iter().any(|c| c == region) {
            return Err(failure(
                422,
                "invalid_request_error",
                "region_unknown",
                format!("The 'region' parameter must be one of: {}.", codes.join(", ")),
            ));
        }
        let delay = self.provision_delay();
        let seed = SeedInstance {
            account,
            name,
            hostname,
            region,
            created_at: &now_rfc3339(),
        };
        let view = self.insert_instance(&seed, delay.as_millis() as u64)?;
        Ok(Reply::json(201, &view))
    }

    /// Puts an instance in place as if created out of band (never counted as a call); it is
    /// provisioned at once.
    pub fn seed_instance(&self, seed: &SeedInstance) -> Answer<Instance> {
        self.insert_instance(seed, 0)?;
        let state = self.state();
        let stored = state.instances_in_order().last().map(|i| i.view(now_ms()));
        Ok(stored.expect("just inserted"))
    }

    /// Stores a new instance (refused if its hostname is taken in any account) and returns it
    /// as the create answer shows it.
    fn insert_instance(&self, seed: &SeedInstance, delay_ms: u64) -> Answer<Value> {
        let mut state = self.state();
        // Unique across accounts (it becomes a public DNS name): the holder may be an instance
        // this token cannot see.
        if state.hostname_taken(seed.hostname) {
            return Err(self.hostname_taken(seed.hostname));
        }
        let now = now_ms();
        let seq = state.next_seq();
        let fidelity = &self.config.fidelity;
        let mut instance = new_instance(seed.name, seed.hostname, seed.region, fidelity.single_public_dns);
        instance.created_at = Some(seed.created_at.to_owned());
        let stored = StoredInstance {
            instance,
            account: seed.account.to_owned(),
            provision_started_ms: now,
            provision_delay_ms: delay_ms,
            pending: vec![],
            seq,
            teardown_ends_ms: None,
        };
        let view = render::instance(fidelity, &stored, now);
        let id = stored.instance.id.clone();
        if fidelity.unknown_values {
            let seq = state.next_seq();
            let foreign = render::foreign_peer(&id, seq, now_rfc3339());
            state.peers.insert(foreign.peer.id.clone(), foreign);
        }
        state.instances.insert(id, stored);
        self.persist(&state);
        Ok(view)
    }

    fn hostname_taken(&self, hostname: &str) -> Failure {
        match self.config.fidelity.hostname_taken_status {
            // Laravel's answer to a failed `unique` rule.
            status @ (400 | 422) => {
                Failure::laravel(status, "hostname", "The hostname has already been taken.")
            }
            _ => failure(
                409,
                "invalid_request_error",
                "hostname_taken",
                format!("The 'hostname' parameter '{hostname}' is already in use."),
            ),
        }
    }

    /// 404 unless the account has the instance, 409 while it is being torn down (a change to
    /// it or a new peer on it would be lost). Checked before the body so that an unknown or
    /// departing instance is reported as such rather than as a validation error.
    pub(super) fn require_instance(&self, account: &str, id: &str) -> Answer<()> {
        let state = self.state();
        match state.instance_of(account, id) {
            None => Err(not_found("instance", id)),
            Some(instance) if instance.is_deleting() => Err(failure(
                409,
                "invalid_request_error",
                "instance_deleting",
                "The instance is being deleted.",
            )),
            Some(_) => Ok(()),
        }
    }

    /// Runs `f` on instance `id` of `account` (`None`: any account, for out-of-band changes)
    /// and persists the change.
    pub(super) fn with_instance<T>(
        &self,
        account: Option<&str>,
        id: &str,
        f: impl FnOnce(&mut StoredInstance) -> T,
    ) -> Answer<T> {
        let mut state = self.state();
        let instance = match account {
            Some(account) => state.instance_of_mut(account, id),
            None => state.instances.get_mut(id),
        };
        let Some(instance) = instance.filter(|_| valid_id(id)) else {
            return Err(not_found("instance", id));
        };
        let result = f(instance);
        self.persist(&state);
        Ok(result)
    }

    /// `GET /vpn/instances/{instanceId}`.
    pub fn get_instance(&self, token: Option<&str>, id: &str) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:view")?;
        let state = self.state();
        state
            .instance_of(account, id)
            .map(|i| Reply::ok(&render::instance(&self.config.fidelity, i, now_ms())))
            .ok_or_else(|| not_found("instance", id))
    }

    /// `PUT /vpn/instances/{instanceId}`.
    pub fn update_instance(&self, token: Option<&str>, id: &str, body: &[u8]) -> Answer<Reply> {
        let account = self.authorize(token, "vpn:update")?;
        self.require_instance(account, id)?;
        let change = InstanceChange::parse(body)?;
        let clear = self.config.status_clear_delay;
        let fidelity = &self.config.fidelity;
        let rewrite = self.update_rewrite();
        self.with_instance(Some(account), id, |stored| {
            let now = now_ms();
            if change.apply(&mut stored.instance) {
                stored.add_pending("config-updated", clear, now);
                if fidelity.unknown_values {
                    stored.add_pending("firewall-syncing", clear, now);
                }
            }
            if let Some(rewrite) = rewrite {
                rewrite(&mut stored.instance);
            }
            Reply::ok(&render::instance(fidelity, stored, now))
        })
    }

    /// `DELETE /vpn/instances/{instanceId}`: 204, 202 with a teardown, or 405, as the fidelity
    /// says.
    pub fn delete_instance(&self, token: Option<&str>, id: &str) -> Answer<Reply> {
        let mode = self.instance_delete();
        if mode == InstanceDelete::NotAllowed {
            // Laravel matches the route before any middleware runs, so no token is even checked.
            return Ok(delete_not_allowed(id));
        }
        let account = self.authorize(token, "vpn:delete")?;
        let mut state = self.state();
        let Some(instance) = state.instance_of_mut(account, id) else {
            return Err(not_found("instance", id));
        };
        let status = match mode {
            InstanceDelete::Asynchronous { teardown } => {
                instance.start_teardown(teardown, now_ms());
                202
            }
            InstanceDelete::Immediate | InstanceDelete::NotAllowed => {
                state.remove_instance(id);
                204
            }
        };
        self.persist(&state);
        Ok(Reply::empty(status))
    }

    /// The instances of `account` as the API shows them now, in creation order.
    pub fn instances_of(&self, account: &str) -> Vec<Instance> {
        let now = now_ms();
        self.state()
            .instances_in_order()
            .iter()
            .filter(|i| i.account == account)
            .map(|i| i.view(now))
            .collect()
    }

    /// Changes instance `id` of any account out of band, as an edit in the Altostrat portal.
    pub fn edit_instance(&self, id: &str, edit: impl FnOnce(&mut Instance)) -> Answer<Instance> {
        self.with_instance(None, id, |stored| {
            edit(&mut stored.instance);
            stored.view(now_ms())
        })
    }

    /// Removes instance `id` and its peers out of band, as a deletion in the portal.
    pub fn remove_instance(&self, id: &str) {
        let mut state = self.state();
        state.remove_instance(id);
        self.persist(&state);
    }
}

fn dns_records(body: &serde_json::Map<String, Value>) -> Answer<Vec<DnsCustomRecord>> {
    let Some(value) = body.get("dns_custom").filter(|v| !v.is_null()) else {
        return Ok(vec![]);
    };
    let Some(items) = value.as_array() else {
        return Err(validate::invalid("dns_custom", "must be an array of records").into());
    };
    items.iter().map(dns_record).collect()
}

fn dns_record(item: &Value) -> Answer<DnsCustomRecord> {
    let record: DnsCustomRecord = serde_json::from_value(item.clone()).map_err(|_| {
        validate::invalid(
            "dns_custom",
            "must contain records with name, type (A or CNAME) and value",
        )
    })?;
    if record.name.is_empty() || record.value.is_empty() {
        return Err(validate::invalid("dns_custom", "records need a non-empty name and value").into());
    }
    // The client reads undocumented types leniently; the service accepts only these.
    if let DnsRecordType::Other(kind) = &record.record_type {
        return Err(validate::invalid(
            "dns_custom",
            format_args!("record type {kind:?} is not A or CNAME"),
        )
        .into());
    }
    if record.record_type == DnsRecordType::A && record.value.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(validate::invalid(
            "dns_custom",
            format_args!("A record value {:?} must be an IPv4 address", record.value),
        )
        .into());
    }
    Ok(record)
}

/// Laravel's answer to a method the route does not offer (`MethodNotAllowedHttpException`).
fn delete_not_allowed(id: &str) -> Reply {
    let message = format!(
        "The DELETE method is not supported for route vpn/instances/{id}. Supported methods: GET, HEAD, PUT."
    );
    let mut reply = Reply::json(405, &serde_json::json!({"message": message}));
    reply.headers.push(("allow", "GET, HEAD, PUT"));
    reply
}

/// A freshly created instance with Altostrat's defaults: public resolvers and a firewall that
/// lets ICMP and WireGuard in.
fn new_instance(name: &str, hostname: &str, region: &str, single_public_dns: bool) -> Instance {
    let allow = |name: &str, protocol: &str, port: Option<&str>| FirewallRule {
        name: name.into(),
        protocol: protocol.into(),
        port: port.map(Into::into),
        source: "0.0.0.0/0".into(),
        destination: "0.0.0.0/0".into(),
    };
    Instance {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        region: region.to_owned(),
        hostname: format!("{hostname}.vpn.altostr.at"),
        public_dns: if single_public_dns {
            vec!["9.9.9.9".into()]
        } else {
            vec!["9.9.9.9".into(), "149.112.112.112".into()]
        },
        firewall: vec![
            allow("Allow ICMP", "icmp", None),
            allow("Allow WireGuard", "udp", Some("51820")),
        ],
        created_at: Some(now_rfc3339()),
        ..Instance::default()
    }
}
