//! Keys: secret (zeroized on drop), public, and switching keys (relinearization, Galois) generated
//! for requested rotations only.

use std::collections::BTreeMap;
use std::sync::Arc;

use cryptodl_kernels::automorphism::automorphism_coeff;
use cryptodl_kernels::elementwise;
use cryptodl_kernels::ntt::NttTable;
use zeroize::Zeroize;

use super::sampling::{small_to_rns, Sampler};
use super::{CkksError, Context, Parameters};

/// The identity of a key set: the first 16 bytes of SHA-256 over a domain tag and the secret
/// key's coefficients. Every key file of one `keygen` and every ciphertext file encrypted or
/// evaluated with those keys carries it, so files of different key sets are told apart; and
/// since it is derived from the secret, a secret key whose coefficients do not hash to it (a
/// forged or damaged key) is refused. It reveals nothing usable about the secret (a preimage of
/// a 128-bit hash of ~1.6 N bits of entropy).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct KeySetId(pub [u8; 16]);

impl KeySetId {
    /// No key set (unlabelled objects, e.g. in tests).
    pub const NONE: KeySetId = KeySetId([0; 16]);

    /// The identity of the key set of the secret `coeffs`.
    pub(crate) fn of_secret(coeffs: &[i8]) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"cryptodl key set v1\0");
        h.update(bytemuck::cast_slice::<i8, u8>(coeffs));
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeySetId(id)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(KeySetId(id))
    }
}

impl std::fmt::Display for KeySetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeySetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySetId({self})")
    }
}

/// The secret key: a ternary polynomial. Never part of evaluation keys; its memory is zeroized
/// on drop.
pub struct SecretKey {
    /// Coefficients in `{-1, 0, 1}`.
    coeffs: Vec<i8>,
    /// `s` over all of `Q ++ P`, NTT form, `[limb][coeff]`.
    ntt: Vec<u32>,
    /// The key set's identity (a hash of the coefficients).
    id: KeySetId,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.coeffs.zeroize();
        self.ntt.zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// Rebuilds the key from its ternary coefficients (used when loading a key file).
    pub(crate) fn from_coeffs(ctx: &Context, coeffs: Vec<i8>) -> Self {
        let moduli: Vec<_> = ctx.qp_moduli(ctx.params().max_level());
        let mut ntt = small_to_rns(&coeffs, &moduli);
        forward_all(&mut ntt, &ctx.qp_tables(ctx.params().max_level()), ctx.n());
        let id = KeySetId::of_secret(&coeffs);
        Self { coeffs, ntt, id }
    }

    /// The identity of this key's set.
    pub fn key_set(&self) -> KeySetId {
        self.id
    }

    /// `s` over the first `limbs` data primes (NTT form).
    pub(crate) fn q_part(&self, n: usize, limbs: usize) -> &[u32] {
        &self.ntt[..limbs * n]
    }

    /// `s` over all of `Q ++ P` (NTT form).
    pub(crate) fn qp(&self) -> &[u32] {
        &self.ntt
    }

    /// The ternary coefficients.
    pub(crate) fn coeffs(&self) -> &[i8] {
        &self.coeffs
    }
}

/// The public encryption key `(-a s + e, a)` over `Q ++ P`, NTT form, `[2][limb][coeff]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    pub(crate) data: Vec<u32>,
    /// The key set it belongs to.
    pub key_set: KeySetId,
}

/// A key-switching key from `s'` to `s`: for each digit `j`, `(b_j, a_j)` with
/// `b_j = -a_j s + e_j + P [i in digit j] s'` over `Q ++ P`, NTT form, `[dnum][2][limb][coeff]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchingKey {
    pub(crate) data: Vec<u32>,
}

/// The two keys of sparse-secret encapsulation (Bossuat, Troncoso-Pastoriza, Hubaux, 2022):
/// bootstrapping switches a level-`base` ciphertext from the dense secret `s` to an ephemeral
/// sparse secret `s'` (Hamming weight `h`) before ModRaise, so the integer part ModRaise adds
/// stays small, and back to `s` right after it. `s'` exists only inside keygen.
#[derive(Clone, Debug, PartialEq)]
pub struct EncapsulationKeys {
    /// `s -> s'`: one digit `(b, a)`, `b = -a s' + e + P' s`, under the sparse secret over the
    /// small modulus `Q_0 P' = q_0 ... q_base p_0 ... p_(special-1)` only (where a sparse secret
    /// is safe), NTT form, `[2][limb][coeff]`.
    pub to_sparse: SwitchingKey,
    /// The level `to_sparse` is for (`Q_0 = q_0 ... q_base`).
    pub base: usize,
    /// How many special primes `to_sparse` uses (`P'`, the first ones).
    pub special: usize,
    /// `s' -> s`: a switching key under the dense secret over all of `Q ++ P`.
    pub from_sparse: SwitchingKey,
}

/// Everything the server needs to evaluate (no secret): relinearization key and the Galois
/// keys of the rotations it was given, keyed by Galois element, and the encapsulation keys when
/// it bootstraps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvaluationKeys {
    /// Relinearization key (`s^2 -> s`).
    pub relin: Option<SwitchingKey>,
    /// Galois keys (`s(X^g) -> s`) by Galois element `g`.
    pub galois: BTreeMap<usize, SwitchingKey>,
    /// Sparse-secret encapsulation keys (bootstrapping only).
    pub encapsulation: Option<EncapsulationKeys>,
    /// The key set they belong to.
    pub key_set: KeySetId,
}

/// log2 of the largest coefficient of `b + a s` a genuine key may show: its error is at most
/// [`super::sampling::ERROR_BOUND`] (19); keys of another secret show residues spread over the
/// whole prime (about 2^29).
const KEY_NOISE_LIMIT_BITS: u32 = 10;

/// The largest centred coefficient of `b + a s - t` on QP limb `i` (all in NTT form, one limb
/// each; `t` absent for zero): the noise of an RLWE sample `(b, a)` of `t` under `s`.
fn limb_noise(ctx: &Context, i: usize, b: &[u32], a: &[u32], s: &[u32], t: Option<&[u32]>) -> u32 {
    let top = ctx.params().max_level();
    let m = ctx.qp_moduli(top)[i];
    let mut r: Vec<u32> = b
        .iter()
        .zip(a)
        .zip(s)
        .map(|((&b, &a), &s)| m.add(b, m.mul(a, s)))
        .collect();
    if let Some(t) = t {
        for (r, &t) in r.iter_mut().zip(t) {
            *r = m.sub(*r, t);
        }
    }
    ctx.qp_tables(top)[i].inverse(&mut r);
    let q = m.value();
    r.iter().map(|&x| x.min(q - x)).max().unwrap_or(0)
}

fn check_noise(what: impl FnOnce() -> String, noise: u32) -> Result<(), CkksError> {
    if noise < 1 << KEY_NOISE_LIMIT_BITS {
        return Ok(());
    }
    Err(CkksError::ForeignKey {
        what: what(),
        noise_bits: 32 - noise.leading_zeros(),
        limit_bits: KEY_NOISE_LIMIT_BITS,
    })
}

impl PublicKey {
    /// Checks that this public key was made from `sk` (the client can tell; the key-set id in
    /// its file can be relabelled): `b + a s` must be a fresh sample's small error on the first
    /// data prime and the last special prime; under another secret it is uniform.
    pub fn check_against(&self, ctx: &Context, sk: &SecretKey) -> Result<(), CkksError> {
        let n = ctx.n();
        let limbs = ctx.qp_moduli(ctx.params().max_level()).len();
        if self.data.len() != 2 * limbs * n {
            return Err(CkksError::ShapeMismatch {
                what: "public key",
                expected: 2 * limbs * n,
                found: self.data.len(),
            });
        }
        let (b, a) = self.data.split_at(limbs * n);
        for i in [0, limbs - 1] {
            let limb = |v: &[u32]| v[i * n..(i + 1) * n].to_vec();
            let noise = limb_noise(ctx, i, &limb(b), &limb(a), &limb(sk.qp()), None);
            check_noise(|| "the public key".to_string(), noise)?;
        }
        Ok(())
    }
}

impl EvaluationKeys {
    /// Checks that every switching key was made from `sk`: for each digit `j`, on its first
    /// data prime `i`, `b_j + a_j s - P s'` is a fresh sample's small error (`s' = s^2` for the
    /// relinearization key, `s(X^g)` for the Galois key of `g`). Keys of another secret, or of
    /// another automorphism, leave residues spread over the whole prime.
    pub fn check_against(&self, ctx: &Context, sk: &SecretKey) -> Result<(), CkksError> {
        let params = ctx.params();
        let n = ctx.n();
        let top = params.max_level();
        let moduli = ctx.qp_moduli(top);
        let limbs = moduli.len();
        let alpha = params.digit_size();
        let dnum = params.dnum();
        let s = sk.qp();
        let p_mod = |i: usize| {
            let m = &moduli[i];
            params
                .p()
                .iter()
                .fold(1u32, |acc, &p| m.mul(acc, p % m.value()))
        };
        let check = |key: &SwitchingKey,
                     s_prime: &dyn Fn(usize) -> Vec<u32>,
                     what: &dyn Fn() -> String|
         -> Result<(), CkksError> {
            if key.data.len() != dnum * 2 * limbs * n {
                return Err(CkksError::ShapeMismatch {
                    what: "switching key",
                    expected: dnum * 2 * limbs * n,
                    found: key.data.len(),
                });
            }
            for j in 0..dnum {
                let i = j * alpha;
                let digit = &key.data[j * 2 * limbs * n..(j + 1) * 2 * limbs * n];
                let b = &digit[i * n..(i + 1) * n];
                let a = &digit[(limbs + i) * n..(limbs + i + 1) * n];
                let m = &moduli[i];
                let pm = p_mod(i);
                let mut t = s_prime(i);
                for x in &mut t {
                    *x = m.mul(*x, pm);
                }
                let noise = limb_noise(ctx, i, b, a, &s[i * n..(i + 1) * n], Some(&t));
                t.zeroize();
                check_noise(what, noise)?;
            }
            Ok(())
        };
        if let Some(relin) = &self.relin {
            let square = |i: usize| {
                let m = &moduli[i];
                s[i * n..(i + 1) * n].iter().map(|&x| m.mul(x, x)).collect()
            };
            check(relin, &square, &|| "the relinearization key".to_string())?;
        }
        for (&g, key) in &self.galois {
            let rotated = |i: usize| {
                let m = [moduli[i]];
                let mut coeffs = super::sampling::small_to_rns(sk.coeffs(), &m);
                let mut out = vec![0u32; n];
                automorphism_coeff(&coeffs, &mut out, g, n, &m);
                coeffs.zeroize();
                ctx.qp_tables(top)[i].forward(&mut out);
                out
            };
            check(key, &rotated, &|| format!("the Galois key of element {g}"))?;
        }
        Ok(())
    }
}

/// The special primes the encapsulation key `s -> s'` uses for inputs at level `base`: the
/// fewest first ones whose product is within a factor 2 of `Q_0 = q_0 ... q_base` or above it
/// (the switch's noise then stays near `sqrt(N)` units; all of them if none are). The smaller
/// `Q_0 P'`, the safer the sparse secret: at n65536 it is 120 bits.
pub fn encapsulation_special(params: &Parameters, base: usize) -> usize {
    let q0: f64 = params.q()[..=base].iter().map(|&q| (q as f64).log2()).sum();
    let mut bits = 0.0;
    for (i, &p) in params.p().iter().enumerate() {
        bits += (p as f64).log2();
        if bits >= q0 - 1.0 {
            return i + 1;
        }
    }
    params.p().len()
}

fn forward_all(data: &mut [u32], tables: &[&NttTable], n: usize) {
    for (i, limb) in data.chunks_exact_mut(n).enumerate() {
        tables[i % tables.len()].forward(limb);
    }
}

/// Generates keys from one CSPRNG.
pub struct KeyGenerator {
    ctx: Arc<Context>,
    sampler: Sampler,
}

impl KeyGenerator {
    /// A key generator seeded from the OS.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            sampler: Sampler::from_os(),
        }
    }

    /// A key generator with a given sampler (tests and reproducible benchmarks only).
    pub fn with_sampler(ctx: Arc<Context>, sampler: Sampler) -> Self {
        Self { ctx, sampler }
    }

    /// A fresh ternary secret key.
    pub fn secret_key(&mut self) -> SecretKey {
        let coeffs = self.sampler.ternary(self.ctx.n());
        SecretKey::from_coeffs(&self.ctx, coeffs)
    }

    /// `(-a s + e, a)` over all of `Q ++ P` in NTT form: returns `(b, a)` concatenated.
    fn rlwe_zero(&mut self, sk: &SecretKey) -> Vec<u32> {
        let ctx = &self.ctx;
        let n = ctx.n();
        let top = ctx.params().max_level();
        let moduli = ctx.qp_moduli(top);
        let tables = ctx.qp_tables(top);
        let a = self.sampler.uniform(&moduli, n); // uniform in NTT form
        let e_coeffs = self.sampler.gaussian(n);
        let mut b = small_to_rns(&e_coeffs, &moduli);
        forward_all(&mut b, &tables, n);
        let mut as_ = a.clone();
        elementwise::mul(&mut as_, sk.qp(), n, &moduli);
        elementwise::sub(&mut b, &as_, n, &moduli);
        as_.zeroize(); // a*s with public a would reveal s
        b.extend_from_slice(&a);
        b
    }

    /// The public key.
    pub fn public_key(&mut self, sk: &SecretKey) -> PublicKey {
        PublicKey {
            data: self.rlwe_zero(sk),
            key_set: sk.key_set(),
        }
    }

    /// A switching key from `s_prime` (over `Q ++ P`, NTT form) to `sk`.
    fn switching_key(&mut self, sk: &SecretKey, s_prime: &[u32]) -> SwitchingKey {
        let ctx = self.ctx.clone();
        let n = ctx.n();
        let params = ctx.params();
        let l_count = params.q().len();
        let limbs = l_count + params.p().len();
        let alpha = params.digit_size();
        let moduli = ctx.qp_moduli(params.max_level());
        let mut data = Vec::with_capacity(params.dnum() * 2 * limbs * n);
        for j in 0..params.dnum() {
            let mut ba = self.rlwe_zero(sk);
            for i in (j * alpha)..((j + 1) * alpha).min(l_count) {
                // b_i += (P mod q_i) * s'_i
                let m = &moduli[i];
                let p_mod = params
                    .p()
                    .iter()
                    .fold(1u32, |acc, &p| m.mul(acc, p % m.value()));
                let ps = m.shoup(p_mod);
                for (b, &s) in ba[i * n..(i + 1) * n]
                    .iter_mut()
                    .zip(&s_prime[i * n..(i + 1) * n])
                {
                    let t = cryptodl_kernels::modarith::mul_shoup(s, p_mod, ps, m.value());
                    *b = m.add(*b, t);
                }
            }
            data.extend_from_slice(&ba);
        }
        SwitchingKey { data }
    }

    /// The relinearization key (`s^2 -> s`).
    pub fn relin_key(&mut self, sk: &SecretKey) -> SwitchingKey {
        let ctx = self.ctx.clone();
        let moduli = ctx.qp_moduli(ctx.params().max_level());
        let mut s2 = sk.qp().to_vec();
        elementwise::mul(&mut s2, sk.qp(), ctx.n(), &moduli);
        let k = self.switching_key(sk, &s2);
        s2.zeroize();
        k
    }

    /// The Galois key of the automorphism `X -> X^g` (`s(X^g) -> s`).
    pub fn galois_key(&mut self, sk: &SecretKey, g: usize) -> SwitchingKey {
        let ctx = self.ctx.clone();
        let n = ctx.n();
        let top = ctx.params().max_level();
        let moduli = ctx.qp_moduli(top);
        let mut s = small_to_rns(sk.coeffs(), &moduli);
        let mut sg = vec![0u32; s.len()];
        automorphism_coeff(&s, &mut sg, g, n, &moduli);
        forward_all(&mut sg, &ctx.qp_tables(top), n);
        s.zeroize();
        let k = self.switching_key(sk, &sg);
        sg.zeroize();
        k
    }

    /// The encapsulation keys of bootstrapping for inputs at level `base`: a fresh sparse
    /// secret `s'` of Hamming weight `h` (drawn here, wiped on return), the key `s -> s'` on the
    /// small modulus `Q_0 P'` only (`P'`: the fewest first special primes with `P' >= Q_0 / 2`), and
    /// `s' -> s` over all of `Q ++ P`.
    pub fn encapsulation_keys(
        &mut self,
        sk: &SecretKey,
        h: usize,
        base: usize,
    ) -> Result<EncapsulationKeys, CkksError> {
        let ctx = self.ctx.clone();
        let params = ctx.params();
        let n = ctx.n();
        if h == 0 || h > n {
            return Err(CkksError::InvalidParameters {
                reason: format!("sparse-secret weight {h} must be in 1..={n}"),
            });
        }
        if base >= params.max_level() {
            return Err(CkksError::LevelOutOfRange {
                level: base,
                max: params.max_level().saturating_sub(1),
            });
        }
        let special = encapsulation_special(params, base);
        let mut coeffs = self.sampler.sparse_ternary(n, h);
        let sparse = SecretKey::from_coeffs(&ctx, coeffs.clone());
        coeffs.zeroize();
        // s -> s' over Q_0 P'.
        let top = params.max_level();
        let q_len = params.q().len();
        let idx: Vec<usize> = (0..=base).chain(q_len..q_len + special).collect();
        let all_moduli = ctx.qp_moduli(top);
        let all_tables = ctx.qp_tables(top);
        let moduli: Vec<_> = idx.iter().map(|&i| all_moduli[i]).collect();
        let tables: Vec<_> = idx.iter().map(|&i| all_tables[i]).collect();
        let gather = |s: &[u32]| -> Vec<u32> {
            idx.iter()
                .flat_map(|&i| s[i * n..(i + 1) * n].iter().copied())
                .collect()
        };
        let a = self.sampler.uniform(&moduli, n);
        let mut b = small_to_rns(&self.sampler.gaussian(n), &moduli);
        forward_all(&mut b, &tables, n);
        let mut as_ = gather(sparse.qp());
        elementwise::mul(&mut as_, &a, n, &moduli);
        elementwise::sub(&mut b, &as_, n, &moduli);
        as_.zeroize();
        for l in 0..=base {
            // b += (P' mod q_l) s on the data limbs.
            let m = &moduli[l];
            let p_mod = params.p()[..special]
                .iter()
                .fold(1u32, |acc, &p| m.mul(acc, p % m.value()));
            for (b, &s) in b[l * n..(l + 1) * n]
                .iter_mut()
                .zip(&sk.qp()[l * n..(l + 1) * n])
            {
                *b = m.add(*b, m.mul(s, p_mod));
            }
        }
        b.extend_from_slice(&a);
        let from_sparse = self.switching_key(sk, sparse.qp());
        Ok(EncapsulationKeys {
            to_sparse: SwitchingKey { data: b },
            base,
            special,
            from_sparse,
        })
    }

    /// Evaluation keys: relinearization, plus Galois keys for the given rotation steps (and
    /// conjugation if asked). Only the requested rotations get keys.
    pub fn evaluation_keys(
        &mut self,
        sk: &SecretKey,
        rotations: &[i64],
        conjugation: bool,
    ) -> Result<EvaluationKeys, CkksError> {
        let mut keys = EvaluationKeys {
            relin: Some(self.relin_key(sk)),
            galois: BTreeMap::new(),
            encapsulation: None,
            key_set: sk.key_set(),
        };
        let slots = self.ctx.params().slots() as i64;
        for &r in rotations {
            if r.rem_euclid(slots) == 0 {
                return Err(CkksError::InvalidRotation {
                    step: r,
                    slots: slots as usize,
                });
            }
            let g = self.ctx.galois_element(r);
            if let std::collections::btree_map::Entry::Vacant(slot) = keys.galois.entry(g) {
                slot.insert(self.galois_key(sk, g));
            }
        }
        if conjugation {
            let g = self.ctx.conjugation_element();
            let k = self.galois_key(sk, g);
            keys.galois.insert(g, k);
        }
        Ok(keys)
    }
}
