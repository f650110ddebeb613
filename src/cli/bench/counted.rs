//! The GPU's counted cost (bytes and multiplies per kernel family beside their floor, and the
//! time a roofline predicts) as `bench model` and `bench bootstrap` report it.

use serde::Serialize;

use crate::backend::cost::{CostFamily, KernelCost, KernelCounts};

/// One kernel family's counted cost in a report.
#[derive(Clone, Serialize)]
pub(super) struct FamilyReport {
    pub(super) family: &'static str,
    #[serde(flatten)]
    pub(super) cost: KernelCost,
    bytes_ratio: f64,
    mults_ratio: f64,
}

impl FamilyReport {
    /// One report per kernel family of `k`, in `CostFamily::ALL` order.
    pub(super) fn families(k: &KernelCounts) -> Vec<Self> {
        CostFamily::ALL
            .iter()
            .map(|&f| Self::new(f.name(), k.get(f)))
            .collect()
    }

    pub(super) fn new(family: &'static str, cost: KernelCost) -> Self {
        FamilyReport {
            family,
            cost,
            bytes_ratio: cost.bytes_ratio(),
            mults_ratio: cost.mults_ratio(),
        }
    }
}

/// Prints a counted-cost table: one row per `(name, cost)`.
pub(super) fn print_counted(rows: &[(String, KernelCost)]) {
    println!(
        "{:<14} {:>10} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "counted", "dispatches", "GB", "G mults", "floor GB", "floor Gmul", "bytes x", "mults x"
    );
    for (name, c) in rows {
        println!(
            "{:<14} {:>10} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>8.2} {:>8.2}",
            name,
            c.dispatches,
            c.bytes as f64 / 1e9,
            c.mults as f64 / 1e9,
            c.floor_bytes as f64 / 1e9,
            c.floor_mults as f64 / 1e9,
            c.bytes_ratio(),
            c.mults_ratio()
        );
    }
}
