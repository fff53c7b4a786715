//! The commands people run by hand: `import` (manifests that adopt what Altostrat holds) and
//! the kubectl plugin (`kubectl altostrat …`, the same binary under the name
//! `kubectl-altostrat`).

pub mod import;
pub mod kubectl;

/// Any error of a command, shown to the person who ran it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
