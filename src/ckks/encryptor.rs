//! Encryption (public key, SEAL-style through the special primes; or secret key) and decryption.

use std::sync::Arc;

use cryptodl_kernels::elementwise;

use super::poly::forward_limbs;
use super::sampling::{small_to_rns, small_to_rns_into, Sampler};
use super::{Ciphertext, CkksError, Context, Plaintext, PublicKey, SecretKey};
use crate::backend::cpu::with_scratch;

/// Encrypts plaintexts under a public key (what a client holding no secret can do) or a secret
/// key.
pub struct Encryptor {
    ctx: Arc<Context>,
    sampler: Sampler,
}

impl Encryptor {
    /// An encryptor with OS-seeded randomness.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            sampler: Sampler::from_os(),
        }
    }

    /// An encryptor with a given sampler (tests and reproducible benchmarks only).
    pub fn with_sampler(ctx: Arc<Context>, sampler: Sampler) -> Self {
        Self { ctx, sampler }
    }

    fn check_pt(&self, pt: &Plaintext) -> Result<(), CkksError> {
        pt.check(&self.ctx)
    }

    /// Public-key encryption at the plaintext's level: `(u pk_0 + e_0, u pk_1 + e_1)` over
    /// `Q_l ++ P`, divided by `P` and rounded (which shrinks the fresh noise), plus the message.
    pub fn encrypt(&mut self, pt: &Plaintext, pk: &PublicKey) -> Result<Ciphertext, CkksError> {
        self.check_pt(pt)?;
        let ctx = self.ctx.clone();
        let n = ctx.n();
        let params = ctx.params();
        let (l, top) = (pt.level, params.max_level());
        let full_limbs = top + 1 + params.p().len();
        if pk.data.len() != 2 * full_limbs * n {
            return Err(CkksError::ShapeMismatch {
                what: "public key",
                expected: 2 * full_limbs * n,
                found: pk.data.len(),
            });
        }
        let moduli = ctx.qp_moduli(l);
        let tables = ctx.qp_tables(l);
        let (q_l, p) = (ctx.q_indices(l), ctx.p_indices());
        let mod_down = ctx.rns().divide_round(&q_l, &p)?;
        let (keep_tables, drop_tables) = (ctx.rns().tables_of(&q_l), ctx.rns().tables_of(&p));
        // limbs of Q_l ++ P inside the full key layout
        let limb_ids: Vec<usize> = (0..=l).chain(top + 1..full_limbs).collect();
        let active = limb_ids.len() * n;
        let mut data = vec![0u32; 2 * (l + 1) * n];
        // u, e and the mod-down's scratch in per-thread buffers: a batch of encryptions reuses
        // the same memory instead of faulting in fresh pages for every ciphertext.
        with_scratch(2 * active + mod_down.scratch_len(n), |buf| {
            let (u, rest) = buf.split_at_mut(active);
            let (e, scratch) = rest.split_at_mut(active);
            small_to_rns_into(u, &self.sampler.ternary(n), &moduli);
            forward_limbs(u, &tables, n);
            for (c, out) in data.chunks_exact_mut((l + 1) * n).enumerate() {
                small_to_rns_into(e, &self.sampler.gaussian(n), &moduli);
                forward_limbs(e, &tables, n);
                // e += u * pk_c on the limbs of Q_l ++ P (a slice of the full key, limb by limb).
                for (k, &i) in limb_ids.iter().enumerate() {
                    let key = &pk.data[(c * full_limbs + i) * n..(c * full_limbs + i + 1) * n];
                    let r = k * n..(k + 1) * n;
                    elementwise::mul_acc(&mut e[r.clone()], &u[r], key, n, &moduli[k..k + 1]);
                }
                let (keep, drop) = e.split_at_mut((l + 1) * n);
                mod_down.apply(keep, drop, &keep_tables, &drop_tables, n, scratch);
                out.copy_from_slice(keep);
            }
        });
        elementwise::add(&mut data[..(l + 1) * n], &pt.data, n, &ctx.q_moduli()[..=l]);
        Ok(Ciphertext {
            data,
            size: 2,
            level: l,
            scale: pt.scale,
        })
    }

    /// Secret-key encryption: `(-a s + e + m, a)` with `a` uniform.
    pub fn encrypt_symmetric(
        &mut self,
        pt: &Plaintext,
        sk: &SecretKey,
    ) -> Result<Ciphertext, CkksError> {
        self.check_pt(pt)?;
        let ctx = self.ctx.clone();
        let n = ctx.n();
        let l = pt.level;
        let moduli = &ctx.q_moduli()[..=l];
        let a = self.sampler.uniform(moduli, n);
        let mut c0 = small_to_rns(&self.sampler.gaussian(n), moduli);
        forward_limbs(&mut c0, &ctx.q_tables()[..=l].iter().collect::<Vec<_>>(), n);
        let mut as_ = a.clone();
        elementwise::mul(&mut as_, sk.q_part(n, l + 1), n, moduli);
        elementwise::sub(&mut c0, &as_, n, moduli);
        zeroize::Zeroize::zeroize(&mut as_); // a*s with public a would reveal s
        elementwise::add(&mut c0, &pt.data, n, moduli);
        c0.extend_from_slice(&a);
        Ok(Ciphertext {
            data: c0,
            size: 2,
            level: l,
            scale: pt.scale,
        })
    }
}

/// Decrypts with the secret key (client side only).
pub struct Decryptor {
    ctx: Arc<Context>,
}

impl Decryptor {
    /// A decryptor for the context.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    /// `m = c_0 + c_1 s (+ c_2 s^2)`, as a plaintext at the ciphertext's level and scale.
    pub fn decrypt(&self, ct: &Ciphertext, sk: &SecretKey) -> Result<Plaintext, CkksError> {
        let n = self.ctx.n();
        let l = ct.level;
        let len = (l + 1) * n;
        if l > self.ctx.params().max_level() || ct.data.len() != ct.size * len || ct.size < 2 {
            return Err(CkksError::ShapeMismatch {
                what: "ciphertext",
                expected: ct.size.max(2) * len,
                found: ct.data.len(),
            });
        }
        let moduli = &self.ctx.q_moduli()[..=l];
        let s = sk.q_part(n, l + 1);
        // Horner: ((c_k s + c_{k-1}) s + ...) + c_0
        let mut acc = ct.component(ct.size - 1).to_vec();
        for c in (0..ct.size - 1).rev() {
            elementwise::mul(&mut acc, s, n, moduli);
            elementwise::add(&mut acc, ct.component(c), n, moduli);
        }
        Ok(Plaintext {
            data: acc,
            level: l,
            scale: ct.scale,
        })
    }
}
