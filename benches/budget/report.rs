//! The budget arm's accounting of Altostrat calls (from the simulator's per-endpoint, per-status
//! counts) and its markdown report.

use std::collections::BTreeMap;

use altostrat_vpn_operator::simulator;

/// Calls of one endpoint ("METHOD /route/template"), by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// 2xx answers.
    pub ok: u64,
    /// 429 answers: refused by the rate limit, not counted in its window.
    pub throttled: u64,
    /// Other errors (they do count in the rate limit's window).
    pub errors: u64,
}

/// Altostrat calls by endpoint.
#[derive(Clone, Debug, Default)]
pub struct Calls(pub BTreeMap<String, Outcomes>);

impl Calls {
    /// From the simulator's `by_status` counts, keyed "METHOD /route/template STATUS".
    pub fn of(calls: &simulator::Calls) -> Self {
        let mut out = BTreeMap::<String, Outcomes>::new();
        for (key, count) in &calls.by_status {
            let (endpoint, status) = key.rsplit_once(' ').unwrap_or((key, "0"));
            let entry = out.entry(endpoint.to_owned()).or_default();
            match status {
                "429" => entry.throttled += count,
                s if s.starts_with('2') => entry.ok += count,
                _ => entry.errors += count,
            }
        }
        Self(out)
    }

    /// The calls made since `before` was taken.
    pub fn since(&self, before: &Calls) -> Self {
        let mut out = self.0.clone();
        for (endpoint, b) in &before.0 {
            if let Some(o) = out.get_mut(endpoint) {
                o.ok -= b.ok.min(o.ok);
                o.throttled -= b.throttled.min(o.throttled);
                o.errors -= b.errors.min(o.errors);
            }
        }
        out.retain(|_, o| *o != Outcomes::default());
        Self(out)
    }

    fn sum(&self, f: impl Fn(&Outcomes) -> u64) -> u64 {
        self.0.values().map(f).sum()
    }

    /// Calls the rate limit let through (everything but 429s).
    pub fn accepted(&self) -> u64 {
        self.sum(|o| o.ok + o.errors)
    }

    /// Accepted POSTs, PUTs and DELETEs.
    pub fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| !k.starts_with("GET "))
            .map(|(_, o)| o.ok + o.errors)
            .sum()
    }

    pub fn throttled(&self) -> u64 {
        self.sum(|o| o.throttled)
    }

    pub fn errors(&self) -> u64 {
        self.sum(|o| o.errors)
    }

    /// "METHOD /route N" for every endpoint with accepted calls, most first.
    pub fn summary(&self) -> String {
        let mut parts: Vec<(u64, &String)> = self
            .0
            .iter()
            .map(|(k, o)| (o.ok + o.errors, k))
            .filter(|(n, _)| *n > 0)
            .collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        let parts: Vec<String> = parts.iter().map(|(n, k)| format!("{k} {n}")).collect();
        if parts.is_empty() {
            "no calls".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// One line of the report.
pub struct Row {
    measure: String,
    value: String,
}

impl Row {
    pub fn new(measure: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            measure: measure.into(),
            value: value.into(),
        }
    }
}

/// The report: a markdown table of measures, then the convergence calls by endpoint.
pub struct Report {
    settings: String,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(settings: &str) -> Self {
        Self {
            settings: settings.to_owned(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) {
        eprintln!("[budget] {}: {}", row.measure, row.value);
        self.rows.push(row);
    }

    /// Prints the report as markdown, ready to append to BENCHMARKS.md.
    pub fn print(&self, convergence: &Calls, (instances, peers): (usize, usize)) {
        println!("\n### Budget arm: {instances} instances + {peers} peers\n");
        println!("{}\n", self.settings);
        println!("| measure | value |\n|---|---|");
        for row in &self.rows {
            println!("| {} | {} |", row.measure, row.value);
        }
        println!("\nAltostrat calls until convergence (or the time limit), by endpoint:\n");
        println!(
            "| endpoint | accepted | per instance | per peer | 429 | other errors |\n|---|---|---|---|---|---|"
        );
        for (endpoint, o) in &convergence.0 {
            let n = (o.ok + o.errors) as f64;
            println!(
                "| `{endpoint}` | {} | {:.2} | {:.2} | {} | {} |",
                o.ok + o.errors,
                n / instances.max(1) as f64,
                n / peers.max(1) as f64,
                o.throttled,
                o.errors
            );
        }
    }
}
