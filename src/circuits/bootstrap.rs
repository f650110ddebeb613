//! CKKS bootstrapping on [`DeviceEvaluator`]: sparse-secret encapsulation, ModRaise,
//! CoeffsToSlots, EvalMod and SlotsToCoeffs, so a ciphertext out of levels comes back with
//! levels to spend, on any backend, with the same words on each.
//!
//! The circuit (full packing, `N/2` complex slots; `Q_0 = q_0 ... q_base`):
//!
//! 1. the input is brought to level `base` at scale `Q_0 / 2^log_message_ratio` (ScaleDown:
//!    an integer constant and one rescale), switched to the ephemeral sparse secret `s'`
//!    ([`DeviceEvaluator::encapsulate`]), raised to the top level
//!    ([`DeviceEvaluator::mod_raise`]: it now decrypts to `t = m + Q_0 I`, `|I|` small because
//!    `s'` is sparse) and switched back to `s`;
//! 2. CoeffsToSlots ([`HomomorphicDft`]) puts `t / (K Q_0)` in the slots (bit-reversed order)
//!    at the scale of EvalMod's first level (the matrices carry the change of scale), and
//!    a conjugation splits the real and imaginary halves of the coefficient vector into two
//!    ciphertexts;
//! 3. EvalMod ([`EvalMod`]) on both at once gives `sin(2 pi t / Q_0) ~ 2 pi m / Q_0`;
//! 4. the halves are joined (`re + i im`, a product by the monomial `X^(N/2)`, exact and free of
//!    levels) and SlotsToCoeffs brings the slots back. The factor `Q_0 / (2 pi)` and the
//!    message's scale are folded into EvalMod's output scale, so the result has the input's
//!    scale (or the one asked for).
//!
//! Sparse packing (`n < N/2` slots, repeated over the ring's): after ModRaise a sum over the
//! `N / 2n` copies (`log2` of it rotations) keeps the coefficients of `X^(N / 2n)`; the DFTs
//! are those of `n` slots, tiled ([`HomomorphicDft::sparse`]), and the two halves travel in one
//! ciphertext of period `2n` (`re + rot_n(im)`), so one EvalMod serves both.
//!
//! Every step of CoeffsToSlots, EvalMod and SlotsToCoeffs divides by `primes_per_level` primes
//! (double-prime scaling with 2), so the circuit keeps a scale near the product of two primes
//! though every prime is below 2^30.

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use num_complex::Complex64;

use crate::backend::Backend;
use crate::ckks::{
    Context, DeviceEvaluator, DeviceKeys, DevicePlaintext, Encoder, EvaluationKeys, KeyGenerator,
    KeyLevels, Parameters, SecretKey,
};

use super::linear_transform::EncodedTransform;
use super::polynomial::Ct;
use super::{CircuitError, EvalMod, HomomorphicDft, PolynomialEvaluator};

/// The shape of a bootstrapping circuit: where it starts, how its levels are spent.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// The level inputs are dropped to before ModRaise: `Q_0 = q_0 ... q_base`. The message's
    /// scale should be about `Q_0 / 2^10` (the smaller, the closer `sin` is to its argument).
    pub base_level: usize,
    /// Levels (matrices) of CoeffsToSlots.
    pub coeffs_to_slots_levels: usize,
    /// Levels (matrices) of SlotsToCoeffs.
    pub slots_to_coeffs_levels: usize,
    /// Primes divided out per level of the circuit (2: double-prime scaling).
    pub primes_per_level: usize,
    /// EvalMod's range: one more than the largest integer part ModRaise may add.
    pub k: f64,
    /// Degree of EvalMod's cosine interpolant.
    pub degree: usize,
    /// EvalMod's double angles.
    pub double_angles: usize,
    /// Hamming weight of the ephemeral sparse secret.
    pub hamming_weight: usize,
    /// `log2(Q_0 / scale)` at ModRaise: inputs are brought to the scale `Q_0 / 2^ratio` first
    /// (ScaleDown, one prime of the input's levels). Larger makes `sin` closer to its argument
    /// (error about `(2 pi / 2^ratio)^2 / 6` relative) but amplifies EvalMod's own error.
    pub log_message_ratio: u32,
    /// Slots of the messages (a power of two): `None` or `N/2` for full packing; fewer for
    /// sparse packing, where the `n` values repeat over the slots (a plaintext in
    /// `X^(N / 2n)`), the DFTs are those of `n` slots and one EvalMod does for both halves.
    pub slots: Option<usize>,
}

impl Default for BootstrapConfig {
    /// `Q_0 = q_0`, CoeffsToSlots in 4 levels, SlotsToCoeffs in 3, double-prime scaling,
    /// EvalMod with `K = 12`, degree 30, 3 double angles (8 levels, its interval map folded into
    /// CoeffsToSlots) over a weight-32 secret, and a message ratio of 2^10.
    fn default() -> Self {
        Self {
            base_level: 0,
            coeffs_to_slots_levels: 4,
            slots_to_coeffs_levels: 3,
            primes_per_level: 2,
            k: 12.0,
            degree: 30,
            double_angles: 3,
            hamming_weight: 32,
            log_message_ratio: 10,
            slots: None,
        }
    }
}

/// Where a bootstrapping circuit's levels go, for one parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootstrapCost {
    /// Primes consumed by CoeffsToSlots, EvalMod and SlotsToCoeffs (from the top level).
    pub primes: usize,
    /// EvalMod's levels (of `primes_per_level` primes each).
    pub eval_mod_levels: usize,
    /// The level of the bootstrapped ciphertext: what is left to the network.
    pub output_level: usize,
    /// Rotations (left steps) the evaluation keys need, conjugation aside.
    pub rotations: Vec<i64>,
    /// EvalMod's relinearizations per ciphertext.
    pub relinearizations: usize,
}

impl BootstrapConfig {
    /// The circuit for a bootstrappable preset (`n65536`, `toyboot1024`), or `None`.
    pub fn for_preset(name: &str) -> Option<Self> {
        match name {
            "n65536" => Some(Self {
                base_level: 1,
                ..Self::default()
            }),
            "toyboot1024" => Some(Self {
                base_level: 1,
                coeffs_to_slots_levels: 3,
                slots_to_coeffs_levels: 3,
                ..Self::default()
            }),
            _ => None,
        }
    }

    /// Primes left to the network after a bootstrap: those above the base level and below
    /// the circuit, less the one ScaleDown spends.
    pub fn primes_left(&self, params: &Parameters) -> Result<usize, CircuitError> {
        let cost = self.cost(params)?;
        Ok(cost.output_level.saturating_sub(self.base_level + 1))
    }

    /// This circuit for `slots` message slots (sparse packing below `N/2`): the DFTs of few
    /// slots have fewer butterfly stages than the preset's levels, so their levels are capped
    /// at `log2(slots)`.
    pub fn with_slots(self, slots: usize, params: &Parameters) -> Result<Self, CircuitError> {
        let stages = slots.trailing_zeros() as usize;
        let c = Self {
            slots: Some(slots),
            coeffs_to_slots_levels: self.coeffs_to_slots_levels.min(stages),
            slots_to_coeffs_levels: self.slots_to_coeffs_levels.min(stages),
            ..self
        };
        c.packing(params)?;
        Ok(c)
    }

    /// The message slots `n` and the number of copies `N / 2n` in the ciphertext's slots.
    pub fn packing(&self, params: &Parameters) -> Result<(usize, usize), CircuitError> {
        let full = params.slots();
        let n = self.slots.unwrap_or(full);
        if !n.is_power_of_two() || n < 2 || n > full {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!(
                    "bootstrapping {n} slots: want a power of two from 2 to {full} (N/2)"
                ),
            });
        }
        Ok((n, full / n))
    }

    /// The rotations of sparse packing's sum over the copies (`n 2^i` for `2^i` below the
    /// copies): it keeps the coefficients of `X^(N / 2n)` (times the copies) and zeroes the
    /// rest of what ModRaise adds.
    fn sub_sum_steps(&self, params: &Parameters) -> Result<Vec<i64>, CircuitError> {
        let (n, copies) = self.packing(params)?;
        Ok((0..copies.trailing_zeros())
            .map(|i| (n << i) as i64)
            .collect())
    }

    fn eval_mod(&self) -> Result<EvalMod, CircuitError> {
        EvalMod::new(self.k, self.degree, self.double_angles)?.prescaled()
    }

    /// The two DFTs. CoeffsToSlots carries the 1/2 of `re = w + conj(w)` and `ratio`: the
    /// scale change from `Q_0` (the raised ciphertext's) to EvalMod's input scale, and EvalMod's
    /// `1 / K` (and, sparse, `1 / copies` of the sum over the copies). SlotsToCoeffs carries
    /// `stc`: it runs at a scale `1 / stc` times the output's.
    fn dfts(
        &self,
        params: &Parameters,
        ratio: f64,
        stc: f64,
    ) -> Result<(HomomorphicDft, HomomorphicDft), CircuitError> {
        let (n, copies) = self.packing(params)?;
        let cts = HomomorphicDft::coeffs_to_slots(
            2 * n,
            self.coeffs_to_slots_levels,
            Complex64::new(0.5 * ratio / copies as f64, 0.0),
        )?;
        let stc = HomomorphicDft::slots_to_coeffs(
            2 * n,
            self.slots_to_coeffs_levels,
            Complex64::new(stc, 0.0),
        )?;
        if copies == 1 {
            return Ok((cts, stc));
        }
        Ok((cts.sparse(params.slots())?, stc.sparse(params.slots())?))
    }

    /// The circuit's cost on `params`, or why it does not fit.
    pub fn cost(&self, params: &Parameters) -> Result<BootstrapCost, CircuitError> {
        let em = self.eval_mod()?;
        let (cts, stc) = self.dfts(params, 1.0, 1.0)?;
        let p = self.primes_per_level;
        if p == 0 {
            return Err(CircuitError::InvalidPolynomial {
                reason: "a level must divide by at least one prime".into(),
            });
        }
        let eval_mod_levels = em.cost().levels;
        let levels = self.coeffs_to_slots_levels + eval_mod_levels + self.slots_to_coeffs_levels;
        let primes = levels * p;
        let top = params.max_level();
        if primes + self.base_level >= top {
            return Err(CircuitError::OutOfLevels {
                circuit: format!(
                    "bootstrapping ({} + {} + {} levels of {p} primes above base level {})",
                    self.coeffs_to_slots_levels,
                    eval_mod_levels,
                    self.slots_to_coeffs_levels,
                    self.base_level
                ),
                needed: primes + self.base_level + 1,
                level: top,
            });
        }
        let mut rotations = cts.rotations();
        rotations.extend(stc.rotations());
        rotations.extend(self.sub_sum_steps(params)?);
        rotations.sort_unstable();
        rotations.dedup();
        Ok(BootstrapCost {
            primes,
            eval_mod_levels,
            output_level: top - primes,
            rotations,
            relinearizations: em.cost().relinearizations,
        })
    }

    /// The highest level each of the circuit's keys is used at, so a server can upload only
    /// that part of each ([`DeviceEvaluator::upload_keys_trimmed`]): SlotsToCoeffs' rotations
    /// and EvalMod's relinearization run far below the top (at n65536 this saves about a fifth
    /// of the key memory). Keys the circuit does not use are left whole.
    pub fn key_levels(&self, ctx: &Context) -> Result<KeyLevels, CircuitError> {
        let params = ctx.params();
        let cost = self.cost(params)?;
        let (cts, stc) = self.dfts(params, 1.0, 1.0)?;
        let p = self.primes_per_level;
        let top = params.max_level();
        let after_cts = top - self.coeffs_to_slots_levels * p;
        let after_em = after_cts - cost.eval_mod_levels * p;
        let mut galois: BTreeMap<usize, usize> = BTreeMap::new();
        let mut note = |g: usize, level: usize| {
            let e = galois.entry(g).or_insert(level);
            *e = (*e).max(level);
        };
        for (i, m) in cts.matrices().iter().enumerate() {
            for r in m.rotations() {
                note(ctx.galois_element(r), top - i * p);
            }
        }
        for (i, m) in stc.matrices().iter().enumerate() {
            for r in m.rotations() {
                note(ctx.galois_element(r), after_em - i * p);
            }
        }
        note(ctx.conjugation_element(), after_cts);
        // Sparse: the sum over the copies at the top; its first step also joins the halves.
        for r in self.sub_sum_steps(params)? {
            note(ctx.galois_element(r), top);
        }
        Ok(KeyLevels {
            relin: Some(after_cts),
            galois,
        })
    }

    /// Evaluation keys for bootstrapping (and `extra_rotations` for the network): the
    /// relinearization key, the Galois keys of the DFTs' rotations and of conjugation, and the
    /// encapsulation keys.
    pub fn keys(
        &self,
        kg: &mut KeyGenerator,
        sk: &SecretKey,
        params: &Parameters,
        extra_rotations: &[i64],
    ) -> Result<EvaluationKeys, CircuitError> {
        let cost = self.cost(params)?;
        let mut rotations = cost.rotations;
        rotations.extend_from_slice(extra_rotations);
        rotations.sort_unstable();
        rotations.dedup();
        let mut keys = kg.evaluation_keys(sk, &rotations, true)?;
        keys.encapsulation =
            Some(kg.encapsulation_keys(sk, self.hamming_weight, self.base_level)?);
        Ok(keys)
    }
}

/// A bootstrapping circuit with its matrices encoded on a backend.
pub struct Bootstrapper<'a, B: Backend> {
    ev: &'a DeviceEvaluator<B>,
    keys: &'a DeviceKeys<B::Tensor>,
    config: BootstrapConfig,
    cost: BootstrapCost,
    eval_mod: EvalMod,
    coeffs_to_slots: Vec<EncodedTransform<B::Tensor>>,
    slots_to_coeffs: Vec<EncodedTransform<B::Tensor>>,
    /// `-i` after CoeffsToSlots and `+i` after EvalMod, at scale 1 (the monomial `X^(N/2)`).
    minus_i: DevicePlaintext<B::Tensor>,
    plus_i: DevicePlaintext<B::Tensor>,
    /// `Q_0` as f64.
    q0: f64,
    /// EvalMod's input scale (CoeffsToSlots' matrices carry `eval_scale / Q_0`).
    eval_scale: f64,
    /// The factor SlotsToCoeffs' matrices carry: they run at `out_scale / stc_factor`.
    stc_factor: f64,
}

impl<'a, B: Backend> Bootstrapper<'a, B> {
    /// Encodes the circuit's matrices for `ev`'s parameters; `keys` must hold the
    /// [`BootstrapConfig::keys`].
    pub fn new(
        ev: &'a DeviceEvaluator<B>,
        keys: &'a DeviceKeys<B::Tensor>,
        config: BootstrapConfig,
    ) -> Result<Self, CircuitError> {
        let ctx = ev.context().clone();
        let params = ctx.params();
        let cost = config.cost(params)?;
        if !keys.has_encapsulation() {
            return Err(crate::ckks::CkksError::MissingEncapsulationKeys.into());
        }
        let eval_mod = config.eval_mod()?;
        let p = config.primes_per_level;
        let top = params.max_level();
        let q0: f64 = params.q()[..=config.base_level]
            .iter()
            .map(|&q| q as f64)
            .product();
        // EvalMod's input scale: the modulus of its first level, which its products divide by
        // (a polynomial keeps its scale only near that).
        let after_cts = top - config.coeffs_to_slots_levels * p;
        let eval_scale: f64 = params.q()[after_cts + 1 - p..=after_cts]
            .iter()
            .map(|&q| q as f64)
            .product();
        // SlotsToCoeffs runs at the scale of the message at ModRaise (Q_0 / 2^ratio), well above
        // the noise its rotations add, and its matrices bring the preset's scale back.
        let stc_scale = q0 / 2f64.powi(config.log_message_ratio as i32);
        let stc_factor = params.default_scale() / stc_scale;
        let (cts, stc) = config.dfts(params, eval_scale / (q0 * config.k), stc_factor)?;
        let coeffs_to_slots = cts
            .matrices()
            .iter()
            .enumerate()
            .map(|(i, m)| m.encode(ev, top - i * p, p))
            .collect::<Result<Vec<_>, _>>()?;
        let after_em = after_cts - cost.eval_mod_levels * p;
        let slots_to_coeffs = stc
            .matrices()
            .iter()
            .enumerate()
            .map(|(i, m)| m.encode(ev, after_em - i * p, p))
            .collect::<Result<Vec<_>, _>>()?;
        let enc = Encoder::new(ctx.clone());
        let slots = params.slots();
        let unit = |sign: f64, level: usize| -> Result<DevicePlaintext<B::Tensor>, CircuitError> {
            let pt = enc.encode_complex(&vec![Complex64::new(0.0, sign); slots], level, 1.0)?;
            Ok(ev.upload_plaintext(&pt)?)
        };
        Ok(Self {
            ev,
            keys,
            minus_i: unit(-1.0, after_cts)?,
            plus_i: unit(1.0, after_em)?,
            config,
            cost,
            eval_mod,
            coeffs_to_slots,
            slots_to_coeffs,
            q0,
            eval_scale,
            stc_factor,
        })
    }

    /// The circuit's cost.
    pub fn cost(&self) -> &BootstrapCost {
        &self.cost
    }

    /// The configuration.
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// Bootstraps every ciphertext of `x` (at level `base_level` or above; slot values well
    /// inside `Q_0 / (2 pi scale)`): the same slots, at the input's scale, at
    /// [`BootstrapCost::output_level`].
    pub fn bootstrap(&self, x: &Ct<B>) -> Result<Ct<B>, CircuitError> {
        self.bootstrap_to(x, x.scale())
    }

    /// [`Self::bootstrap`] with the output at `out_scale`.
    pub fn bootstrap_to(&self, x: &Ct<B>, out_scale: f64) -> Result<Ct<B>, CircuitError> {
        self.bootstrap_staged(x, out_scale, &mut |_| Ok(()))
    }

    /// [`Self::bootstrap_to`], calling `stage` with the name of each step as it finishes
    /// (`scale_down + mod_raise`, `coeffs_to_slots`, `eval_mod`, `slots_to_coeffs`), e.g. to
    /// synchronize the backend and time it.
    pub fn bootstrap_staged(
        &self,
        x: &Ct<B>,
        out_scale: f64,
        stage: &mut dyn FnMut(&'static str) -> Result<(), CircuitError>,
    ) -> Result<Ct<B>, CircuitError> {
        if x.count() > 1 {
            let each = (0..x.count())
                .map(|i| self.bootstrap_staged(&self.ev.slice(x, i..i + 1)?, out_scale, stage))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(self.ev.concat(&each)?);
        }
        let ev = self.ev;
        let keys = self.keys;
        let base = self.config.base_level;
        if x.level() < base {
            return Err(CircuitError::OutOfLevels {
                circuit: format!("bootstrapping from base level {base}"),
                needed: base,
                level: x.level(),
            });
        }
        let params = ev.context().params();
        let top = params.max_level();
        // 1. ScaleDown to Q_0 / 2^ratio (when above the base), encapsulate, raise, decapsulate:
        //    t = m + Q_0 I under s, values t / Q_0.
        let target = self.q0 / 2f64.powi(self.config.log_message_ratio as i32);
        let low = if x.level() > base {
            let above = ev.drop_levels(x, x.level() - base - 1)?;
            let k = (target * params.q()[base + 1] as f64 / x.scale()).round();
            if k < 1.0 {
                return Err(CircuitError::InvalidPolynomial {
                    reason: format!(
                        "input scale 2^{:.1} is above Q_0 / 2^{} = 2^{:.1} times the prime it would be divided by",
                        x.scale().log2(),
                        self.config.log_message_ratio,
                        target.log2()
                    ),
                });
            }
            ev.rescale(&ev.mul_const(&above, 1.0, Some(k))?)?
        } else {
            ev.drop_levels(x, 0)?
        };
        let sparse = ev.encapsulate(&low, keys, true)?;
        let message_scale = low.scale();
        drop(low);
        let raised = ev.mod_raise(&sparse, top)?;
        drop(sparse);
        let mut c = ev.encapsulate(&raised, keys, false)?;
        drop(raised);
        c.set_scale(self.q0);
        // Sparse packing: the sum over the copies keeps the coefficients of X^(N / 2n) (times
        // the copies, which CoeffsToSlots divides out).
        let (n, copies) = self.config.packing(params)?;
        for step in self.config.sub_sum_steps(params)? {
            c = ev.add(&c, &ev.rotate(&c, step, keys)?)?;
        }
        stage("scale_down + mod_raise")?;
        // 2. CoeffsToSlots, then re = w + conj(w), im = -i (w - conj(w)); sparse, both halves
        //    in one ciphertext, re + rot_n(im) (CoeffsToSlots left each period's upper half 0).
        for t in &self.coeffs_to_slots {
            c = t.apply(ev, keys, &c)?;
        }
        c.set_scale(self.eval_scale);
        let conj = ev.conjugate(&c, keys)?;
        let re = ev.add(&c, &conj)?;
        let im = ev.mul_plain(&ev.sub(&c, &conj)?, &self.minus_i)?;
        drop((c, conj));
        let halves = if copies == 1 {
            ev.concat(&[re, im])?
        } else {
            ev.add(&re, &ev.rotate(&im, n as i64, keys)?)?
        };
        stage("coeffs_to_slots")?;
        // 3. EvalMod on both halves in one batch, landing where the scale bookkeeping wants:
        //    y = S sin(2 pi t / Q_0) ~ S 2 pi m / Q_0, read at scale H = out_scale / stc_factor
        //    as m / scale; SlotsToCoeffs' factor then leaves the data of out_scale.
        let high = out_scale / self.stc_factor;
        let s = high * self.q0 / (TAU * message_scale);
        let pe = PolynomialEvaluator::new(ev, keys)
            .with_primes_per_level(self.config.primes_per_level)?;
        let y = self.eval_mod.evaluate(&pe, &halves, s)?;
        drop(halves);
        stage("eval_mod")?;
        // 4. re + i im (sparse: SlotsToCoeffs' first matrix reads the halves itself), then
        //    SlotsToCoeffs.
        let mut y = if copies == 1 {
            let y_im = ev.mul_plain(&ev.slice(&y, 1..2)?, &self.plus_i)?;
            ev.add(&ev.slice(&y, 0..1)?, &y_im)?
        } else {
            y
        };
        y.set_scale(high);
        for t in &self.slots_to_coeffs {
            y = t.apply(ev, keys, &y)?;
        }
        y.set_scale(out_scale);
        stage("slots_to_coeffs")?;
        Ok(y)
    }
}
