//! The client configuration `GET /vpn/client` serves. Its real shape is undocumented; this one
//! is a profile a WireGuard or OpenVPN client would load, built at request time from the
//! instance as it is then and the peer's `route_all`, so an edit of the hub's routes or
//! resolvers shows in the next download. Keys, addresses and certificates are derived from the
//! ids: stable across downloads and restarts, plausible, useless for a real tunnel.

use ipnet::IpNet;
use serde_json::json;

use super::core::{Body, Reply};
use super::encoding::{base64, pseudo_bytes};
use crate::altostrat::model::{Instance, Peer, Protocol};

/// `peer`'s profile on `instance`: `text/plain`, or `{"format", "config"}` with the same text
/// when the client asks for JSON.
pub fn answer(peer: &Peer, instance: &Instance, wants_json: bool) -> Reply {
    let (format, config) = match peer.protocol {
        Protocol::Wireguard => ("wireguard", wireguard(peer, instance)),
        Protocol::Openvpn | Protocol::Unknown => ("openvpn", openvpn(peer, instance)),
    };
    if wants_json {
        Reply::ok(&json!({"format": format, "config": config}))
    } else {
        Reply {
            status: 200,
            body: Body::Text(config),
            headers: vec![],
        }
    }
}

/// A wg-quick profile. An empty list leaves its line out rather than empty.
pub fn wireguard(peer: &Peer, instance: &Instance) -> String {
    let mut lines = vec![
        "[Interface]".to_owned(),
        format!("PrivateKey = {}", private_key(&peer.id)),
        format!("Address = {}/32", tunnel_address(&peer.id)),
    ];
    // wg-quick takes search domains on the DNS line, after the resolvers.
    let dns: Vec<&str> = instance
        .public_dns
        .iter()
        .chain(&instance.domains)
        .map(String::as_str)
        .collect();
    if !dns.is_empty() {
        lines.push(format!("DNS = {}", dns.join(", ")));
    }
    lines.extend([
        String::new(),
        "[Peer]".to_owned(),
        format!(
            "PublicKey = {}",
            base64(&pseudo_bytes(instance.id.as_bytes(), 32))
        ),
        format!("Endpoint = {}:51820", instance.hostname),
    ]);
    let allowed = if peer.route_all {
        vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()]
    } else {
        instance.pushed_routes.clone()
    };
    if !allowed.is_empty() {
        lines.push(format!("AllowedIPs = {}", allowed.join(", ")));
    }
    lines.push("PersistentKeepalive = 25".to_owned());
    lines.join("\n") + "\n"
}

/// A WireGuard private key: 32 bytes derived from `seed`, clamped as Curve25519 keys are.
/// The WireGuard private key of the peer with id `seed`, as its profile shows it.
pub fn private_key(seed: &str) -> String {
    let mut bytes = pseudo_bytes(seed.as_bytes(), 32);
    bytes[0] &= 248;
    bytes[31] = (bytes[31] & 127) | 64;
    base64(&bytes)
}

/// The peer's address in the hub's tunnel network 10.8.0.0/16 (the hub being 10.8.0.1), from
/// the last two bytes of its id: stable, and distinct for most peers of a hub.
fn tunnel_address(peer_id: &str) -> String {
    let bytes = uuid::Uuid::parse_str(peer_id)
        .map(|u| *u.as_bytes())
        .unwrap_or_default();
    format!("10.8.{}.{}", bytes[14], 2 + bytes[15] % 253)
}

/// An OpenVPN client profile with its credentials inline, as a portal download has them.
pub fn openvpn(peer: &Peer, instance: &Instance) -> String {
    let mut lines: Vec<String> = ["client", "dev tun", "proto udp"].map(String::from).into();
    lines.push(format!("remote {} 1194", instance.hostname));
    lines.extend(
        [
            "resolv-retry infinite",
            "nobind",
            "persist-key",
            "persist-tun",
            "remote-cert-tls server",
            "verb 3",
        ]
        .map(String::from),
    );
    if peer.route_all {
        lines.push("redirect-gateway def1".to_owned());
    } else {
        lines.extend(instance.pushed_routes.iter().filter_map(|r| route(r)));
    }
    lines.extend(
        instance
            .public_dns
            .iter()
            .map(|ip| format!("dhcp-option DNS {ip}")),
    );
    lines.extend(instance.domains.iter().map(|d| format!("dhcp-option DOMAIN {d}")));
    lines.push(pem("ca", "CERTIFICATE", &format!("ca {}", instance.id), 768));
    lines.push(pem("cert", "CERTIFICATE", &format!("cert {}", peer.id), 768));
    lines.push(pem("key", "PRIVATE KEY", &format!("key {}", peer.id), 1218));
    lines.join("\n") + "\n"
}

/// OpenVPN's route line for a CIDR block; `None` for text that is not one (an out-of-band
/// edit is not validated).
fn route(cidr: &str) -> Option<String> {
    Some(match cidr.parse::<IpNet>().ok()? {
        IpNet::V4(net) => format!("route {} {}", net.network(), net.netmask()),
        IpNet::V6(net) => format!("route-ipv6 {}", net.trunc()),
    })
}

/// An inline block `<tag>` holding a PEM-armoured body of `len` bytes derived from `seed`.
fn pem(tag: &str, label: &str, seed: &str, len: usize) -> String {
    let body = base64(&pseudo_bytes(seed.as_bytes(), len));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap_or_default())
        .collect();
    format!(
        "<{tag}>\n-----BEGIN {label}-----\n{}\n-----END {label}-----\n</{tag}>",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::altostrat::model::PeerType;

    fn hub() -> Instance {
        Instance {
            id: "d290f1ee-6c54-4b01-90e6-d701748f0851".into(),
            hostname: "hub.vpn.altostr.at".into(),
            pushed_routes: vec!["10.0.0.0/8".into(), "172.16.4.0/22".into(), "fd00::/64".into()],
            public_dns: vec!["9.9.9.9".into(), "1.1.1.1".into()],
            domains: vec!["corp.example".into()],
            ..Instance::default()
        }
    }

    fn alice(protocol: Protocol) -> Peer {
        Peer {
            id: "550e8400-e29b-41d4-a716-4466554401ff".into(),
            peer_type: PeerType::Client,
            protocol,
            ..Peer::default()
        }
    }

    fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(&format!("{key} = ")))
    }

    #[test]
    fn a_wireguard_profile_carries_the_hub_as_it_is() {
        let text = wireguard(&alice(Protocol::Wireguard), &hub());
        assert!(
            text.starts_with("[Interface]\n") && text.contains("\n\n[Peer]\n"),
            "{text}"
        );
        let key = value(&text, "PrivateKey").unwrap();
        assert_eq!(key.len(), 44, "{key}");
        assert_ne!(Some(key), value(&text, "PublicKey"));
        assert_eq!(
            value(&text, "Address"),
            Some("10.8.1.4/32"),
            "bytes 01 ff of the id"
        );
        assert_eq!(value(&text, "DNS"), Some("9.9.9.9, 1.1.1.1, corp.example"));
        assert_eq!(value(&text, "Endpoint"), Some("hub.vpn.altostr.at:51820"));
        assert_eq!(
            value(&text, "AllowedIPs"),
            Some("10.0.0.0/8, 172.16.4.0/22, fd00::/64")
        );
        assert_eq!(value(&text, "PersistentKeepalive"), Some("25"));
        assert_eq!(text, wireguard(&alice(Protocol::Wireguard), &hub()), "stable");
    }

    #[test]
    fn a_full_tunnel_routes_everything_and_empty_lists_leave_their_line_out() {
        let full = Peer {
            route_all: true,
            ..alice(Protocol::Wireguard)
        };
        let text = wireguard(&full, &hub());
        assert_eq!(value(&text, "AllowedIPs"), Some("0.0.0.0/0, ::/0"));
        let bare = Instance {
            pushed_routes: vec![],
            public_dns: vec![],
            domains: vec![],
            ..hub()
        };
        let text = wireguard(&alice(Protocol::Wireguard), &bare);
        assert_eq!(
            (value(&text, "AllowedIPs"), value(&text, "DNS")),
            (None, None),
            "{text}"
        );
    }

    #[test]
    fn an_openvpn_profile_routes_dns_and_inlines_its_credentials() {
        let text = openvpn(&alice(Protocol::Openvpn), &hub());
        for line in [
            "client",
            "dev tun",
            "remote hub.vpn.altostr.at 1194",
            "remote-cert-tls server",
            "route 10.0.0.0 255.0.0.0",
            "route 172.16.4.0 255.255.252.0",
            "route-ipv6 fd00::/64",
            "dhcp-option DNS 9.9.9.9",
            "dhcp-option DOMAIN corp.example",
            "-----BEGIN PRIVATE KEY-----",
            "</key>",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("redirect-gateway"));
        assert!(text.lines().all(|l| l.len() <= 64), "PEM lines are 64 wide");
        let full = Peer {
            route_all: true,
            ..alice(Protocol::Openvpn)
        };
        let text = openvpn(&full, &hub());
        assert!(text.contains("\nredirect-gateway def1\n") && !text.contains("\nroute "));
    }
}
