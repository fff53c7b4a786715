//! The documented request constraints, as pure functions returning the error the simulator
//! answers with (400/422 naming the field).

use std::net::Ipv4Addr;

use ipnet::IpNet;
use serde_json::Value;

/// A validation failure: HTTP status, error code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

pub type Checked<T> = Result<T, Invalid>;

pub fn missing(field: &str) -> Invalid {
    Invalid {
        status: 400,
        code: "parameter_missing",
        message: format!("The '{field}' parameter is required for this request."),
    }
}

pub fn invalid(field: &str, why: impl std::fmt::Display) -> Invalid {
    Invalid {
        status: 400,
        code: "parameter_invalid",
        message: format!("The '{field}' parameter {why}."),
    }
}

pub const RESERVED_LABELS: [&str; 6] = ["www", "api", "vpn", "mail", "cdn", "ns"];

pub fn object(body: &Value) -> Checked<&serde_json::Map<String, Value>> {
    body.as_object().ok_or_else(|| Invalid {
        status: 400,
        code: "invalid_json",
        message: "The request body must be a JSON object.".into(),
    })
}

pub fn required_str<'a>(body: &'a serde_json::Map<String, Value>, field: &str) -> Checked<&'a str> {
    match body.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

pub fn optional_str<'a>(body: &'a serde_json::Map<String, Value>, field: &str) -> Checked<Option<&'a str>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

pub fn optional_bool(body: &serde_json::Map<String, Value>, field: &str) -> Checked<Option<bool>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(field, "must be a boolean")),
    }
}

pub fn string_list(
    body: &serde_json::Map<String, Value>,
    field: &str,
    required: bool,
) -> Checked<Option<Vec<String>>> {
    match body.get(field) {
        None | Some(Value::Null) if required => Err(missing(field)),
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(field, "must be an array of strings"))
            })
            .collect::<Checked<Vec<_>>>()
            .map(Some),
        Some(_) => Err(invalid(field, "must be an array of strings")),
    }
}

pub fn name(value: &str) -> Checked<()> {
    let len = value.chars().count();
    if !(3..=20).contains(&len) {
        return Err(invalid("name", "must be between 3 and 20 characters"));
    }
    Ok(())
}

pub fn hostname(value: &str) -> Checked<()> {
    let len = value.len();
    let label_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !(3..=20).contains(&len) || !label_ok {
        return Err(invalid(
            "hostname",
            "must be a DNS label of 3 to 20 lowercase letters, digits or inner hyphens",
        ));
    }
    if RESERVED_LABELS.contains(&value) {
        return Err(invalid(
            "hostname",
            format_args!("must not be a reserved label ({})", RESERVED_LABELS.join(", ")),
        ));
    }
    Ok(())
}

pub fn cidrs(field: &str, values: &[String]) -> Checked<()> {
    match values.iter().find(|v| v.parse::<IpNet>().is_err()) {
        Some(bad) => Err(invalid(
            field,
            format_args!("must contain only CIDR blocks; {bad:?} is not one"),
        )),
        None => Ok(()),
    }
}

/// The networks of a request (`pushed_routes`, `subnets`): IPv4 CIDR blocks with no host bits
/// set. Altostrat documents IPv4 only and says nothing of host bits; the simulator refuses what
/// the operator assumes is refused (and never sends), so a client that sends it anyway learns.
pub fn ipv4_networks(field: &str, values: &[String]) -> Checked<()> {
    cidrs(field, values)?;
    let refused = |v: &&String| match v.parse::<IpNet>() {
        Ok(IpNet::V4(net)) => net.addr() != net.network(),
        _ => true,
    };
    match values.iter().find(refused) {
        Some(bad) => Err(invalid(
            field,
            format_args!("must contain only IPv4 networks without host bits; {bad:?} is not one"),
        )),
        None => Ok(()),
    }
}

pub fn ipv4s(field: &str, values: &[String]) -> Checked<()> {
    match values.iter().find(|v| v.parse::<Ipv4Addr>().is_err()) {
        Some(bad) => Err(invalid(
            field,
            format_args!("must contain only IPv4 addresses; {bad:?} is not one"),
        )),
        None => Ok(()),
    }
}

pub fn public_dns(values: &[String]) -> Checked<()> {
    if !(2..=4).contains(&values.len()) {
        return Err(invalid("public_dns", "must contain 2 to 4 IPv4 addresses"));
    }
    ipv4s("public_dns", values)
}

pub fn domains(values: &[String]) -> Checked<()> {
    if values.len() > 8 {
        return Err(invalid("domains", "must contain at most 8 domains"));
    }
    if values.iter().any(|d| d.is_empty() || d.len() > 253) {
        return Err(invalid("domains", "must contain non-empty domain names"));
    }
    Ok(())
}

pub fn uuid(field: &str, value: &str) -> Checked<()> {
    uuid::Uuid::parse_str(value)
        .map(|_| ())
        .map_err(|_| invalid(field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_label_rules() {
        assert!(hostname("prod-vpn-sjc").is_ok());
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "Upper",
            "has_underscore",
            "a-very-long-hostname-x1",
        ] {
            assert!(hostname(bad).is_err(), "{bad} accepted");
        }
        let reserved = hostname("www").unwrap_err();
        assert!(reserved.message.contains("reserved"), "{}", reserved.message);
    }

    #[test]
    fn public_dns_needs_two_to_four_ipv4_addresses() {
        let one = vec!["1.1.1.1".to_owned()];
        assert_eq!(
            public_dns(&one).unwrap_err().message,
            "The 'public_dns' parameter must contain 2 to 4 IPv4 addresses."
        );
        assert!(public_dns(&["1.1.1.1".into(), "8.8.8.8".into()]).is_ok());
        assert!(
            public_dns(&["1.1.1.1".into(), "::1".into()])
                .unwrap_err()
                .message
                .contains("\"::1\"")
        );
    }

    #[test]
    fn networks_are_ipv4_without_host_bits_and_the_bad_entry_is_named() {
        assert!(ipv4_networks("subnets", &["10.0.0.0/8".into(), "192.168.1.0/24".into()]).is_ok());
        for bad in ["fd00::/8", "10.0.0.1/8", "10.0.0.0/33"] {
            let err = ipv4_networks("subnets", &["10.0.0.0/8".into(), bad.into()]).unwrap_err();
            assert_eq!((err.status, err.code), (400, "parameter_invalid"));
            assert!(
                err.message.starts_with("The 'subnets' parameter")
                    && err.message.contains(&format!("{bad:?}")),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn cidr_lists_name_the_bad_entry() {
        assert!(cidrs("pushed_routes", &["10.0.0.0/8".into(), "fd00::/8".into()]).is_ok());
        let err = cidrs("pushed_routes", &["10.0.0.0/33".into()]).unwrap_err();
        assert!(
            err.message.starts_with("The 'pushed_routes' parameter") && err.message.contains("10.0.0.0/33")
        );
    }

    #[test]
    fn names_are_three_to_twenty_characters() {
        assert!(name("abc").is_ok());
        assert!(name("ab").is_err());
        assert!(
            name("Primary Production VPN").is_err(),
            "the documented example is too long"
        );
    }
}
