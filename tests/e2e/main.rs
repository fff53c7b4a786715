//! The end-to-end tier: what needs a real kube-apiserver, kube-controller-manager or operator
//! process (admission and CEL rules, garbage collection, RBAC, leases and fencing, the binary's
//! flags and environment, real watches, disaster recovery on a second control plane) and the
//! simulator-profile matrix. Every decision and reconcile scenario is tested in the fast tier
//! instead (`src/controller/**/tests.rs`, against in-process fakes).
//!
//! Every test is `#[ignore]`d: run them with `cargo test --test e2e -- --ignored` against the
//! control plane `scripts/test.sh` starts (it sets `KUBECONFIG` and `E2E_SECOND_KUBECONFIG`).
#![cfg(feature = "simulator")]

mod support;

mod crd_upgrade;
mod credentials;
mod cross_namespace;
mod fencing;
mod fidelity;
mod flux;
mod import;
mod instances;
mod kstatus;
mod ownership;
mod peers;
mod policies;
mod profiles;
mod resilience;
mod token;
