//! How closely the simulator answers like the real service: the documented answers by default,
//! and opt-in answers the real service plausibly gives where the docs are silent.

use std::time::Duration;

use clap::Args;

/// Answers closer to what the real Altostrat API sends or plausibly sends. The defaults follow
/// the documentation where it speaks and the project's choices where it is silent; the other
/// settings are opt-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fidelity {
    /// Status of a create whose hostname is taken: 409 (`hostname_taken` ErrorResponse, the
    /// default), 422 (Laravel's validation answer `{message, errors: {hostname: [..]}}`) or 400
    /// (the same Laravel body with status 400).
    pub hostname_taken_status: u16,
    /// A created instance gets one public DNS resolver, as in every documented create example
    /// (the PUT still requires 2–4). On by default, because the docs say so; off gives two.
    pub single_public_dns: bool,
    /// List endpoints answer `{"data": [...], "has_more": false}` instead of a bare array.
    pub enveloped_lists: bool,
    /// Error bodies are `{"message": ...}` only (Laravel's `abort()`), without `type`, `code`
    /// and `doc_url`.
    pub message_only_errors: bool,
    /// Peer seats of each account: creating a peer beyond them answers 403 with a bare
    /// `{message}` naming the seat limit (the shape of Altostrat's billing refusals).
    pub peer_seats: Option<u32>,
    /// How `DELETE /vpn/instances/{id}` answers; the docs do not show the operation at all.
    pub instance_delete: InstanceDelete,
    /// Answers carry what the docs do not mention: every instance and peer has the extra fields
    /// `labels` and `billing`; an instance update adds the pending status `firewall-syncing`
    /// next to `config-updated`; each new instance gets a peer of kind `gateway` over `ipsec`
    /// with no user or site (it takes no peer seat).
    pub unknown_values: bool,
    /// When a read of a client peer shows a new share token; the docs say only that the token
    /// is short-lived.
    pub share_tokens: ShareTokens,
}

/// When a read of a client peer (GET, list, and the create and update answers) shows a new
/// share token. Either way a token stays valid until its own expiry, `token_ttl` after it was
/// issued (`--share-token-ttl`), unless the admin API expires it sooner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ShareTokens {
    /// Every read shows the same token until it has expired; the first read after that shows a
    /// new one.
    #[default]
    ReissuedWhenExpired,
    /// Every read shows a new token, as an API that encrypts a fresh token into each answer
    /// would; the older ones stay valid until they expire.
    EveryRead,
}

/// The answers to `DELETE /vpn/instances/{id}`. The operation is undocumented; the changelog
/// speaks of a teardown process, so each plausible shape can be simulated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceDelete {
    /// 204: the instance and its peers are gone at once and its hostname is free.
    #[default]
    Immediate,
    /// 202 with an empty body: the instance stays visible with `deleting` in its `status` until
    /// `teardown` has passed since the first DELETE (a repeated DELETE answers 202 and does not
    /// restart it), then it and its peers are gone. Meanwhile its hostname stays taken, and a
    /// PUT of it or a new peer on it answers 409 "The instance is being deleted.".
    Asynchronous { teardown: Duration },
    /// 405 with `Allow: GET, HEAD, PUT` and Laravel's `{message}` for a route without DELETE;
    /// nothing is deleted.
    NotAllowed,
}

/// The teardown of [`InstanceDelete::Asynchronous`] unless `--teardown-delay` says otherwise.
pub const DEFAULT_TEARDOWN: Duration = Duration::from_secs(3);

impl Default for Fidelity {
    fn default() -> Self {
        Self {
            hostname_taken_status: 409,
            single_public_dns: true,
            enveloped_lists: false,
            message_only_errors: false,
            peer_seats: None,
            instance_delete: InstanceDelete::Immediate,
            unknown_values: false,
            share_tokens: ShareTokens::ReissuedWhenExpired,
        }
    }
}

/// The named profiles of `vpn-operator simulate --profile`, with what each one changes.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "documented",
        "the default, as the docs show: one public resolver on create, bare lists, ErrorResponse \
         bodies, a taken hostname as 409, immediate delete, a share token shown until it expires \
         (resets every earlier profile)",
    ),
    (
        "laravel",
        "`{message}`-only error bodies, and a taken hostname as 422 with Laravel's validation \
         body",
    ),
    (
        "taken-400",
        "a taken hostname as 400 with Laravel's validation body",
    ),
    (
        "async-delete",
        "DELETE instance answers 202 and the instance tears down over --teardown-delay (3s)",
    ),
    (
        "no-delete",
        "DELETE instance answers 405 (no such route) and deletes nothing",
    ),
    ("enveloped", "lists in the `{data, has_more}` envelope"),
    (
        "unknown-values",
        "undocumented fields, a `firewall-syncing` status after updates and a gateway peer on \
         every instance",
    ),
    (
        "seat-quota",
        "2 peer seats per account; one more peer answers 403",
    ),
    (
        "token-per-read",
        "every read of a client peer shows a new share token; the older ones stay valid until \
         they expire",
    ),
];

impl Fidelity {
    /// Profile `name` (one of [`PROFILES`]) applied to the defaults.
    pub fn profile(name: &str) -> Result<Self, String> {
        Self::default().with_profile(name)
    }

    /// This fidelity with profile `name` applied on top: a profile sets only what it is about,
    /// so profiles combine (`documented` resets everything).
    pub fn with_profile(self, name: &str) -> Result<Self, String> {
        Ok(match name {
            "documented" => Self::default(),
            "laravel" => Self {
                message_only_errors: true,
                hostname_taken_status: 422,
                ..self
            },
            "taken-400" => Self {
                hostname_taken_status: 400,
                ..self
            },
            "async-delete" => Self {
                instance_delete: InstanceDelete::Asynchronous {
                    teardown: DEFAULT_TEARDOWN,
                },
                ..self
            },
            "no-delete" => Self {
                instance_delete: InstanceDelete::NotAllowed,
                ..self
            },
            "enveloped" => Self {
                enveloped_lists: true,
                ..self
            },
            "unknown-values" => Self {
                unknown_values: true,
                ..self
            },
            "seat-quota" => Self {
                peer_seats: Some(2),
                ..self
            },
            "token-per-read" => Self {
                share_tokens: ShareTokens::EveryRead,
                ..self
            },
            other => return Err(unknown_profile(other)),
        })
    }
}

/// `--profile`'s value parser: a known profile name.
pub fn profile_name(name: &str) -> Result<String, String> {
    if PROFILES.iter().any(|(known, _)| *known == name) {
        Ok(name.to_owned())
    } else {
        Err(unknown_profile(name))
    }
}

fn unknown_profile(name: &str) -> String {
    let known: Vec<&str> = PROFILES.iter().map(|(name, _)| *name).collect();
    format!("unknown profile {name:?}; known: {}", known.join(", "))
}

/// `--profile`'s help: what it does, then every profile with its description.
pub fn profile_help() -> String {
    let mut help = String::from(
        "Answer like a plausible real service, by name; repeatable, applied in order. Explicit \
         flags given on the command line win over every profile. Profiles:",
    );
    for (name, description) in PROFILES {
        help.push_str(&format!("\n  {name}: {description}"));
    }
    help
}

/// The flags of `vpn-operator simulate` that set its [`Fidelity`]: profiles first, then each
/// flag given explicitly (an absent flag leaves what the profiles set).
#[derive(Debug, Default, Args)]
pub struct FidelityArgs {
    /// A named set of answers the real service plausibly gives (repeatable; `--help` lists them).
    #[arg(long = "profile", value_name = "NAME", value_parser = profile_name, long_help = profile_help())]
    pub profiles: Vec<String>,

    /// Status of a create whose hostname is taken: 409 (ErrorResponse `hostname_taken`, the
    /// default), or 422 / 400 with Laravel's validation body `{message, errors: {hostname: [...]}}`.
    #[arg(long, value_name = "STATUS", value_parser = parse_taken_status)]
    pub hostname_taken_status: Option<u16>,

    /// Give created instances one public DNS resolver, as every documented create example
    /// shows (an update must still send 2 to 4). On unless `--single-public-dns=false`, which
    /// gives two.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub single_public_dns: Option<bool>,

    /// Answer lists as `{"data": [...], "has_more": false}` instead of a bare array.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enveloped_lists: Option<bool>,

    /// Answer errors with `{"message": ...}` only, without `type`, `code` and `doc_url`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub message_only_errors: Option<bool>,

    /// Peer seats per account: creating a peer beyond them answers 403 with a `{message}` body
    /// naming the seat limit.
    #[arg(long)]
    pub peer_seats: Option<u32>,

    /// How DELETE /vpn/instances/{id} answers (undocumented upstream): `immediate` (204; the
    /// instance, its peers and its hostname are freed at once; the default), `async` (202; the
    /// instance shows `deleting` in `status` until --teardown-delay has passed since the first
    /// DELETE, keeps its hostname meanwhile and refuses a PUT or a new peer with 409) or
    /// `not-allowed` (405 with `Allow: GET, HEAD, PUT`, Laravel's answer for a route without
    /// DELETE).
    #[arg(long, value_enum, value_name = "MODE")]
    pub instance_delete: Option<DeleteMode>,

    /// How long an asynchronous instance teardown takes (with `--instance-delete async` or the
    /// `async-delete` profile). Default: 3s.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub teardown_delay: Option<Duration>,

    /// Answer with what the docs do not mention: undocumented fields (`labels`, `billing`) on
    /// every instance and peer, the pending status `firewall-syncing` after an instance update,
    /// and a peer of kind `gateway` over `ipsec` with no user or site on every new instance.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub unknown_values: Option<bool>,

    /// When a read of a client peer shows a new share token: `reissued-when-expired` (the same
    /// token until it has expired; the default) or `every-read` (a new token in every answer,
    /// the older ones valid until they expire).
    #[arg(long, value_enum, value_name = "MODE")]
    pub share_tokens: Option<ShareTokens>,
}

impl FidelityArgs {
    /// The profiles in order, then every explicit flag on top.
    pub fn resolve(&self) -> Result<Fidelity, String> {
        let mut f = Fidelity::default();
        for name in &self.profiles {
            f = f.with_profile(name)?;
        }
        let set = |target: &mut bool, flag: Option<bool>| *target = flag.unwrap_or(*target);
        f.hostname_taken_status = self.hostname_taken_status.unwrap_or(f.hostname_taken_status);
        set(&mut f.single_public_dns, self.single_public_dns);
        set(&mut f.enveloped_lists, self.enveloped_lists);
        set(&mut f.message_only_errors, self.message_only_errors);
        set(&mut f.unknown_values, self.unknown_values);
        f.peer_seats = self.peer_seats.or(f.peer_seats);
        f.share_tokens = self.share_tokens.unwrap_or(f.share_tokens);
        if let Some(mode) = self.instance_delete {
            f.instance_delete = mode.with_teardown(DEFAULT_TEARDOWN);
        }
        if let (InstanceDelete::Asynchronous { teardown }, Some(delay)) =
            (&mut f.instance_delete, self.teardown_delay)
        {
            *teardown = delay;
        }
        Ok(f)
    }
}

/// `--instance-delete`: the [`InstanceDelete`] modes by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeleteMode {
    Immediate,
    Async,
    NotAllowed,
}

impl DeleteMode {
    fn with_teardown(self, teardown: Duration) -> InstanceDelete {
        match self {
            DeleteMode::Immediate => InstanceDelete::Immediate,
            DeleteMode::Async => InstanceDelete::Asynchronous { teardown },
            DeleteMode::NotAllowed => InstanceDelete::NotAllowed,
        }
    }
}

fn parse_taken_status(value: &str) -> Result<u16, String> {
    match value.trim() {
        "409" => Ok(409),
        "422" => Ok(422),
        "400" => Ok(400),
        other => Err(format!("{other:?}: expected 409, 422 or 400")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_profile_exists_and_changes_what_it_says() {
        for (name, _) in PROFILES {
            let applied = Fidelity::profile(name).unwrap();
            assert_eq!(applied == Fidelity::default(), *name == "documented", "{name}");
            assert_eq!(profile_name(name).as_deref(), Ok(*name));
        }
        let err = Fidelity::profile("bogus").unwrap_err();
        assert!(err.contains("documented, laravel, taken-400"), "{err}");
        assert_eq!(profile_name("bogus"), Err(err));
    }

    #[test]
    fn profiles_combine_in_order_and_documented_resets() {
        let both = Fidelity::profile("laravel")
            .and_then(|f| f.with_profile("seat-quota"))
            .unwrap();
        assert_eq!(
            (
                both.message_only_errors,
                both.hostname_taken_status,
                both.peer_seats
            ),
            (true, 422, Some(2))
        );
        let later_wins = both.clone().with_profile("taken-400").unwrap();
        assert_eq!(later_wins.hostname_taken_status, 400);
        assert_eq!(both.with_profile("documented").unwrap(), Fidelity::default());
    }

    fn parse(args: &[&str]) -> Result<Fidelity, String> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            fidelity: FidelityArgs,
        }
        let cli =
            <Cli as clap::Parser>::try_parse_from(std::iter::once("simulate").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        cli.fidelity.resolve()
    }

    #[test]
    fn explicit_flags_win_over_profiles_wherever_they_stand() {
        assert_eq!(parse(&[]).unwrap(), Fidelity::default());
        let f = parse(&[
            "--hostname-taken-status",
            "409",
            "--profile",
            "laravel",
            "--message-only-errors=false",
            "--profile",
            "seat-quota",
            "--peer-seats",
            "7",
        ])
        .unwrap();
        assert_eq!(
            (f.hostname_taken_status, f.message_only_errors, f.peer_seats),
            (409, false, Some(7))
        );
        let f = parse(&["--profile", "async-delete", "--teardown-delay", "250ms"]).unwrap();
        assert_eq!(
            f.instance_delete,
            InstanceDelete::Asynchronous {
                teardown: Duration::from_millis(250)
            }
        );
        let f = parse(&["--profile", "no-delete", "--instance-delete", "async"]).unwrap();
        assert_eq!(
            f.instance_delete,
            InstanceDelete::Asynchronous {
                teardown: DEFAULT_TEARDOWN
            }
        );
        let f = parse(&[
            "--profile",
            "enveloped",
            "--unknown-values",
            "--single-public-dns=false",
        ])
        .unwrap();
        assert!(
            f.enveloped_lists && f.unknown_values && !f.single_public_dns,
            "{f:?}"
        );
        let f = parse(&["--profile", "token-per-read"]).unwrap();
        assert_eq!(f.share_tokens, ShareTokens::EveryRead);
        let f = parse(&[
            "--profile",
            "token-per-read",
            "--share-tokens",
            "reissued-when-expired",
        ]);
        assert_eq!(f.unwrap().share_tokens, ShareTokens::ReissuedWhenExpired);
        let err = parse(&["--profile", "bogus"]).unwrap_err();
        assert!(err.contains("known: documented, laravel"), "{err}");
    }
}
