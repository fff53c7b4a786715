use std::sync::Arc;

use super::*;

fn config(rate: u32, burst: u32) -> BudgetConfig {
    BudgetConfig {
        rate_per_minute: rate,
        burst,
        ..BudgetConfig::default()
    }
}

/// Sends `n` requests of `urgency` as fast as the budget allows, each retrying a refusal after
/// the wait it was told; returns the instants they were granted.
async fn spend(budget: Arc<Budget>, token: ApiToken, urgency: Urgency, n: usize) -> Vec<Instant> {
    spend_as(budget, token, urgency, Caller::shared(), n).await
}

/// [`spend`] paid from `caller`'s share.
async fn spend_as(
    budget: Arc<Budget>,
    token: ApiToken,
    urgency: Urgency,
    caller: Caller,
    n: usize,
) -> Vec<Instant> {
    let callers = (0..n).map(|_| {
        let (budget, token, caller) = (budget.clone(), token.clone(), caller.clone());
        tokio::spawn(async move {
            loop {
                match budget.acquire(&token, urgency, &caller).await {
                    Ok(_) => return Instant::now(),
                    Err(throttled) => tokio::time::sleep(throttled.expected_wait).await,
                }
            }
        })
    });
    let mut granted: Vec<Instant> = futures::future::join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    granted.sort();
    granted
}

/// The most requests any 60 s window holds.
fn busiest_minute(granted: &[Instant]) -> usize {
    granted
        .iter()
        .map(|start| {
            granted
                .iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_secs(60))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn no_window_of_sixty_seconds_carries_more_than_the_rate_burst_included() {
    let budget = Arc::new(Budget::new(config(60, 10)));
    let granted = spend(budget, ApiToken::new("t"), Urgency::Write, 200).await;
    assert_eq!(granted.len(), 200);
    assert!(busiest_minute(&granted) <= 60, "{}", busiest_minute(&granted));
}

#[tokio::test(start_paused = true)]
async fn a_new_budget_starts_empty_not_with_a_burst() {
    let started = Instant::now();
    let budget = Arc::new(Budget::new(config(60, 10)));
    let granted = spend(budget, ApiToken::new("t"), Urgency::Write, 2).await;
    // 60/min with a burst of 10 sustains 50/min: one request per 1.2 s. The reserve (2 of the
    // 10) refills first, and the shared caller never uses it: its first goes after 3 slots.
    let expected: Vec<Duration> = (3..=4).map(|i| Duration::from_millis(1200 * i)).collect();
    let offsets: Vec<Duration> = granted.iter().map(|t| *t - started).collect();
    assert_eq!(offsets, expected);
}

#[tokio::test(start_paused = true)]
async fn a_caller_never_waits_longer_than_the_cap_and_refused_callers_are_spread() {
    let budget = Budget::new(config(60, 2));
    let token = ApiToken::new("t");
    // 60/min, burst 2: one per 1.03 s; the cap of 5 s admits four waiting callers at most.
    let shared = Caller::shared();
    let attempts = (0..10).map(|_| budget.acquire(&token, Urgency::Write, &shared));
    let started = Instant::now();
    let results = futures::future::join_all(attempts).await;
    assert!(started.elapsed() <= Duration::from_secs(5));
    let refused: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.err().map(|t| t.expected_wait))
        .collect();
    assert!(refused.len() >= 5, "{results:?}");
    let mut sorted = refused.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        refused.len(),
        "each refused caller gets its own slot: {refused:?}"
    );
    assert!(refused.iter().all(|w| *w > Duration::from_secs(4)));
}

#[tokio::test(start_paused = true)]
async fn tokens_never_wait_for_each_other() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    // Token a is flooded; token b's single write goes after its own first interval.
    let flood = tokio::spawn(spend(budget.clone(), ApiToken::new("a"), Urgency::Write, 30));
    tokio::task::yield_now().await;
    let started = Instant::now();
    budget
        .acquire(&ApiToken::new("b"), Urgency::Write, &Caller::namespace("b"))
        .await
        .unwrap();
    assert!(started.elapsed() <= Duration::from_millis(1100));
    flood.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn writes_go_before_drift_checks_and_polls_keep_their_share() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    let writes = tokio::spawn(spend(budget.clone(), token.clone(), Urgency::Write, 100));
    let drift = tokio::spawn(spend(budget.clone(), token.clone(), Urgency::Drift, 3));
    let polls = tokio::spawn(spend(budget.clone(), token.clone(), Urgency::Poll, 3));
    let writes = writes.await.unwrap();
    let (drift, polls) = (drift.await.unwrap(), polls.await.unwrap());
    let last_write = *writes.last().unwrap();
    assert!(
        drift.iter().all(|t| *t > last_write),
        "drift checks wait for the writes"
    );
    assert!(
        polls.iter().all(|t| *t < last_write),
        "polls are not starved by a flood of writes"
    );
}

#[tokio::test(start_paused = true)]
async fn observations_use_at_most_their_share() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let started = Instant::now();
    let granted = spend(budget, ApiToken::new("t"), Urgency::Drift, 16).await;
    // A quarter of 60/min: one every 4 s.
    let in_first_minute = granted
        .iter()
        .filter(|t| **t < started + Duration::from_secs(60))
        .count();
    assert!(in_first_minute <= 15, "{in_first_minute}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_capped_and_pauses_every_caller_of_the_token() {
    let budget = Budget::new(config(60, 2));
    let token = ApiToken::new("t");
    let pause = budget.back_off(&token, Duration::MAX);
    assert_eq!(pause, Duration::from_secs(600));
    let refused = budget
        .acquire(&token, Urgency::Write, &Caller::shared())
        .await
        .unwrap_err();
    assert!(refused.expected_wait >= Duration::from_secs(600));
    assert!(
        budget
            .acquire(&ApiToken::new("other"), Urgency::Write, &Caller::shared())
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_with_its_own_rate_is_paced_by_it() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let shared = ApiToken::new("t").with_rate_per_minute(12);
    let granted = spend(budget, shared, Urgency::Write, 12).await;
    assert!(busiest_minute(&granted) <= 12);
}

#[test]
fn a_schedule_spends_from_an_empty_bucket() {
    let now = Instant::now();
    let mut schedule = Schedule::new(&config(60, 5), 60, now);
    let interval = Duration::from_secs(60) / 55;
    // A burst of 5 keeps 1 for quiet namespaces: it refills first, so only their writes go
    // after one interval.
    assert_eq!(schedule.reserve_writes(), 1);
    assert_eq!(schedule.reserve_ready_at(0, now), now + interval);
    assert_eq!(schedule.ready_at(Urgency::Write, now), now + interval * 2);
    schedule.spend(Urgency::Write, now + interval);
    assert_eq!(
        schedule.ready_at(Urgency::Write, now + interval),
        now + interval * 3
    );
}

fn waiter(ticket: u64) -> Waiter {
    (ticket, Arc::new(Notify::new()))
}

/// The tickets in the order `turns` serves them.
fn served_order(mut turns: Turns) -> Vec<u64> {
    let mut order = Vec::new();
    while let Some(ticket) = turns.head() {
        order.push(ticket);
        turns.served(ticket);
    }
    order
}

#[test]
fn namespaces_take_turns_one_request_each_in_arrival_order_within_each() {
    let (a, b, c) = (
        Caller::namespace("a"),
        Caller::namespace("b"),
        Caller::namespace("c"),
    );
    let mut turns = Turns::default();
    for (ticket, caller) in [(1, &a), (2, &a), (3, &a), (4, &b), (5, &a), (6, &c), (7, &b)] {
        turns.push(caller, waiter(ticket));
    }
    assert_eq!(turns.len(), 7);
    assert_eq!(served_order(turns), [1, 4, 6, 2, 7, 3, 5]);
}

#[test]
fn a_caller_that_leaves_gives_up_its_place_and_an_empty_namespace_its_turn() {
    let (a, b) = (Caller::namespace("a"), Caller::namespace("b"));
    let mut turns = Turns::default();
    for (ticket, caller) in [(1, &a), (2, &b), (3, &a), (4, &b)] {
        turns.push(caller, waiter(ticket));
    }
    turns.remove(2);
    turns.remove(4);
    assert_eq!(served_order(turns), [1, 3]);
}

#[test]
fn a_new_caller_waits_for_its_own_namespace_and_one_turn_of_each_other_per_own_caller() {
    let (a, b) = (Caller::namespace("a"), Caller::namespace("b"));
    let mut turns = Turns::default();
    for ticket in 0..50 {
        turns.push(&a, waiter(ticket));
    }
    // B's first caller goes after one of A's; A's next after all 50 of its own and none of B's.
    assert_eq!(turns.ahead_of_new(&b), 1);
    assert_eq!(turns.ahead_of_new(&a), 50);
    turns.push(&b, waiter(50));
    assert_eq!(turns.ahead_of_new(&b), 3, "A's turn before each of B's two");
    assert_eq!(turns.ahead_of_new(&a), 51);
}

#[tokio::test(start_paused = true)]
async fn a_flooding_namespace_delays_another_by_one_turn_per_request_not_by_its_backlog() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    let (a, b) = (Caller::namespace("a"), Caller::namespace("b"));
    let flood = tokio::spawn(spend_as(budget.clone(), token.clone(), Urgency::Write, a, 200));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let started = Instant::now();
    let few = spend_as(budget.clone(), token, Urgency::Write, b, 3).await;
    // 60/min, burst 2: one slot per 1.03 s; B's three go in every other slot.
    let last = *few.last().unwrap() - started;
    assert!(last <= Duration::from_millis(6 * 1035 + 10), "{last:?}");
    let flood = flood.await.unwrap();
    assert!(busiest_minute(&flood) <= 60);
}

#[tokio::test(start_paused = true)]
async fn one_namespace_refused_many_times_does_not_push_back_another_ones_refusal() {
    let budget = Budget::new(config(60, 2));
    let token = ApiToken::new("t");
    let (a, b) = (Caller::namespace("a"), Caller::namespace("b"));
    // Altostrat paused the token for 6 s: every caller is refused and told when to come back.
    budget.back_off(&token, Duration::from_secs(6));
    let mut told_a = Vec::new();
    for _ in 0..20 {
        told_a.push(
            budget
                .acquire(&token, Urgency::Write, &a)
                .await
                .unwrap_err()
                .expected_wait,
        );
    }
    assert!(
        told_a.windows(2).all(|w| w[0] < w[1]),
        "A's come back one by one: {told_a:?}"
    );
    assert!(*told_a.last().unwrap() > Duration::from_secs(25), "{told_a:?}");
    // B comes back in the next turn after the pause, not after A's twenty.
    let told_b = budget
        .acquire(&token, Urgency::Write, &b)
        .await
        .unwrap_err()
        .expected_wait;
    assert!(told_b < Duration::from_secs(9), "{told_b:?}");
    let told_a_next = budget
        .acquire(&token, Urgency::Write, &a)
        .await
        .unwrap_err()
        .expected_wait;
    assert!(
        told_a_next > *told_a.last().unwrap(),
        "A's next waits for its own turn"
    );
}

#[test]
fn a_namespace_served_out_of_turn_goes_to_the_back_and_the_others_keep_their_order() {
    let (a, b, c) = (
        Caller::namespace("a"),
        Caller::namespace("b"),
        Caller::namespace("c"),
    );
    let mut turns = Turns::default();
    for (ticket, caller) in [(1, &a), (2, &b), (3, &c), (4, &b)] {
        turns.push(caller, waiter(ticket));
    }
    turns.served(2);
    assert_eq!(served_order(turns), [1, 3, 4]);
}

/// 60/min, burst 2: a slot every 1.03 s, an observation every 4 s, a poll of a busy namespace
/// every 20 s.
const SLOT: Duration = Duration::from_millis(1035);
const OBSERVE_INTERVAL: Duration = Duration::from_secs(4);
const POLL_GUARANTEE: Duration = Duration::from_secs(20);

/// Starts `a` flooding the lane with writes and lets the flood fill it.
async fn flood_writes(budget: &Arc<Budget>, token: &ApiToken, caller: &str, n: usize) {
    let flood = spend_as(
        budget.clone(),
        token.clone(),
        Urgency::Write,
        Caller::namespace(caller),
        n,
    );
    tokio::spawn(flood);
    tokio::time::sleep(Duration::from_secs(10)).await;
}

#[tokio::test(start_paused = true)]
async fn a_quiet_namespace_polls_at_the_observation_share_while_another_ones_writes_queue() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    flood_writes(&budget, &token, "a", 200).await;
    let b = Caller::namespace("b");
    for _ in 0..3 {
        let waited = budget.acquire(&token, Urgency::Poll, &b).await.unwrap();
        assert!(waited <= OBSERVE_INTERVAL + SLOT, "{waited:?}");
    }
}

/// The gaps between `granted`, the first one counted from `started`.
fn gaps(started: Instant, granted: &[Instant]) -> Vec<Duration> {
    std::iter::once(started)
        .chain(granted.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_namespace_with_writes_waiting_keeps_only_the_poll_share() {
    let started = Instant::now();
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    flood_writes(&budget, &token, "a", 200).await;
    flood_writes(&budget, &token, "b", 100).await;
    let polls = spend_as(budget, token, Urgency::Poll, Caller::namespace("b"), 3).await;
    let gaps = gaps(started, &polls);
    assert!(gaps.iter().all(|g| *g >= POLL_GUARANTEE), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn the_shared_caller_keeps_only_the_poll_share_while_writes_queue() {
    let started = Instant::now();
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    flood_writes(&budget, &token, "a", 200).await;
    let polls = spend(budget, token, Urgency::Poll, 3).await;
    let gaps = gaps(started, &polls);
    assert!(gaps.iter().all(|g| *g >= POLL_GUARANTEE), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn quiet_namespaces_observations_stay_within_the_observation_share() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    flood_writes(&budget, &token, "a", 200).await;
    let observers = [
        ("b", Urgency::Poll, 10),
        ("c", Urgency::Poll, 10),
        ("a", Urgency::Poll, 10),
        (Caller::SHARED, Urgency::Poll, 5),
        (Caller::SHARED, Urgency::Drift, 5),
    ]
    .into_iter()
    .map(|(ns, u, n)| spend_as(budget.clone(), token.clone(), u, Caller::namespace(ns), n));
    let mut observed: Vec<Instant> = futures::future::join_all(observers)
        .await
        .into_iter()
        .flatten()
        .collect();
    observed.sort();
    assert_eq!(observed.len(), 40);
    // A quarter of 60/min.
    assert!(busiest_minute(&observed) <= 15, "{}", busiest_minute(&observed));
}

#[tokio::test(start_paused = true)]
async fn a_quiet_namespace_polling_all_the_time_does_not_take_a_busy_ones_poll_share() {
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    flood_writes(&budget, &token, "a", 300).await;
    let quiet = tokio::spawn(spend_as(
        budget.clone(),
        token.clone(),
        Urgency::Poll,
        Caller::namespace("b"),
        40,
    ));
    let busy = spend_as(budget, token, Urgency::Poll, Caller::namespace("a"), 3).await;
    let quiet = quiet.await.unwrap();
    assert!(
        busy.last().unwrap() < quiet.last().unwrap(),
        "A's polls keep their share while B polls: {busy:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_busy_namespaces_poll_goes_once_its_queued_writes_are_sent_not_a_poll_share_later() {
    let started = Instant::now();
    let budget = Arc::new(Budget::new(config(60, 2)));
    let token = ApiToken::new("t");
    let a = Caller::namespace("a");
    let writes = tokio::spawn(spend_as(
        budget.clone(),
        token.clone(),
        Urgency::Write,
        a.clone(),
        3,
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let polls = spend_as(budget, token, Urgency::Poll, a, 1).await;
    let writes = writes.await.unwrap();
    assert!(
        polls[0] >= writes[2],
        "the writes went first: {writes:?}, poll {polls:?}"
    );
    let waited = polls[0] - started;
    assert!(waited < POLL_GUARANTEE / 2, "the poll waited {waited:?}");
}

/// 60/min, burst 10: a slot every 1.2 s; 2 of the burst are the quiet namespaces' reserve.
const RESERVE: usize = 2;

/// Waits for one write of `caller`; returns how long it waited.
async fn write_as(budget: &Budget, token: &ApiToken, caller: &str) -> Duration {
    let caller = Caller::namespace(caller);
    budget.acquire(token, Urgency::Write, &caller).await.unwrap()
}

/// Sends the reserve's worth of writes of `caller`, asserting they all go at once.
async fn writes_at_once_from_the_reserve(
    budget: &Arc<Budget>,
    token: &ApiToken,
    caller: &str,
) -> Vec<Instant> {
    let started = Instant::now();
    let caller = Caller::namespace(caller);
    let writes = spend_as(budget.clone(), token.clone(), Urgency::Write, caller, RESERVE).await;
    assert!(
        writes.iter().all(|t| *t == started),
        "{:?}",
        gaps(started, &writes)
    );
    writes
}

#[tokio::test(start_paused = true)]
async fn a_quiet_namespaces_first_writes_go_from_the_reserve_while_another_ones_queue() {
    let budget = Arc::new(Budget::new(config(60, 10)));
    let token = ApiToken::new("t");
    flood_writes(&budget, &token, "a", 200).await;
    writes_at_once_from_the_reserve(&budget, &token, "b").await;
    // The reserve's worth spent, B's next write waits for its turn.
    assert!(write_as(&budget, &token, "b").await > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_reserve_refills_and_the_busy_namespace_keeps_the_lanes_rate() {
    let budget = Arc::new(Budget::new(config(60, 10)));
    let token = ApiToken::new("t");
    let a = Caller::namespace("a");
    let flood = tokio::spawn(spend_as(budget.clone(), token.clone(), Urgency::Write, a, 200));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut quiet = Vec::new();
    for _ in 0..3 {
        quiet.extend(writes_at_once_from_the_reserve(&budget, &token, "b").await);
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    let mut all = flood.await.unwrap();
    all.extend(quiet);
    all.sort();
    assert!(busiest_minute(&all) <= 60, "{}", busiest_minute(&all));
}

/// A lane of 60/min, burst 10, whose callers wait as long as it takes, idle for a minute:
/// its bucket is full.
async fn full_patient_lane(token: &ApiToken) -> Arc<Budget> {
    let budget = Arc::new(Budget::new(BudgetConfig {
        max_queue_wait: Duration::from_secs(120),
        ..config(60, 10)
    }));
    write_as(&budget, token, "other").await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    budget
}

/// How many of `granted` went at `started`.
fn at_once(started: Instant, granted: &[Instant]) -> usize {
    granted.iter().filter(|t| **t == started).count()
}

#[tokio::test(start_paused = true)]
async fn the_shared_caller_never_writes_from_the_reserve() {
    let token = ApiToken::new("t");
    let budget = full_patient_lane(&token).await;
    let started = Instant::now();
    let shared = spend(budget.clone(), token.clone(), Urgency::Write, 10).await;
    assert_eq!(
        at_once(started, &shared),
        10 - RESERVE,
        "{:?}",
        gaps(started, &shared)
    );
    // The reserve is still whole for a quiet namespace.
    for _ in 0..RESERVE {
        assert_eq!(write_as(&budget, &token, "b").await, Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn a_namespace_alone_loses_at_most_the_reserve_of_its_burst() {
    let token = ApiToken::new("t");
    let budget = full_patient_lane(&token).await;
    let started = Instant::now();
    let granted = spend_as(budget, token, Urgency::Write, Caller::namespace("a"), 12).await;
    assert_eq!(
        at_once(started, &granted),
        10 - RESERVE,
        "{:?}",
        gaps(started, &granted)
    );
}
