//! CKKS parameters: presets, validation against the HomomorphicEncryption.org 128-bit table.

use cryptodl_kernels::primes::{check_ntt_prime, ntt_primes};
use serde::Serialize;

use super::CkksError;

/// Largest `log2(QP)` for 128-bit classical security with a ternary secret
/// (HomomorphicEncryption.org security standard, Table 1), indexed by `log2(N)`.
pub fn max_log_qp_128(log_n: u32) -> Option<u32> {
    match log_n {
        10 => Some(27),
        11 => Some(54),
        12 => Some(109),
        13 => Some(218),
        14 => Some(438),
        15 => Some(881),
        16 => Some(1772),
        _ => None,
    }
}

/// A validated CKKS parameter set: ring degree, data primes `Q = q_0 ... q_L`, special primes `P`
/// (the key-switching digits hold `|P|` data primes each, so `dnum = ceil((L+1) / |P|)`), and the
/// default scale.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Parameters {
    name: String,
    log_n: u32,
    q: Vec<u32>,
    p: Vec<u32>,
    log_scale: u32,
    insecure: bool,
}

/// A named parameter preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preset {
    /// Name used on the command line (`--preset NAME`).
    pub name: &'static str,
    /// `log2(N)`.
    pub log_n: u32,
    /// Bit sizes of the data primes, `q_0` first.
    pub q_bits: &'static [u32],
    /// Bit sizes of the special primes.
    pub p_bits: &'static [u32],
    /// `log2` of the default scale.
    pub log_scale: u32,
    /// Whether the preset meets 128-bit security (insecure presets need an explicit opt-in).
    pub secure: bool,
}

const B26X6: [u32; 7] = [30, 26, 26, 26, 26, 26, 26];
const B26X12: [u32; 13] = [30, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26];
const B26X27: [u32; 28] = [
    30, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26,
    26, 26, 26, 26,
];

/// `[30, 30, 29 x 49]`: `Q_0 = q_0 q_1` (60 bits) for bootstrapping, 19 primes for the network
/// (one of them spent by bootstrapping's ScaleDown), 30 for the bootstrapping circuit.
const B65536: [u32; 51] = {
    let mut b = [29u32; 51];
    b[0] = 30;
    b[1] = 30;
    b
};
/// `[30, 26 x 35]`: the toy bootstrappable chain (`Q_0 = q_0 q_1`, 56 bits).
const B1024_BOOT: [u32; 36] = {
    let mut b = [26u32; 36];
    b[0] = 30;
    b
};

/// All presets. The secure ones meet the 128-bit table; `toy*` presets are for fast tests only.
pub const PRESETS: &[Preset] = &[
    // SEAL's chain [30, 26 x 6, 30]: one special prime, so 7 single-prime digits.
    Preset {
        name: "n8192",
        log_n: 13,
        q_bits: &B26X6,
        p_bits: &[30],
        log_scale: 26,
        secure: true,
    },
    // [30, 26 x 12] with three 30-bit special primes (hybrid key switching, dnum = 5).
    Preset {
        name: "n16384",
        log_n: 14,
        q_bits: &B26X12,
        p_bits: &[30, 30, 30],
        log_scale: 26,
        secure: true,
    },
    // [30, 26 x 27] with four 30-bit special primes (dnum = 7): depth 27, log QP = 852.
    Preset {
        name: "n32768",
        log_n: 15,
        q_bits: &B26X27,
        p_bits: &[30, 30, 30, 30],
        log_scale: 26,
        secure: true,
    },
    // Bootstrappable (see `circuits::BootstrapConfig::for_preset`): [30, 30, 29 x 49] with nine
    // 30-bit special primes (dnum = 6), log QP = 1751 <= 1772; 2^15 slots.
    Preset {
        name: "n65536",
        log_n: 16,
        q_bits: &B65536,
        p_bits: &[30; 9],
        log_scale: 29,
        secure: true,
    },
    Preset {
        name: "toy1024",
        log_n: 10,
        q_bits: &[30, 26, 26, 26],
        p_bits: &[30],
        log_scale: 26,
        secure: false,
    },
    // The toy bootstrappable ring: message scale 2^46 = Q_0 / 2^10.
    Preset {
        name: "toyboot1024",
        log_n: 10,
        q_bits: &B1024_BOOT,
        p_bits: &[30; 4],
        log_scale: 46,
        secure: false,
    },
    Preset {
        name: "toy4096",
        log_n: 12,
        q_bits: &[30, 26, 26, 26, 26, 26],
        p_bits: &[30, 30],
        log_scale: 26,
        secure: false,
    },
];

impl Preset {
    /// Looks a preset up by name.
    pub fn by_name(name: &str) -> Result<&'static Preset, CkksError> {
        PRESETS
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| CkksError::UnknownPreset {
                name: name.to_string(),
                known: PRESETS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Generates the primes and validates the parameter set. Insecure presets need
    /// `allow_insecure`.
    pub fn parameters(&self, allow_insecure: bool) -> Result<Parameters, CkksError> {
        let n = 1usize << self.log_n;
        let mut used: Vec<u32> = Vec::new();
        let mut take = |bits: &[u32]| -> Result<Vec<u32>, CkksError> {
            let mut out = Vec::with_capacity(bits.len());
            for &b in bits {
                let p = ntt_primes(b, n, 1, &used)?[0];
                used.push(p);
                out.push(p);
            }
            Ok(out)
        };
        // Like SEAL's CoeffModulus::Create: for each size, the largest unused primes, in order.
        let q = take(self.q_bits)?;
        let p = take(self.p_bits)?;
        Parameters::new(self.name, self.log_n, q, p, self.log_scale, allow_insecure)
    }
}

impl Parameters {
    /// Validates a custom parameter set. Errors name the offending value; a set that does not meet
    /// the 128-bit table is refused unless `allow_insecure`.
    pub fn new(
        name: &str,
        log_n: u32,
        q: Vec<u32>,
        p: Vec<u32>,
        log_scale: u32,
        allow_insecure: bool,
    ) -> Result<Self, CkksError> {
        if !(10..=16).contains(&log_n) {
            return Err(CkksError::InvalidParameters {
                reason: format!("log2(N) = {log_n} is outside 10..=16"),
            });
        }
        let n = 1usize << log_n;
        if q.is_empty() || p.is_empty() {
            return Err(CkksError::InvalidParameters {
                reason: "need at least one data prime and one special prime".into(),
            });
        }
        for (i, &x) in q.iter().chain(&p).enumerate() {
            check_ntt_prime(x, n)?;
            if q.iter().chain(&p).take(i).any(|&y| y == x) {
                return Err(CkksError::InvalidParameters {
                    reason: format!("prime {x} appears twice"),
                });
            }
        }
        if !(10..=60).contains(&log_scale) {
            return Err(CkksError::InvalidParameters {
                reason: format!("log2(scale) = {log_scale} is outside 10..=60"),
            });
        }
        let log_qp: f64 = q.iter().chain(&p).map(|&x| (x as f64).log2()).sum();
        let max = max_log_qp_128(log_n);
        let secure = max.is_some_and(|m| log_qp <= m as f64);
        if !secure && !allow_insecure {
            return Err(CkksError::Insecure {
                n,
                log_qp: log_qp.ceil() as u32,
                max_log_qp: max.unwrap_or(0),
            });
        }
        Ok(Self {
            name: name.to_string(),
            log_n,
            q,
            p,
            log_scale,
            insecure: !secure,
        })
    }

    /// Preset or custom name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `log2(N)`.
    pub fn log_n(&self) -> u32 {
        self.log_n
    }
    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        1 << self.log_n
    }
    /// Number of complex slots, `N/2`.
    pub fn slots(&self) -> usize {
        self.n() / 2
    }
    /// Data primes `q_0 .. q_L`.
    pub fn q(&self) -> &[u32] {
        &self.q
    }
    /// Special (key-switching) primes.
    pub fn p(&self) -> &[u32] {
        &self.p
    }
    /// Top level `L` (= multiplicative depth: one rescale per level).
    pub fn max_level(&self) -> usize {
        self.q.len() - 1
    }
    /// Data primes per key-switching digit (`|P|`).
    pub fn digit_size(&self) -> usize {
        self.p.len()
    }
    /// Number of key-switching digits at the top level.
    pub fn dnum(&self) -> usize {
        self.q.len().div_ceil(self.p.len())
    }
    /// `log2` of the default scale.
    pub fn log_scale(&self) -> u32 {
        self.log_scale
    }
    /// The default scale `2^log_scale`.
    pub fn default_scale(&self) -> f64 {
        (self.log_scale as f64).exp2()
    }
    /// `log2(Q * P)`.
    pub fn log_qp(&self) -> f64 {
        self.q
            .iter()
            .chain(&self.p)
            .map(|&x| (x as f64).log2())
            .sum()
    }
    /// Bit sizes of all primes, data then special.
    pub fn prime_bits(&self) -> Vec<u32> {
        self.q
            .iter()
            .chain(&self.p)
            .map(|&x| 32 - x.leading_zeros())
            .collect()
    }
    /// True when the set does not meet 128-bit security (it was accepted with `--insecure`).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }
    /// Estimated security in bits: 128 when the table is met, 0 (unknown, below 128) otherwise.
    pub fn security_bits(&self) -> u32 {
        if self.insecure {
            0
        } else {
            128
        }
    }

    /// A 64-bit fingerprint of everything that makes keys and ciphertexts compatible
    /// (N, all primes, in order). Stored in every file header.
    pub fn fingerprint(&self) -> u64 {
        // FNV-1a: stable across platforms and versions (not a security primitive).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u32| {
            for b in v.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(self.log_n);
        eat(self.q.len() as u32);
        self.q.iter().for_each(|&x| eat(x));
        eat(self.p.len() as u32);
        self.p.iter().for_each(|&x| eat(x));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_presets_meet_the_table_and_depths() {
        for (name, depth) in [("n8192", 5), ("n16384", 11), ("n32768", 20)] {
            let p = Preset::by_name(name).unwrap().parameters(false).unwrap();
            assert!(!p.is_insecure());
            assert!(p.log_qp() <= max_log_qp_128(p.log_n()).unwrap() as f64);
            assert!(p.max_level() >= depth, "{name}");
        }
        let p = Preset::by_name("n8192").unwrap().parameters(false).unwrap();
        assert_eq!(p.prime_bits(), vec![30, 26, 26, 26, 26, 26, 26, 30]);
    }

    #[test]
    fn insecure_presets_need_opt_in() {
        let toy = Preset::by_name("toy1024").unwrap();
        assert!(matches!(
            toy.parameters(false),
            Err(CkksError::Insecure { n: 1024, .. })
        ));
        assert!(toy.parameters(true).unwrap().is_insecure());
    }

    #[test]
    fn custom_parameters_are_checked() {
        let n8192 = Preset::by_name("n8192").unwrap().parameters(false).unwrap();
        let q = n8192.q().to_vec();
        let p = n8192.p().to_vec();
        // not prime
        let mut bad = q.clone();
        bad[1] += 2;
        assert!(Parameters::new("x", 13, bad, p.clone(), 26, false).is_err());
        // duplicate
        let mut dup = q.clone();
        dup[2] = dup[1];
        assert!(matches!(
            Parameters::new("x", 13, dup, p.clone(), 26, false),
            Err(CkksError::InvalidParameters { .. })
        ));
        // not NTT-friendly for a larger N
        assert!(Parameters::new("x", 15, q.clone(), p.clone(), 26, true).is_err());
        // too large a modulus for N at 128 bits
        let mut big = q.clone();
        big.extend(ntt_primes(29, 8192, 2, &[]).unwrap());
        assert!(matches!(
            Parameters::new("x", 13, big, p.clone(), 26, false),
            Err(CkksError::Insecure {
                max_log_qp: 218,
                ..
            })
        ));
        assert_ne!(
            Parameters::new("x", 13, q[..3].to_vec(), p, 26, false)
                .unwrap()
                .fingerprint(),
            n8192.fingerprint()
        );
    }
}
