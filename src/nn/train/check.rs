//! Cross-check of the f64 reference: candle's own forward pass of an exported model, and the
//! comparison of two sets of logits.

use super::*;

/// Fraction of equal argmaxes and max |difference| between f64 reference logits and f32/f64
/// candle logits.
pub fn compare_logits<T: Copy + Into<f64>>(reference: &[Vec<f64>], other: &[Vec<T>]) -> (f64, f64) {
    let mut agree = 0;
    let mut max = 0.0f64;
    for (r, o) in reference.iter().zip(other) {
        let o: Vec<f64> = o.iter().map(|&x| x.into()).collect();
        if reference::argmax(r) == reference::argmax(&o) {
            agree += 1;
        }
        for (a, b) in r.iter().zip(&o) {
            max = max.max((a - b).abs());
        }
    }
    (agree as f64 / reference.len().max(1) as f64, max)
}

/// Candle's own forward pass of an exported model in f64 (native NCHW `conv2d`, `avg_pool2d`
/// times k^2 for the sum pool, `matmul`), on every image of `data`: an implementation independent
/// of [`reference::forward`], used to cross-check it.
pub fn candle_forward(model: &Model, data: &Dataset) -> Result<Vec<Vec<f64>>, TrainError> {
    if data.shape != model.input {
        return Err(TrainError::Data(format!(
            "model expects {:?}, dataset has {:?}",
            model.input, data.shape
        )));
    }
    let dev = Device::Cpu;
    let [c, h, w] = model.input;
    let mut out = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(500) {
        let end = (start + 500).min(data.len());
        let mut xs = Vec::with_capacity((end - start) * c * h * w);
        for i in start..end {
            xs.extend(reference::normalize(model, data.image(i)));
        }
        let mut x = Tensor::from_vec(xs, (end - start, c, h, w), &dev)?;
        for l in &model.layers {
            x = match l {
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let wt = Tensor::from_slice(
                        weight
                            .as_slice()
                            .ok_or_else(|| TrainError::Data("non-contiguous weight".into()))?,
                        weight.dim(),
                        &dev,
                    )?;
                    let bt = Tensor::from_slice(
                        bias.as_slice().unwrap_or(&bias.to_vec()),
                        (1, bias.len(), 1, 1),
                        &dev,
                    )?;
                    x.conv2d(&wt, *padding, *stride, 1, 1)?.broadcast_add(&bt)?
                }
                Layer::SumPool { kernel, stride } => {
                    (x.avg_pool2d_with_stride((*kernel, *kernel), (*stride, *stride))?
                        * (kernel * kernel) as f64)?
                }
                Layer::Flatten => x.flatten_from(1)?,
                Layer::Dense { weight, bias } => {
                    let wt = Tensor::from_slice(
                        weight
                            .as_slice()
                            .ok_or_else(|| TrainError::Data("non-contiguous weight".into()))?,
                        weight.dim(),
                        &dev,
                    )?;
                    let bt = Tensor::from_slice(
                        bias.as_slice().unwrap_or(&bias.to_vec()),
                        bias.len(),
                        &dev,
                    )?;
                    x.matmul(&wt.t()?)?.broadcast_add(&bt)?
                }
                Layer::Act(Activation::Std { func }) => match func {
                    ActFn::Relu => x.relu()?,
                    ActFn::Sigmoid => candle_nn::ops::sigmoid(&x)?,
                    ActFn::Tanh => x.tanh()?,
                    ActFn::Gelu => x.gelu_erf()?,
                    ActFn::Silu => x.silu()?,
                },
                Layer::Act(Activation::Poly { coeffs }) => {
                    let mut acc = x.zeros_like()?;
                    let mut pow = x.ones_like()?;
                    for (k, &ck) in coeffs.coeffs.iter().enumerate() {
                        if k > 0 {
                            pow = (&pow * &x)?;
                        }
                        acc = (acc + (&pow * ck)?)?;
                    }
                    acc
                }
            };
        }
        out.extend(x.to_vec2::<f64>()?);
    }
    Ok(out)
}
