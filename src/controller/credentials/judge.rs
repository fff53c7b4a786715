//! What Altostrat answered the token of each VpnCredentials: the operator token's judgement
//! ([`TokenRecord`], [`Standing`], the same rotation grace) kept for many tokens, plus the
//! answers of the last minute for the status's budget use.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::altostrat::{ApiToken, TokenAnswer, TokenObserver};
use crate::controller::default_token::{Standing, TokenRecord};

/// The answers about one VpnCredentials' token; a new token starts a new one.
#[derive(Debug)]
struct Judged {
    token: ApiToken,
    record: TokenRecord,
    /// When the answers of (about) the last minute came.
    answers: VecDeque<Instant>,
    /// When the latest answer came, however long ago.
    last_answer: Option<Instant>,
}

/// A cap on the answers remembered per token: far above any rate a token is given.
const MAX_ANSWERS: usize = 10_000;

impl Judged {
    fn answered(&mut self, answer: TokenAnswer, now: Instant) {
        self.record.answered(answer, now);
        self.last_answer = Some(now);
        self.answers.push_back(now);
        self.forget_before(now);
        if self.answers.len() > MAX_ANSWERS {
            self.answers.pop_front();
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .answers
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > Duration::from_secs(60))
        {
            self.answers.pop_front();
        }
    }
}

/// The judgement of every VpnCredentials' token, by the VpnCredentials' name. Told of every
/// answer by the client (as a [`TokenObserver`]); only tracked tokens are kept.
#[derive(Debug, Default)]
pub struct Judge {
    tokens: Mutex<BTreeMap<String, Judged>>,
}

/// How a tracked token stands, and what was answered with it lately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub standing: Standing,
    /// Answers in the last minute.
    pub calls_last_minute: u32,
    /// When the latest answer came.
    pub last_answer: Option<Instant>,
}

impl Judge {
    /// Starts (or keeps) judging `token` as the token of `name`: a different token than before
    /// starts afresh, as the operator's rotated token does.
    pub fn track(&self, name: &str, token: &ApiToken) {
        let mut tokens = self.tokens.lock().expect("judge lock");
        if tokens.get(name).is_some_and(|j| j.token == *token) {
            return;
        }
        let fresh = Judged {
            token: token.clone(),
            record: TokenRecord::default(),
            answers: VecDeque::new(),
            last_answer: None,
        };
        tokens.insert(name.to_owned(), fresh);
    }

    /// Stops judging the token of `name` (deleted, or its Secret unreadable).
    pub fn forget(&self, name: &str) {
        self.tokens.lock().expect("judge lock").remove(name);
    }

    /// The judgement of the token tracked for `name`, under `grace`.
    pub fn judgement(&self, name: &str, now: Instant, grace: Duration) -> Option<Judgement> {
        let mut tokens = self.tokens.lock().expect("judge lock");
        let judged = tokens.get_mut(name)?;
        judged.forget_before(now);
        Some(Judgement {
            standing: judged.record.standing(now, grace),
            calls_last_minute: judged.answers.len() as u32,
            last_answer: judged.last_answer,
        })
    }
}

impl TokenObserver for Judge {
    fn token_answered(&self, token: &ApiToken, answer: TokenAnswer) {
        let now = Instant::now();
        let mut tokens = self.tokens.lock().expect("judge lock");
        for judged in tokens.values_mut().filter(|j| j.token == *token) {
            judged.answered(answer, now);
        }
    }
}

/// Tells every observer of each answer: the operator's token and the shared credentials are
/// judged from the same calls.
#[derive(Debug)]
pub struct Observers(pub Vec<Arc<dyn TokenObserver>>);

impl TokenObserver for Observers {
    fn token_answered(&self, token: &ApiToken, answer: TokenAnswer) {
        for observer in &self.0 {
            observer.token_answered(token, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(180);

    #[test]
    fn answers_judge_the_tracked_token_and_a_new_token_starts_afresh() {
        let judge = Judge::default();
        let (old, new) = (ApiToken::new("old"), ApiToken::new("new"));
        judge.track("shared", &old);
        judge.token_answered(&old, TokenAnswer::Accepted);
        judge.token_answered(&ApiToken::new("other"), TokenAnswer::Refused { status: 401 });
        let now = Instant::now();
        let judged = judge.judgement("shared", now, GRACE).unwrap();
        assert_eq!(judged.standing, Standing::Accepted);
        assert_eq!(judged.calls_last_minute, 1);
        judge.track("shared", &old);
        assert_eq!(
            judge.judgement("shared", now, GRACE).unwrap().calls_last_minute,
            1,
            "kept"
        );
        judge.track("shared", &new);
        let fresh = judge.judgement("shared", now, GRACE).unwrap();
        assert_eq!(
            (fresh.standing, fresh.calls_last_minute),
            (Standing::Unanswered, 0)
        );
        judge.forget("shared");
        assert_eq!(judge.judgement("shared", now, GRACE), None);
    }

    #[test]
    fn a_refused_token_is_rejected_after_the_grace_and_old_answers_leave_the_minute() {
        let judge = Judge::default();
        let token = ApiToken::new("t");
        judge.track("shared", &token);
        judge.token_answered(&token, TokenAnswer::Refused { status: 401 });
        let later = Instant::now() + Duration::from_secs(61);
        let judged = judge.judgement("shared", later, Duration::from_secs(1)).unwrap();
        assert!(matches!(judged.standing, Standing::Rejected { status: 401, .. }));
        assert_eq!(judged.calls_last_minute, 0);
        assert!(judged.last_answer.is_some());
    }
}
