//! The one rule for every network list of the spec (`VpnInstance.spec.pushedRoutes`,
//! `VpnPeer.spec.subnets`): each entry is an IPv4 CIDR block with no host bits set.
//!
//! The rule is written twice, once for each place that enforces it, with the same words:
//! - [`ipv4_network_items`] puts it on the list's items as CEL (`x-kubernetes-validations`), so
//!   the API server refuses a bad entry at admission and names it with its index
//!   (`spec.pushedRoutes[1]`);
//! - [`refused_entries`] is the operator's check of resources admitted before the rule existed
//!   (or by a cluster that still has older CRDs), reported as a `Stalled` `InvalidSpec` with the
//!   same message after the same path.
//!
//! Why refuse rather than normalise `10.0.0.1/8` to `10.0.0.0/8`: the entry is ambiguous. It
//! may be a typo for the network, or an address whose prefix length is wrong (`10.0.0.1/32`
//! routes one host, `10.0.0.0/8` sixteen million); sending either would route traffic the user
//! did not mean to, and a silently rewritten spec never matches what is applied.
//!
//! Why refuse IPv6: Altostrat documents IPv4 only (every address field is `format: ipv4`, every
//! example an IPv4 network) and says nothing about IPv6 routes or subnets. Sent anyway, one
//! could be refused with a 4xx only after the resource is applied, or accepted and silently
//! dropped; refusing it at admission is right under every one of those answers.

use std::net::IpAddr;

use ipnet::IpNet;
use kube::core::{Message, Rule};
use schemars::Schema;

/// Why `entry` is refused as a network of the spec (`None`: it is an IPv4 CIDR block with no
/// host bits set), worded as the API server words it (see [`RULES`]).
pub fn problem(entry: &str) -> Option<String> {
    match parse(entry) {
        None => Some(format!(
            "\"{entry}\" is not an IPv4 CIDR block such as 10.0.0.0/8"
        )),
        Some(IpNet::V6(_)) => Some(format!("\"{entry}\" is {IPV6}")),
        Some(IpNet::V4(net)) if net.network() != net.addr() => Some(format!(
            "\"{entry}\" has host bits set; did you mean \"{}\"?",
            net.trunc()
        )),
        Some(IpNet::V4(_)) => None,
    }
}

/// `entry` as a network, read as CEL's `isCIDR` reads it on the API server (Go's
/// `netip.ParsePrefix`, and no IPv4-mapped IPv6 address): no leading zeros in the address or
/// the prefix length, no zone, nothing around it. (`ipnet`'s own parser takes `010.0.0.0/8`.)
fn parse(entry: &str) -> Option<IpNet> {
    let (addr, bits) = entry.split_once('/')?;
    let canonical_bits = bits.bytes().all(|b| b.is_ascii_digit()) && (bits == "0" || !bits.starts_with('0'));
    if !canonical_bits {
        return None;
    }
    let addr: IpAddr = addr.parse().ok()?;
    if let IpAddr::V6(v6) = addr
        && v6.to_ipv4_mapped().is_some()
    {
        return None;
    }
    IpNet::new(addr, bits.parse().ok()?).ok()
}

/// The refused entries of the list at `path` (`spec.pushedRoutes`), if any, in list order and
/// joined by `; `, each as `spec.pushedRoutes[1]: "10.0.0.1/8" has host bits set; did you mean
/// "10.0.0.0/8"?` (the API server's words, less its `Invalid value: "10.0.0.1/8": `).
pub fn refused_entries(path: &str, entries: &[String]) -> Option<String> {
    let refused: Vec<String> = entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| problem(entry).map(|why| format!("{path}[{index}]: {why}")))
        .collect();
    (!refused.is_empty()).then(|| refused.join("; "))
}

/// The end of the message for an IPv6 entry, after its quoted value.
const IPV6: &str = "an IPv6 network; Altostrat documents IPv4 networks only, so IPv6 entries are refused";

/// The CEL rules on one entry, each with its message: each entry fails one rule at most (the
/// later ones hold for what an earlier one refuses), and `cidr(self)` is never evaluated on a
/// string that is not a CIDR (a CEL error would replace the message). The messages use
/// `format`: the API server estimates a `+` after `string(...)` as far over its cost budget
/// and refuses the CRD, while it accepts `format` with the same arguments.
const RULES: [(&str, &str); 3] = [
    (
        "isCIDR(self)",
        r#"'"%s" is not an IPv4 CIDR block such as 10.0.0.0/8'.format([self])"#,
    ),
    (
        "!isCIDR(self) || cidr(self).ip().family() == 4",
        // The text of `IPV6` (a CEL string literal cannot name a Rust constant; a test checks).
        r#"'"%s" is an IPv6 network; Altostrat documents IPv4 networks only, so IPv6 entries are refused'.format([self])"#,
    ),
    (
        "!isCIDR(self) || cidr(self).ip().family() != 4 || cidr(self) == cidr(self).masked()",
        r#"'"%s" has host bits set; did you mean "%s"?'.format([self, string(cidr(self).masked())])"#,
    ),
];

/// Schema transform (`#[schemars(transform = ...)]`) for a list of networks: puts [`RULES`] on
/// the list's items, so the API server reports each bad entry at its own index.
pub fn ipv4_network_items(schema: &mut Schema) {
    let rules: Vec<serde_json::Value> = RULES
        .iter()
        .map(|(rule, message)| {
            let rule = Rule::new(*rule).message(Message::Expression((*message).into()));
            serde_json::to_value(rule).expect("a CEL rule serialises")
        })
        .collect();
    let items = schema
        .get_mut("items")
        .and_then(serde_json::Value::as_object_mut)
        .expect("a network list's schema has items");
    items.insert("x-kubernetes-validations".into(), rules.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_networks_pass() {
        for good in [
            "10.0.0.0/8",
            "192.168.10.0/24",
            "10.1.2.3/32",
            "0.0.0.0/0",
            "172.16.0.0/12",
        ] {
            assert_eq!(problem(good), None, "{good}");
        }
    }

    #[test]
    fn host_bits_are_refused_with_the_network_meant() {
        assert_eq!(
            problem("10.0.0.1/8").as_deref(),
            Some(r#""10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?"#)
        );
        assert_eq!(
            problem("192.168.10.7/24").as_deref(),
            Some(r#""192.168.10.7/24" has host bits set; did you mean "192.168.10.0/24"?"#)
        );
    }

    #[test]
    fn ipv6_is_refused_saying_why() {
        for v6 in ["fd00::/8", "2001:db8::/32", "::/0", "fd00::1/8"] {
            let why = problem(v6).unwrap();
            assert!(why.starts_with(&format!("{v6:?} is an IPv6 network")), "{why}");
            assert!(why.contains("Altostrat documents IPv4 networks only"), "{why}");
        }
    }

    #[test]
    fn what_is_no_cidr_is_refused_as_such() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1",
            "010.0.0.0/8",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/",
            " 10.0.0.0/8",
            "",
            "ten/8",
            "fe80::%eth0/64",
            // CEL's CIDR library refuses IPv4-mapped IPv6 addresses.
            "::ffff:10.0.0.0/104",
        ] {
            assert_eq!(
                problem(bad),
                Some(format!("\"{bad}\" is not an IPv4 CIDR block such as 10.0.0.0/8")),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_refused_entry_is_named_by_its_path_and_index() {
        let entries = ["172.16.0.0/12", "10.0.0.1/8", "192.168.0.0/16", "fd00::/8"].map(String::from);
        let refused = refused_entries("spec.pushedRoutes", &entries);
        assert_eq!(
            refused,
            Some(format!(
                r#"spec.pushedRoutes[1]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?; spec.pushedRoutes[3]: "fd00::/8" is {IPV6}"#
            ))
        );
        assert_eq!(refused_entries("spec.subnets", &entries[..1]), None);
        assert_eq!(refused_entries("spec.subnets", &[]), None);
    }

    /// What the API server makes of a message expression of [`RULES`] for `entry`: each fills
    /// a string literal's `%s` with `self` and the masked network.
    fn cel_message(expression: &str, entry: &str) -> String {
        let (template, args) = expression
            .strip_prefix('\'')
            .and_then(|e| e.strip_suffix("])"))
            .and_then(|e| e.split_once("'.format(["))
            .unwrap_or_else(|| panic!("{expression:?} is no 'literal'.format([args])"));
        args.split(", ").fold(template.to_owned(), |message, arg| {
            let value = match arg {
                "self" => entry.to_owned(),
                "string(cidr(self).masked())" => entry.parse::<IpNet>().unwrap().trunc().to_string(),
                other => panic!("unexpected argument {other:?}"),
            };
            message.replacen("%s", &value, 1)
        })
    }

    #[test]
    fn the_api_server_and_the_operator_word_each_refusal_alike() {
        for (rule, entry) in [(0, "10.0.0.0/33"), (1, "fd00::/8"), (2, "10.0.0.1/8")] {
            assert_eq!(Some(cel_message(RULES[rule].1, entry)), problem(entry), "{entry}");
        }
    }

    #[test]
    fn the_rules_go_on_the_items() {
        let mut schema = schemars::json_schema!({"type": "array", "items": {"type": "string"}});
        ipv4_network_items(&mut schema);
        let rules = &schema.as_value()["items"]["x-kubernetes-validations"];
        assert_eq!(rules.as_array().map(Vec::len), Some(RULES.len()));
        assert_eq!(rules[2]["rule"], RULES[2].0);
        assert_eq!(rules[2]["messageExpression"], RULES[2].1);
    }
}
