//! Counted cost of kernel launches: device-memory bytes and u32 multiplies, beside their floor.
//!
//! The GPU backend adds one [`KernelCost`] per dispatch it records, computed from that dispatch's
//! kernel and shape (`backend::gpu::cost` holds the formulas, one per kernel, read off the WGSL
//! access pattern). **Counted** bytes are every word the kernel's invocations read from or write
//! to storage buffers (per-element data and per-row / per-entry tables such as twiddles, weights
//! and column indices; the per-limb moduli and limb maps, a few hundred bytes every invocation
//! shares, are left out), counted as often as the code asks for them: a cache may serve re-reads,
//! so counted bytes bound the traffic from above. **Floor** bytes read each input of the kernel
//! once and write each output once; floor multiplies are the fewest the kernel's algorithm needs
//! with the same u32 arithmetic. A dispatch at its floor has ratio 1.
//!
//! A u32 multiply is one `*` in the shader source: a 32x32->64 product built from 16-bit halves
//! counts 4, a Shoup product 6, a Barrett product 9 (see the prelude).

use serde::Serialize;
use std::ops::{Add, AddAssign, Sub};

/// Counted and floor cost of some dispatches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCost {
    /// Dispatches (launches).
    pub dispatches: u64,
    /// Bytes the invocations read and write in device memory, as often as they ask for them.
    pub bytes: u64,
    /// u32 multiplies.
    pub mults: u64,
    /// Bytes if each input were read once and each output written once.
    pub floor_bytes: u64,
    /// The fewest u32 multiplies of the kernel's algorithm.
    pub floor_mults: u64,
}

impl KernelCost {
    /// Counted bytes over floor bytes (1 at the floor; 0 when nothing was counted).
    pub fn bytes_ratio(&self) -> f64 {
        ratio(self.bytes, self.floor_bytes)
    }

    /// Counted multiplies over floor multiplies (1 at the floor; 0 when none were counted).
    pub fn mults_ratio(&self) -> f64 {
        ratio(self.mults, self.floor_mults)
    }

    /// Seconds on `roof` if each family's time is the larger of its bytes over the bandwidth
    /// and its multiplies over the multiply rate (counted, then floor).
    pub fn roofline_seconds(&self, roof: &Roofline) -> (f64, f64) {
        (
            roof.seconds(self.bytes, self.mults),
            roof.seconds(self.floor_bytes, self.floor_mults),
        )
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Add for KernelCost {
    type Output = KernelCost;
    fn add(self, o: KernelCost) -> KernelCost {
        KernelCost {
            dispatches: self.dispatches + o.dispatches,
            bytes: self.bytes + o.bytes,
            mults: self.mults + o.mults,
            floor_bytes: self.floor_bytes + o.floor_bytes,
            floor_mults: self.floor_mults + o.floor_mults,
        }
    }
}

impl AddAssign for KernelCost {
    fn add_assign(&mut self, o: KernelCost) {
        *self = *self + o;
    }
}

impl Sub for KernelCost {
    type Output = KernelCost;
    fn sub(self, o: KernelCost) -> KernelCost {
        KernelCost {
            dispatches: self.dispatches - o.dispatches,
            bytes: self.bytes - o.bytes,
            mults: self.mults - o.mults,
            floor_bytes: self.floor_bytes - o.floor_bytes,
            floor_mults: self.floor_mults - o.floor_mults,
        }
    }
}

/// A kernel family: one WGSL file (copies are buffer-to-buffer copies, no shader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CostFamily {
    /// `ntt.wgsl`.
    Ntt,
    /// `elementwise.wgsl`.
    Elementwise,
    /// `rns.wgsl` (base conversion, exact or fast).
    Rns,
    /// `keyswitch.wgsl`.
    Keyswitch,
    /// `automorphism.wgsl`.
    Automorphism,
    /// `linear.wgsl`.
    Linear,
    /// Buffer-to-buffer copies.
    Copy,
}

impl CostFamily {
    /// Every family, in report order.
    pub const ALL: [CostFamily; 7] = [
        CostFamily::Ntt,
        CostFamily::Elementwise,
        CostFamily::Rns,
        CostFamily::Keyswitch,
        CostFamily::Automorphism,
        CostFamily::Linear,
        CostFamily::Copy,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            CostFamily::Ntt => "ntt",
            CostFamily::Elementwise => "elementwise",
            CostFamily::Rns => "rns",
            CostFamily::Keyswitch => "keyswitch",
            CostFamily::Automorphism => "automorphism",
            CostFamily::Linear => "linear",
            CostFamily::Copy => "copy",
        }
    }
}

/// [`KernelCost`] per kernel family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounts {
    /// NTTs.
    pub ntt: KernelCost,
    /// Element-wise kernels.
    pub elementwise: KernelCost,
    /// Base conversions.
    pub rns: KernelCost,
    /// Key-switching inner products.
    pub keyswitch: KernelCost,
    /// Automorphisms.
    pub automorphism: KernelCost,
    /// Linear layers.
    pub linear: KernelCost,
    /// Buffer copies.
    pub copy: KernelCost,
}

impl KernelCounts {
    /// The cost of `family`.
    pub fn get(&self, family: CostFamily) -> KernelCost {
        match family {
            CostFamily::Ntt => self.ntt,
            CostFamily::Elementwise => self.elementwise,
            CostFamily::Rns => self.rns,
            CostFamily::Keyswitch => self.keyswitch,
            CostFamily::Automorphism => self.automorphism,
            CostFamily::Linear => self.linear,
            CostFamily::Copy => self.copy,
        }
    }

    /// Adds `cost` to `family`.
    pub fn record(&mut self, family: CostFamily, cost: KernelCost) {
        *match family {
            CostFamily::Ntt => &mut self.ntt,
            CostFamily::Elementwise => &mut self.elementwise,
            CostFamily::Rns => &mut self.rns,
            CostFamily::Keyswitch => &mut self.keyswitch,
            CostFamily::Automorphism => &mut self.automorphism,
            CostFamily::Linear => &mut self.linear,
            CostFamily::Copy => &mut self.copy,
        } += cost;
    }

    /// Whether nothing was counted (a CPU backend).
    pub fn is_empty(&self) -> bool {
        *self == KernelCounts::default()
    }

    /// Every family together.
    pub fn total(&self) -> KernelCost {
        CostFamily::ALL
            .iter()
            .fold(KernelCost::default(), |acc, &f| acc + self.get(f))
    }

    /// Predicted seconds on `roof`, counted and floor: the sum over families of each family's
    /// roofline time (a family is either bandwidth- or multiply-bound).
    pub fn roofline_seconds(&self, roof: &Roofline) -> (f64, f64) {
        CostFamily::ALL.iter().fold((0.0, 0.0), |(c, f), &fam| {
            let (a, b) = self.get(fam).roofline_seconds(roof);
            (c + a, f + b)
        })
    }
}

impl Sub for KernelCounts {
    type Output = KernelCounts;
    fn sub(self, o: KernelCounts) -> KernelCounts {
        let mut out = KernelCounts::default();
        for f in CostFamily::ALL {
            out.record(f, self.get(f) - o.get(f));
        }
        out
    }
}

/// A device's memory bandwidth and u32 multiply rate, for predicted times.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Roofline {
    /// What it describes (a GPU class or `custom`).
    pub name: String,
    /// Device-memory bytes per second.
    pub bytes_per_second: f64,
    /// u32 multiplies per second.
    pub mults_per_second: f64,
}

/// Named roofline classes: `(name, GB/s, G u32 multiplies/s, what it is)`.
pub const ROOFLINES: &[(&str, f64, f64, &str)] = &[
    (
        "rtx4090",
        1000.0,
        20000.0,
        "RTX 4090-class desktop GPU: about 1 TB/s, 20 T u32 multiplies/s",
    ),
    (
        "h200",
        4800.0,
        16700.0,
        "NVIDIA H200: 4.8 TB/s HBM3e, 132 SMs x 64 INT32 lanes x 1.98 GHz = 16.7 T u32 multiplies/s",
    ),
];

impl Roofline {
    /// Time for `bytes` and `mults` when bound by the slower of the two.
    pub fn seconds(&self, bytes: u64, mults: u64) -> f64 {
        (bytes as f64 / self.bytes_per_second).max(mults as f64 / self.mults_per_second)
    }

    /// Parses `GBps,Gmulps` (e.g. `1000,20000`) or a class name from [`ROOFLINES`].
    pub fn parse(s: &str) -> Result<Roofline, String> {
        if let Some(&(name, gb, gm, _)) = ROOFLINES.iter().find(|r| r.0.eq_ignore_ascii_case(s)) {
            return Ok(Roofline {
                name: name.into(),
                bytes_per_second: gb * 1e9,
                mults_per_second: gm * 1e9,
            });
        }
        let names: Vec<&str> = ROOFLINES.iter().map(|r| r.0).collect();
        let bad = || {
            format!(
                "`{s}` is not GBps,Gmulps (e.g. 1000,20000: 1 TB/s and 20 T u32 multiplies/s) nor a GPU class ({})",
                names.join(", ")
            )
        };
        let (a, b) = s.split_once(',').ok_or_else(bad)?;
        let (gb, gm): (f64, f64) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if !(gb.is_finite() && gm.is_finite() && gb > 0.0 && gm > 0.0) {
            return Err(bad());
        }
        Ok(Roofline {
            name: "custom".into(),
            bytes_per_second: gb * 1e9,
            mults_per_second: gm * 1e9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooflines_parse_and_bound_by_the_slower_resource() {
        let r = Roofline::parse("rtx4090").unwrap();
        assert_eq!(r.bytes_per_second, 1e12);
        let c = Roofline::parse(" 500 , 1000").unwrap();
        assert_eq!((c.bytes_per_second, c.mults_per_second), (5e11, 1e12));
        assert_eq!(c.seconds(5_000_000_000_000, 1), 10.0);
        assert_eq!(c.seconds(1, 3_000_000_000_000), 3.0);
        for bad in ["", "1000", "a,b", "0,5", "-1,2", "inf,2", "rtx"] {
            assert!(Roofline::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_add_subtract_and_total() {
        let one = KernelCost {
            dispatches: 1,
            bytes: 10,
            mults: 6,
            floor_bytes: 5,
            floor_mults: 6,
        };
        let mut k = KernelCounts::default();
        k.record(CostFamily::Ntt, one);
        k.record(CostFamily::Linear, one + one);
        assert_eq!(k.total().dispatches, 3);
        assert_eq!(k.total().bytes_ratio(), 2.0);
        assert_eq!((k - k).total(), KernelCost::default());
        assert_eq!(KernelCost::default().bytes_ratio(), 0.0);
    }
}
