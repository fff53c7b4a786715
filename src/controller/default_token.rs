//! The operator's own Altostrat token: fixed, or read from a file (a mounted Secret) and read
//! again whenever the file changes, so a rotated token is used without a restart; and usable
//! only in the namespaces it is limited to.
//!
//! It is also judged: every answer to a call made with it says whether Altostrat accepts it
//! ([`TokenAnswer`], reported by the budgeted client), and one check call is made when a token
//! is loaded (at start, after a rotation) that nothing has answered yet. A token refused for
//! longer than the grace for a rotation fails readiness, is one ERROR log and sets a metric, so
//! an install with a wrong token does not pass its checks (see [`Standing`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::altostrat::{ApiToken, TokenAnswer, TokenObserver, VpnApi};
use crate::metrics::Metrics;

/// How long the default token may be refused before readiness fails: Altostrat drops an old
/// key the moment a new one is issued, and the kubelet writes a changed Secret into the pod on
/// its sync period (one minute by default, plus its cache's delay), after someone or something
/// has updated the Secret. Three minutes covers that with room, and stays within the five
/// minutes `helm install --wait` waits by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(180);

#[derive(Debug, Default)]
enum Source {
    #[default]
    None,
    Fixed(ApiToken),
    /// The file, and the token last read from it with the file's modification time then.
    File {
        path: PathBuf,
        last: Mutex<Option<(SystemTime, Option<ApiToken>)>>,
    },
}

/// The token resources use when they name no `credentialsSecretRef`.
#[derive(Debug)]
pub struct DefaultToken {
    source: Source,
    /// Namespaces whose resources may use it; empty: every namespace.
    namespaces: Vec<String>,
    /// How long it may be refused before readiness fails (see [`Standing`]).
    grace: Duration,
    /// What Altostrat answered the token loaded now.
    judged: Mutex<Judged>,
}

impl Default for DefaultToken {
    fn default() -> Self {
        Self {
            source: Source::None,
            namespaces: Vec::new(),
            grace: DEFAULT_GRACE,
            judged: Mutex::default(),
        }
    }
}

/// The answers about one loaded token: a token read anew from the file starts a new record.
#[derive(Debug, Default)]
struct Judged {
    token: Option<ApiToken>,
    record: TokenRecord,
}

impl DefaultToken {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn fixed(token: ApiToken) -> Self {
        let source = if token.is_empty() {
            Source::None
        } else {
            Source::Fixed(token)
        };
        Self {
            source,
            ..Self::default()
        }
    }

    /// A token read from `path`, which must be readable now.
    pub fn file(path: PathBuf) -> std::io::Result<Self> {
        let token = DefaultToken {
            source: Source::File {
                path,
                last: Mutex::new(None),
            },
            ..Self::default()
        };
        token.read_file()?;
        Ok(token)
    }

    /// Limits the token to resources in `namespaces` (none: every namespace).
    pub fn limited_to(mut self, namespaces: Vec<String>) -> Self {
        self.namespaces = namespaces.into_iter().filter(|n| !n.trim().is_empty()).collect();
        self
    }

    /// How long the token may be refused before readiness fails.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether any token is configured, in any namespace.
    pub fn is_configured(&self) -> bool {
        match &self.source {
            Source::None => false,
            Source::Fixed(_) => true,
            Source::File { .. } => self.read_file().ok().flatten().is_some(),
        }
    }

    /// The token for a resource in `namespace`, or why there is none.
    pub fn for_namespace(&self, namespace: &str) -> Result<ApiToken, String> {
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            return Err(format!(
                "the operator's default API token is not available in namespace {namespace}; \
                 set credentialsSecretRef"
            ));
        }
        let token = match &self.source {
            Source::None => None,
            Source::Fixed(token) => Some(token.clone()),
            Source::File { path, .. } => self
                .read_file()
                .map_err(|e| format!("reading the default API token file {}: {e}", path.display()))?,
        };
        token
            .ok_or_else(|| "no credentialsSecretRef set and the operator has no default API token".to_owned())
    }

    /// The file's token, read again only when the file's modification time changed.
    fn read_file(&self) -> std::io::Result<Option<ApiToken>> {
        let Source::File { path, last } = &self.source else {
            return Ok(None);
        };
        let modified = std::fs::metadata(path)?.modified()?;
        let mut last = last.lock().expect("default token lock");
        if let Some((seen, token)) = last.as_ref()
            && *seen == modified
        {
            return Ok(token.clone());
        }
        let token = Some(ApiToken::new(std::fs::read_to_string(path)?)).filter(|t| !t.is_empty());
        *last = Some((modified, token.clone()));
        Ok(token)
    }
}

impl DefaultToken {
    /// The token configured now, whatever the namespace; `Err` while the file cannot be read
    /// (the kubelet swaps it during an update): then the last loaded one stands.
    fn loaded(&self) -> std::io::Result<Option<ApiToken>> {
        match &self.source {
            Source::None => Ok(None),
            Source::Fixed(token) => Ok(Some(token.clone())),
            Source::File { .. } => self.read_file(),
        }
    }

    /// Runs `f` on the record of the token loaded now, a fresh one if the token changed.
    fn with_record<R>(&self, f: impl FnOnce(&mut Judged) -> R) -> R {
        let loaded = self.loaded();
        let mut judged = self.judged.lock().expect("judged token lock");
        if let Ok(token) = loaded
            && token != judged.token
        {
            *judged = Judged {
                token,
                record: TokenRecord::default(),
            };
        }
        f(&mut judged)
    }

    /// How the token loaded now stands with Altostrat at `now`.
    pub fn standing(&self, now: Instant) -> Standing {
        self.with_record(|judged| judged.record.standing(now, self.grace))
    }

    /// The token loaded now, if no answer has said anything of it yet.
    fn unanswered(&self) -> Option<ApiToken> {
        self.with_record(|judged| {
            (judged.record == TokenRecord::default())
                .then(|| judged.token.clone())
                .flatten()
        })
    }

    /// What a person does about a refused token, by where it comes from.
    fn remedy(&self) -> String {
        match &self.source {
            Source::File { path, .. } => format!(
                "put a valid token into the Secret mounted at {} (it is read again when it changes, no restart needed)",
                path.display()
            ),
            _ => "set a valid token in ALTOSTRAT_API_TOKEN (--api-token) and restart the operator".to_owned(),
        }
    }
}

impl crate::server::ReadinessCheck for DefaultToken {
    /// Why the operator is not ready because of its token, if it is not.
    fn not_ready_reason(&self, now: Instant) -> Option<String> {
        self.standing(now).not_ready_reason(self.grace, &self.remedy())
    }
}

impl TokenObserver for DefaultToken {
    /// Only answers about the token loaded now count: one sent with a token rotated away since
    /// says nothing of the new one.
    fn token_answered(&self, token: &ApiToken, answer: TokenAnswer) {
        let now = Instant::now();
        self.with_record(|judged| {
            if judged.token.as_ref() == Some(token) {
                judged.record.answered(answer, now);
            }
        });
    }
}

/// What Altostrat answered one token: a pure record, fed with explicit instants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenRecord {
    /// Some answer accepted it since it was loaded.
    ever_accepted: bool,
    /// The first refusal since the last acceptance, and the status of the latest one.
    refused: Option<(Instant, u16)>,
}

impl TokenRecord {
    pub fn answered(&mut self, answer: TokenAnswer, at: Instant) {
        match answer {
            TokenAnswer::Accepted => {
                self.ever_accepted = true;
                self.refused = None;
            }
            TokenAnswer::Refused { status } => {
                let since = self.refused.map_or(at, |(since, _)| since);
                self.refused = Some((since, status));
            }
        }
    }

    pub fn standing(&self, now: Instant, grace: Duration) -> Standing {
        let Some((since, status)) = self.refused else {
            return if self.ever_accepted {
                Standing::Accepted
            } else {
                Standing::Unanswered
            };
        };
        let refused_for = now.saturating_duration_since(since);
        if refused_for > grace {
            Standing::Rejected { status, refused_for }
        } else if self.ever_accepted {
            Standing::Rotating { status, refused_for }
        } else {
            Standing::Unproven { status, refused_for }
        }
    }
}

/// How the token loaded now stands with Altostrat. Outages (5xx, timeouts, 429s) say nothing
/// of a token and change nothing here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No answer yet, or no token at all. Ready.
    Unanswered,
    /// The last answer accepted it. Ready.
    Accepted,
    /// Refused within the grace after Altostrat had accepted it: a rotation may be under way
    /// (the old key is dead, the kubelet has not written the new one yet). Ready.
    Rotating { status: u16, refused_for: Duration },
    /// Refused within the grace and never accepted since it was loaded. Not ready, so that an
    /// install or a rollout with a wrong token does not pass before the grace ends; no alarm
    /// yet, as a rotation may still bring a good one.
    Unproven { status: u16, refused_for: Duration },
    /// Refused for longer than the grace. Not ready, one ERROR, the metric is 1.
    Rejected { status: u16, refused_for: Duration },
}

impl Standing {
    /// Why the operator is not ready, if this standing makes it so; `remedy` says what to do.
    pub fn not_ready_reason(&self, grace: Duration, remedy: &str) -> Option<String> {
        match *self {
            Self::Unanswered | Self::Accepted | Self::Rotating { .. } => None,
            Self::Unproven { status, refused_for } => Some(format!(
                "the Altostrat API refused the operator's default token ({}) {} ago and has not accepted it since it was loaded; {remedy}. An ERROR is logged if it is still refused after {}",
                status_text(status),
                short(refused_for),
                short(grace)
            )),
            Self::Rejected { status, refused_for } => Some(format!(
                "the Altostrat API has refused the operator's default token ({}) for {}, longer than the {} grace for a rotation; {remedy}. Until then resources without credentialsSecretRef fail with CredentialsError",
                status_text(status),
                short(refused_for),
                short(grace)
            )),
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        401 => "401 Unauthorized",
        403 => "403 Forbidden",
        _ => "refused",
    }
}

/// `2m05s`, `45s`: whole seconds are precise enough for a probe message.
fn short(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s:02}s"),
    }
}

/// What to log on a change of standing, given whether an ERROR has been logged and no
/// acceptance has followed it: one ERROR when the token turns rejected, one INFO when it is
/// accepted again; nothing per call or per tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Announcement {
    Rejected,
    AcceptedAgain,
}

fn announcement(alarmed: bool, standing: &Standing) -> Option<Announcement> {
    match (alarmed, standing) {
        (false, Standing::Rejected { .. }) => Some(Announcement::Rejected),
        (true, Standing::Accepted) => Some(Announcement::AcceptedAgain),
        _ => None,
    }
}

/// While an outage leaves a loaded token unanswered, its check call is repeated this often.
const CHECK_RETRY: Duration = Duration::from_secs(30);

/// How long a token loaded waits for the answers of the calls reconciles make with it before a
/// check call of its own: at start every resource is reconciled, and a check sent at once would
/// take the budget slot of the first reconcile's read.
pub const CHECK_DELAY: Duration = Duration::from_secs(10);

/// The check calls: one for each token loaded that no answer has judged within
/// [`CHECK_DELAY`], repeated every [`CHECK_RETRY`] while an outage leaves it so. A token that
/// reconciles use needs none.
#[derive(Debug)]
struct Checks {
    delay: Duration,
    /// The token waiting for an answer, and since when.
    seen: Option<(ApiToken, Instant)>,
    last: Option<(ApiToken, Instant)>,
}

impl Checks {
    fn after(delay: Duration) -> Self {
        Self {
            delay,
            seen: None,
            last: None,
        }
    }

    /// The token to check now, if any (and then it counts as checked at `now`).
    fn due(&mut self, unanswered: Option<ApiToken>, now: Instant) -> Option<ApiToken> {
        let token = unanswered?;
        let since = match &self.seen {
            Some((seen, since)) if *seen == token => *since,
            _ => self.seen.insert((token.clone(), now)).1,
        };
        if now.saturating_duration_since(since) < self.delay {
            return None;
        }
        let recent = self
            .last
            .as_ref()
            .is_some_and(|(last, at)| *last == token && now.saturating_duration_since(*at) < CHECK_RETRY);
        if recent {
            return None;
        }
        self.last = Some((token.clone(), now));
        Some(token)
    }
}

/// How often the standing is looked at (for the log, the metric, a rotated file).
const JUDGE_TICK: Duration = Duration::from_secs(1);

/// Judges the default token until aborted: makes the check calls (`GET /vpn/servers/regions`,
/// through `api`, so paid from the token's budget like every call), logs the transitions and
/// keeps the metric. Readiness asks the token itself (its `ReadinessCheck`). A token no
/// answer has judged `check_delay` after it was loaded gets a check call ([`CHECK_DELAY`]).
pub async fn keep_judging<A: VpnApi>(
    token: Arc<DefaultToken>,
    api: Arc<A>,
    metrics: Arc<Metrics>,
    check_delay: Duration,
) {
    let mut checks = Checks::after(check_delay);
    let mut alarmed = false;
    let mut tick = tokio::time::interval(JUDGE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if let Some(unanswered) = checks.due(token.unanswered(), now) {
            let api = api.clone();
            // The answer reaches the record through the client's token observer.
            tokio::spawn(async move { api.list_regions(&unanswered).await });
        }
        let standing = token.standing(now);
        metrics.set_default_token_rejected(matches!(standing, Standing::Rejected { .. }));
        match announcement(alarmed, &standing) {
            Some(Announcement::Rejected) => {
                let reason = standing
                    .not_ready_reason(token.grace, &token.remedy())
                    .unwrap_or_default();
                tracing::error!("default API token rejected: {reason}");
                alarmed = true;
            }
            Some(Announcement::AcceptedAgain) => {
                tracing::info!("default API token accepted again by the Altostrat API: ready");
                alarmed = false;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(path: &std::path::Path, token: &str, modified: SystemTime) {
        std::fs::write(path, token).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    #[test]
    fn a_rotated_token_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        write(&path, "first\n", start);
        let token = DefaultToken::file(path.clone()).unwrap();
        assert_eq!(token.for_namespace("a").unwrap().expose(), "first");
        write(&path, "second", start + Duration::from_secs(60));
        assert_eq!(token.for_namespace("a").unwrap().expose(), "second");
    }

    #[test]
    fn an_unreadable_file_is_refused_at_start() {
        assert!(DefaultToken::file(PathBuf::from("/nonexistent/token")).is_err());
    }

    #[test]
    fn a_limited_token_serves_only_its_namespaces() {
        let token = DefaultToken::fixed(ApiToken::new("t")).limited_to(vec!["team-a".into(), " ".into()]);
        assert!(token.for_namespace("team-a").is_ok());
        let refused = token.for_namespace("team-b").unwrap_err();
        assert!(
            refused.contains("team-b") && refused.contains("credentialsSecretRef"),
            "{refused}"
        );
        assert!(
            DefaultToken::fixed(ApiToken::new("t"))
                .for_namespace("any")
                .is_ok()
        );
        assert!(DefaultToken::none().for_namespace("any").is_err());
    }
}

#[cfg(test)]
mod judging_tests {
    use super::*;
    use crate::server::ReadinessCheck;

    const GRACE: Duration = Duration::from_secs(180);
    const REFUSED: TokenAnswer = TokenAnswer::Refused { status: 401 };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_token_never_accepted_is_unproven_from_its_first_refusal_and_rejected_after_the_grace() {
        let t0 = Instant::now();
        let mut record = TokenRecord::default();
        assert_eq!(record.standing(t0, GRACE), Standing::Unanswered);
        record.answered(REFUSED, t0);
        // Repeated refusals do not restart the clock.
        record.answered(TokenAnswer::Refused { status: 403 }, t0 + secs(100));
        assert_eq!(
            record.standing(t0 + secs(180), GRACE),
            Standing::Unproven {
                status: 403,
                refused_for: secs(180)
            }
        );
        assert_eq!(
            record.standing(t0 + secs(181), GRACE),
            Standing::Rejected {
                status: 403,
                refused_for: secs(181)
            }
        );
        record.answered(TokenAnswer::Accepted, t0 + secs(200));
        assert_eq!(record.standing(t0 + secs(200), GRACE), Standing::Accepted);
    }

    #[test]
    fn a_refusal_after_an_acceptance_is_a_rotation_until_the_grace_ends() {
        let t0 = Instant::now();
        let mut record = TokenRecord::default();
        record.answered(TokenAnswer::Accepted, t0);
        record.answered(REFUSED, t0 + secs(10));
        let rotating = record.standing(t0 + secs(190), GRACE);
        assert_eq!(
            rotating,
            Standing::Rotating {
                status: 401,
                refused_for: secs(180)
            }
        );
        assert_eq!(
            rotating.not_ready_reason(GRACE, "fix it"),
            None,
            "ready during a rotation"
        );
        assert!(matches!(
            record.standing(t0 + secs(191), GRACE),
            Standing::Rejected { .. }
        ));
        // An acceptance in between starts the clock again.
        record.answered(TokenAnswer::Accepted, t0 + secs(100));
        record.answered(REFUSED, t0 + secs(150));
        assert!(matches!(
            record.standing(t0 + secs(300), GRACE),
            Standing::Rotating { .. }
        ));
    }

    #[test]
    fn only_unproven_and_rejected_tokens_fail_readiness_and_the_reason_says_what_to_do() {
        let ready = [
            Standing::Unanswered,
            Standing::Accepted,
            Standing::Rotating {
                status: 401,
                refused_for: secs(5),
            },
        ];
        for standing in ready {
            assert_eq!(standing.not_ready_reason(GRACE, "fix it"), None, "{standing:?}");
        }
        let rejected = Standing::Rejected {
            status: 401,
            refused_for: secs(185),
        };
        let reason = rejected.not_ready_reason(GRACE, "fix it").unwrap();
        assert!(
            reason.contains("refused the operator's default token (401 Unauthorized) for 3m05s")
                && reason.contains("3m grace")
                && reason.contains("fix it"),
            "{reason}"
        );
        let unproven = Standing::Unproven {
            status: 403,
            refused_for: secs(7),
        };
        let reason = unproven.not_ready_reason(GRACE, "fix it").unwrap();
        assert!(
            reason.contains("(403 Forbidden) 7s ago") && reason.contains("after 3m"),
            "{reason}"
        );
    }

    #[test]
    fn one_error_when_the_token_turns_rejected_and_one_info_when_it_is_accepted_again() {
        let rejected = Standing::Rejected {
            status: 401,
            refused_for: secs(200),
        };
        let unproven = Standing::Unproven {
            status: 401,
            refused_for: secs(1),
        };
        assert_eq!(announcement(false, &unproven), None, "no alarm within the grace");
        assert_eq!(announcement(false, &rejected), Some(Announcement::Rejected));
        assert_eq!(announcement(true, &rejected), None, "not repeated");
        assert_eq!(
            announcement(true, &Standing::Unanswered),
            None,
            "a rotated token is not accepted yet"
        );
        assert_eq!(
            announcement(true, &Standing::Accepted),
            Some(Announcement::AcceptedAgain)
        );
        assert_eq!(announcement(false, &Standing::Accepted), None);
    }

    #[test]
    fn a_token_is_checked_once_when_loaded_and_again_only_while_an_outage_leaves_it_unanswered() {
        let t0 = Instant::now();
        let (first, second) = (ApiToken::new("first"), ApiToken::new("second"));
        let mut checks = Checks::after(CHECK_DELAY);
        assert_eq!(checks.due(None, t0), None, "answered or no token: no call");
        assert_eq!(
            checks.due(Some(first.clone()), t0),
            None,
            "reconciles may answer it"
        );
        assert_eq!(checks.due(Some(first.clone()), t0 + secs(9)), None);
        assert_eq!(
            checks.due(Some(first.clone()), t0 + secs(10)),
            Some(first.clone())
        );
        assert_eq!(checks.due(Some(first.clone()), t0 + secs(39)), None);
        assert_eq!(
            checks.due(Some(first.clone()), t0 + secs(40)),
            Some(first.clone())
        );
        assert_eq!(checks.due(Some(second.clone()), t0 + secs(41)), None);
        assert_eq!(
            checks.due(Some(second.clone()), t0 + secs(51)),
            Some(second),
            "a rotated token after the same wait"
        );
    }

    #[test]
    fn answers_judge_the_token_loaded_now_and_a_rotated_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let write = |token: &str, modified: SystemTime| {
            std::fs::write(&path, token).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        };
        write("wrong", start);
        let token = DefaultToken::file(path.clone()).unwrap();
        assert_eq!(token.unanswered(), Some(ApiToken::new("wrong")));
        token.token_answered(&ApiToken::new("someone-else"), TokenAnswer::Accepted);
        token.token_answered(&ApiToken::new("wrong"), REFUSED);
        assert_eq!(token.unanswered(), None);
        let reason = token.not_ready_reason(Instant::now()).unwrap();
        assert!(
            reason.contains(&path.display().to_string()) && reason.contains("no restart"),
            "{reason}"
        );
        write("good", start + secs(60));
        assert_eq!(token.standing(Instant::now()), Standing::Unanswered);
        assert_eq!(token.unanswered(), Some(ApiToken::new("good")));
        // A late answer about the old token says nothing of the new one.
        token.token_answered(&ApiToken::new("wrong"), REFUSED);
        assert_eq!(token.not_ready_reason(Instant::now()), None);
        token.token_answered(&ApiToken::new("good"), TokenAnswer::Accepted);
        assert_eq!(token.standing(Instant::now()), Standing::Accepted);
    }

    #[test]
    fn without_a_default_token_nothing_is_checked_and_readiness_never_fails() {
        let token = DefaultToken::none();
        assert_eq!(token.unanswered(), None);
        assert_eq!(token.not_ready_reason(Instant::now()), None);
    }
}

/// The judge against the simulator through the production client stack: the check call is
/// budgeted, and its answer reaches the record through the client.
#[cfg(all(test, feature = "simulator"))]
mod judge_tests {
    use super::*;
    use crate::altostrat::{Budget, BudgetConfig, HttpClient, HttpClientConfig, Resilient, RetryPolicy};
    use crate::server::ReadinessCheck;
    use crate::simulator::{FaultConfig, Simulator, SimulatorConfig};

    const ACCEPTED: &str = "accepted-token";

    /// Serves a simulator that accepts only [`ACCEPTED`] and fails every call with `error_rate`.
    async fn simulator(error_rate: f64) -> String {
        let config = SimulatorConfig {
            tokens: vec![crate::simulator::ApiToken::all_scopes(ACCEPTED)],
            faults: FaultConfig {
                error_rate,
                ..FaultConfig::default()
            },
            ..SimulatorConfig::default()
        };
        let simulator = Simulator::new(config).expect("no state file to read");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(simulator.serve(listener, std::future::pending()));
        base_url
    }

    struct Judging {
        token: Arc<DefaultToken>,
        metrics: Arc<Metrics>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Judging {
        /// Judges `token` (with no grace) against `base_url`, with one attempt per call.
        fn start(base_url: String, token: &str) -> Self {
            let token = Arc::new(DefaultToken::fixed(ApiToken::new(token)).with_grace(Duration::ZERO));
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = Arc::new(Metrics::register(&mut registry));
            let http = HttpClient::new(HttpClientConfig {
                base_url,
                ..HttpClientConfig::default()
            })
            .unwrap();
            let budget = Arc::new(Budget::new(BudgetConfig::default()));
            let policy = RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            };
            let api =
                Resilient::new(http, budget, policy, metrics.clone()).reporting_tokens_to(token.clone());
            let judging = keep_judging(token.clone(), Arc::new(api), metrics.clone(), Duration::ZERO);
            let task = tokio::spawn(judging);
            Self { token, metrics, task }
        }

        /// Waits until `holds`, or panics after ten seconds.
        async fn until(&self, what: &str, holds: impl Fn(&Self) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !holds(self) {
                let now = self.token.standing(Instant::now());
                assert!(Instant::now() < deadline, "no {what}; standing {now:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        fn standing(&self) -> Standing {
            self.token.standing(Instant::now())
        }

        fn rejected_metric(&self) -> i64 {
            self.metrics.default_token_rejected.get()
        }

        fn regions_answered(&self, status_class: &'static str) -> u64 {
            let labels = crate::metrics::RequestLabels {
                endpoint: crate::altostrat::Endpoint::ListRegions.as_str(),
                status_class,
            };
            self.metrics.api_requests.get_or_create(&labels).get()
        }
    }

    impl Drop for Judging {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[tokio::test]
    async fn a_refused_token_is_rejected_through_the_check_call() {
        let judging = Judging::start(simulator(0.0).await, "wrong");
        judging
            .until("rejection", |j| {
                matches!(j.standing(), Standing::Rejected { status: 401, .. }) && j.rejected_metric() == 1
            })
            .await;
        assert!(judging.token.not_ready_reason(Instant::now()).is_some());
        assert_eq!(
            judging.regions_answered("4xx"),
            1,
            "one check call, not one per tick"
        );
    }

    #[tokio::test]
    async fn an_accepted_token_is_accepted_through_the_check_call() {
        let judging = Judging::start(simulator(0.0).await, ACCEPTED);
        judging
            .until("acceptance", |j| j.standing() == Standing::Accepted)
            .await;
        assert_eq!(judging.token.not_ready_reason(Instant::now()), None);
        assert_eq!(judging.rejected_metric(), 0);
    }

    #[tokio::test]
    async fn an_outage_says_nothing_of_a_wrong_token() {
        let judging = Judging::start(simulator(1.0).await, "wrong");
        judging
            .until("an answered check call", |j| j.regions_answered("5xx") == 1)
            .await;
        assert_eq!(judging.standing(), Standing::Unanswered);
        assert_eq!(judging.token.not_ready_reason(Instant::now()), None);
        assert_eq!(judging.rejected_metric(), 0);
    }
}
