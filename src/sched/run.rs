//! Runs a [`Plan`] over a chunked layer of ciphertexts on any backend: the steps of the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::Backend;
use crate::ckks::{
    Ciphertext, CkksError, DeviceCiphertext, DeviceEvaluator, DeviceKeys, EncodedLinear,
    LinearLayer, Parameters,
};

use super::plan::{Plan, Step};

/// Ciphertexts per launch for ciphertexts at `level` of `params` on `backend`: as many as keep
/// the largest intermediate tensor of a step within the backend's
/// [`Backend::max_tensor_words`]: the product of a squaring (`3 (level + 1) N` words per
/// ciphertext), or the key-switching digits where the backend materialises them
/// ([`Backend::keyswitch_words`]); at least 1.
pub fn chunk_size<B: Backend>(backend: &B, params: &Parameters, level: usize) -> usize {
    let limbs = level.min(params.max_level()) + 1;
    let product = 3 * limbs * params.n();
    let digits =
        backend.keyswitch_words(limbs, params.p().len(), limbs.div_ceil(params.digit_size()));
    let per_ct = product.max(digits);
    (backend.max_tensor_words() / per_ct.max(1)).max(1)
}

/// Uploads a layer's ciphertexts in chunks of at most `chunk`.
pub fn upload<B: Backend>(
    eval: &DeviceEvaluator<B>,
    cts: &[Ciphertext],
    chunk: usize,
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    cts.chunks(chunk.max(1)).map(|c| eval.upload(c)).collect()
}

/// Downloads a chunked layer.
pub fn download<B: Backend>(
    eval: &DeviceEvaluator<B>,
    chunks: &[DeviceCiphertext<B::Tensor>],
) -> Result<Vec<Ciphertext>, CkksError> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(eval.download(c)?);
    }
    Ok(out)
}

/// Entries a [`LinearCache`] holds before it starts afresh (a session scores one or a few plans).
const LINEAR_CACHE_ENTRIES: usize = 4096;

/// Which part of which layer an encoded linear layer is, for inputs at which level and scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LinearKey {
    /// Fingerprint of the whole layer (inputs, every weight and bias, bit for bit).
    layer: u64,
    /// First output and outputs of the chunk.
    outputs: (usize, usize),
    /// First input and inputs of the chunk.
    inputs: (usize, usize),
    level: usize,
    scale: u64,
}

/// The encoded linear layers of a session, reused batch after batch: weight residues and the
/// backend's tables (on a GPU, built and uploaded) are made once per layer, chunk of outputs,
/// chunk of inputs, level and scale, instead of once per batch. `None`: the chunk pair has no
/// weights.
pub(crate) struct LinearCache<L> {
    map: Mutex<HashMap<LinearKey, Option<Arc<EncodedLinear<L>>>>>,
    /// The layer behind each fingerprint: a layer whose fingerprint matches another's but whose
    /// weights differ (a collision) replaces it and its entries, never uses them.
    layers: Mutex<HashMap<u64, LinearLayer>>,
}

impl<L> Default for LinearCache<L> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        }
    }
}

impl<L> LinearCache<L> {
    /// The fingerprint of `layer`, its entries checked to be `layer`'s (dropped if another
    /// layer with the same fingerprint made them).
    fn admit(&self, layer: &LinearLayer) -> u64 {
        let fp = fingerprint(layer);
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        if layers.get(&fp) != Some(layer) {
            self.lock().retain(|k, _| k.layer != fp);
            if layers.len() >= LINEAR_CACHE_ENTRIES {
                layers.clear();
                self.lock().clear();
            }
            layers.insert(fp, layer.clone());
        }
        fp
    }

    /// The entry for `key`, made by `make` on a miss.
    fn get(
        &self,
        key: LinearKey,
        make: impl FnOnce() -> Result<Option<EncodedLinear<L>>, CkksError>,
    ) -> Result<Option<Arc<EncodedLinear<L>>>, CkksError> {
        if let Some(e) = self.lock().get(&key) {
            return Ok(e.clone());
        }
        let e = make()?.map(Arc::new);
        let mut map = self.lock();
        if map.len() >= LINEAR_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, e.clone());
        Ok(e)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LinearKey, Option<Arc<EncodedLinear<L>>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fingerprint of `layer`'s inputs, weights and bias, bit for bit (a 64-bit multiplicative
/// hash: one multiply per word, so fingerprinting a layer each batch costs little beside
/// encoding it).
fn fingerprint(layer: &LinearLayer) -> u64 {
    let mut h = 0u64;
    let mut add = |v: u64| h = (h.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    add(layer.inputs as u64);
    add(layer.rows.len() as u64);
    for row in &layer.rows {
        add(row.len() as u64);
        for &(i, w) in row {
            add(i as u64);
            add(w.to_bits());
        }
    }
    add(layer.bias.len() as u64);
    for b in &layer.bias {
        add(b.to_bits());
    }
    h
}

/// A linear step over a chunked layer: per chunk of at most `chunk` outputs, the partial sums
/// over the input chunks (bias with the first), accumulated in place, then rescaled. The sum
/// modulo each prime is the same as in one launch, so the result does not depend on the
/// chunking. The encoded weights come from `cache` where given.
fn linear_chunked<B: Backend>(
    eval: &DeviceEvaluator<B>,
    x: &[DeviceCiphertext<B::Tensor>],
    layer: &LinearLayer,
    chunk: usize,
    cache: Option<&LinearCache<B::Linear>>,
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    let mut starts = Vec::with_capacity(x.len());
    let mut total = 0;
    for c in x {
        starts.push(total);
        total += c.count();
    }
    if total != layer.inputs {
        return Err(CkksError::CountMismatch {
            op: "linear",
            left: layer.inputs,
            right: total,
        });
    }
    let fp = cache.map(|c| c.admit(layer));
    // The encoded part of the layer for outputs `o0..o0 + rows.len()` and the input chunk `k`
    // (from the cache, else made now); `None` when the pair has no weights (k > 0).
    let encoded = |o0: usize, rows: &[Vec<(usize, f64)>], k: usize| {
        let (c, a) = (&x[k], starts[k]);
        let b = a + c.count();
        let make = || -> Result<Option<EncodedLinear<B::Linear>>, CkksError> {
            if k == 0 && o0 == 0 && rows.len() == layer.rows.len() && x.len() == 1 {
                return eval
                    .encode_linear(c.level(), c.scale(), layer, None)
                    .map(Some);
            }
            let sub: Vec<Vec<(usize, f64)>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .filter(|(i, _)| (a..b).contains(i))
                        .map(|&(i, w)| (i - a, w))
                        .collect()
                })
                .collect();
            if k > 0 && sub.iter().all(Vec::is_empty) {
                return Ok(None);
            }
            let bias = if k == 0 && !layer.bias.is_empty() {
                layer.bias[o0..o0 + rows.len()].to_vec()
            } else {
                Vec::new()
            };
            let part = LinearLayer {
                inputs: c.count(),
                rows: sub,
                bias,
            };
            eval.encode_linear(c.level(), c.scale(), &part, None)
                .map(Some)
        };
        match (cache, fp) {
            (Some(cache), Some(layer)) => cache.get(
                LinearKey {
                    layer,
                    outputs: (o0, rows.len()),
                    inputs: (a, c.count()),
                    level: c.level(),
                    scale: c.scale().to_bits(),
                },
                make,
            ),
            _ => Ok(make()?.map(Arc::new)),
        }
    };
    if x.len() == 1 && layer.rows.len() <= chunk {
        let e = encoded(0, &layer.rows, 0)?.ok_or(CkksError::EmptyBatch)?;
        return Ok(vec![eval.linear_rescale_encoded(&x[0], &e)?]);
    }
    let mut out = Vec::new();
    for (o0, rows) in (0..layer.rows.len())
        .step_by(chunk.max(1))
        .zip(layer.rows.chunks(chunk.max(1)))
    {
        let mut acc: Option<DeviceCiphertext<B::Tensor>> = None;
        for (k, c) in x.iter().enumerate() {
            let Some(e) = encoded(o0, rows, k)? else {
                continue;
            };
            match acc.as_mut() {
                None => acc = Some(eval.linear_encoded(c, &e)?),
                Some(s) => eval.linear_acc_encoded(s, c, &e)?,
            }
        }
        let sum = acc.ok_or(CkksError::EmptyBatch)?;
        out.push(eval.rescale(&sum)?);
    }
    Ok(out)
}

/// Ciphertexts per sub-chunk of a cubic step.
const CUBIC_SUBCHUNK: usize = 256;

/// `c0 + c1 x + c2 x^2 + c3 x^3` on every ciphertext of `x` (level `l`, scale `s`), as
/// `(c3 x + c2) x^2 + (c1 x + c0)`: the result is at level `l - 2`.
fn cubic<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    x: &DeviceCiphertext<B::Tensor>,
    c: &[f64; 4],
) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
    let q = eval.context().params().q();
    let l = x.level();
    if l < 2 {
        return Err(CkksError::OutOfLevels { op: "cubic" });
    }
    // a = c3 x + c2 at level l - 1, scale s (q_l / q_l, equal up to the f64 rounding).
    let mut a = eval.rescale(&eval.mul_const(x, c[3], None)?)?;
    a.set_scale(x.scale());
    let a = eval.add_const(&a, c[2])?;
    let x2 = eval.mul_relin_rescale(x, x, keys)?; // level l - 1, scale s^2 / q_l
    let r = eval.mul_relin_rescale(&a, &x2, keys)?; // level l - 2
    drop((a, x2));
    // c1 x at level l - 2 and r's scale: one constant multiplication, one level dropped, one
    // rescale by q_{l-1}.
    let target = r.scale();
    let cs = target * q[l - 1] as f64 / x.scale();
    let lin = eval.drop_levels(&eval.mul_const(x, c[1], Some(cs))?, 1)?;
    let mut lin = eval.rescale(&lin)?;
    lin.set_scale(target);
    eval.add_const(&eval.add(&r, &lin)?, c[0])
}

/// Runs step `step` of a plan on the layer `input` (chunks of at most `chunk` ciphertexts);
/// the input chunks are dropped as soon as they are used.
pub(crate) fn run_step<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    step: &Step,
    input: Vec<DeviceCiphertext<B::Tensor>>,
    chunk: usize,
    cache: Option<&LinearCache<B::Linear>>,
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    match step {
        Step::Linear(layer) => linear_chunked(eval, &input, layer, chunk, cache),
        Step::Square => input
            .into_iter()
            .map(|c| eval.mul_relin_rescale(&c, &c, keys))
            .collect(),
        // A cubic keeps several layer-sized intermediates alive: evaluate it on sub-chunks, so
        // memory is the layer in and out plus one sub-chunk's intermediates.
        Step::Cubic(coeffs) => input
            .into_iter()
            .map(|c| {
                if c.count() <= CUBIC_SUBCHUNK {
                    return cubic(eval, keys, &c, coeffs);
                }
                let parts = (0..c.count())
                    .step_by(CUBIC_SUBCHUNK)
                    .map(|s| {
                        let sub = eval.slice(&c, s..(s + CUBIC_SUBCHUNK).min(c.count()))?;
                        cubic(eval, keys, &sub, coeffs)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                drop(c);
                eval.concat(&parts)
            })
            .collect(),
    }
}

/// Server side: runs `plan` on the layer `x` (chunks of at most `chunk` ciphertexts, as from
/// [`upload`]) with evaluation keys only; returns the logits in chunks. Each layer is dropped as
/// soon as the next is computed. `progress(step)` is called after each step.
pub fn run<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    plan: &Plan,
    x: Vec<DeviceCiphertext<B::Tensor>>,
    chunk: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    let count: usize = x.iter().map(|c| c.count()).sum();
    if count != plan.inputs {
        return Err(CkksError::CountMismatch {
            op: "run",
            left: plan.inputs,
            right: count,
        });
    }
    let mut cur = x;
    for (i, step) in plan.steps.iter().enumerate() {
        cur = run_step(eval, keys, step, cur, chunk, None)?;
        progress(i);
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::ckks::{Context, Encoder, Encryptor, KeyGenerator, Preset, Sampler};

    #[test]
    fn cached_encodings_give_the_same_layer_batch_after_batch() {
        let params = Preset::by_name("toy1024")
            .unwrap()
            .parameters(true)
            .unwrap();
        let ctx = Context::new(&params).unwrap();
        let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(5));
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let enc = Encoder::new(ctx.clone());
        let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(6));
        let top = params.max_level();
        let cts: Vec<Ciphertext> = (0..7)
            .map(|k| {
                let v = vec![k as f64 / 10.0 - 0.3; enc.slots()];
                let pt = enc.encode(&v, top, params.default_scale()).unwrap();
                encryptor.encrypt(&pt, &pk).unwrap()
            })
            .collect();
        let eval = DeviceEvaluator::new(ctx.clone(), CpuBackend::new(ctx.rns().clone())).unwrap();
        // 5 outputs over 7 inputs; output 4 reads only the first chunk of inputs, so its pair
        // with the second chunk has no weights.
        let layer = LinearLayer {
            inputs: 7,
            rows: vec![
                vec![(0, 0.5), (6, -0.25)],
                vec![(3, 1.0), (4, 0.75)],
                vec![],
                vec![(5, -1.0), (1, 0.125), (2, 0.5)],
                vec![(1, 0.3)],
            ],
            bias: vec![0.1, 0.0, -0.2, 0.3, 0.05],
        };
        let chunk = 3;
        let x = upload(&eval, &cts, chunk).unwrap();
        let want = download(
            &eval,
            &linear_chunked(&eval, &x, &layer, chunk, None).unwrap(),
        )
        .unwrap();
        let cache = LinearCache::default();
        for batch in 0..3 {
            let got = linear_chunked(&eval, &x, &layer, chunk, Some(&cache)).unwrap();
            assert!(download(&eval, &got).unwrap() == want, "batch {batch}");
            // 2 chunks of outputs x 3 chunks of inputs, made once.
            assert_eq!(cache.lock().len(), 6, "batch {batch}");
        }
        assert!(cache.lock().values().any(Option::is_none));
        // Another layer of the same shape gets its own encodings, not the first one's.
        let mut other = layer.clone();
        other.rows[0][0].1 = 0.5000001;
        let got = linear_chunked(&eval, &x, &other, chunk, Some(&cache)).unwrap();
        assert!(download(&eval, &got).unwrap() != want);
        assert_eq!(cache.lock().len(), 12);
        // A fingerprint collision, simulated: `other`'s encodings filed under `layer`'s
        // fingerprint. They are dropped, not applied to `layer`.
        let collide = LinearCache::default();
        let _ = linear_chunked(&eval, &x, &other, chunk, Some(&collide)).unwrap();
        let (fo, fl) = (fingerprint(&other), fingerprint(&layer));
        let moved: HashMap<_, _> = collide
            .lock()
            .drain()
            .map(|(k, v)| (LinearKey { layer: fl, ..k }, v))
            .collect();
        assert!(moved.keys().all(|k| k.layer != fo));
        *collide.lock() = moved;
        collide.layers.lock().unwrap().clear();
        collide.layers.lock().unwrap().insert(fl, other.clone());
        let got = linear_chunked(&eval, &x, &layer, chunk, Some(&collide)).unwrap();
        assert!(
            download(&eval, &got).unwrap() == want,
            "a collision is caught"
        );
        // One launch for the whole layer: the whole layer encoded once.
        let x1 = upload(&eval, &cts, 8).unwrap();
        let one = linear_chunked(&eval, &x1, &layer, 8, Some(&cache)).unwrap();
        assert!(download(&eval, &one).unwrap() == want);
        assert_eq!(cache.lock().len(), 13);
    }
}
