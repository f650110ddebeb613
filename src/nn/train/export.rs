//! Export of a trained [`Net`] as a folded [`Model`]: batch norm folded into the preceding
//! linear layer, average pools as sum pools with `1/k^2` folded forward, fixed polynomials.

use super::*;

impl Net {
    /// Exports the trained network as a folded [`Model`].
    pub fn export(
        &self,
        normalization: Normalization,
        training: serde_json::Value,
    ) -> Result<Model, TrainError> {
        let to64 = |t: &Tensor| -> Result<Vec<f64>, TrainError> {
            Ok(t.flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect())
        };
        let mut trained = Vec::new();
        for l in &self.layers {
            trained.push(match l {
                NetLayer::Conv {
                    w,
                    b,
                    out_c,
                    k,
                    stride,
                    padding,
                    in_c,
                    ckk,
                    ..
                } => {
                    let wv = to64(w.as_tensor())?;
                    let mut weight = Array4::<f64>::zeros((*out_c, *in_c, *k, *k));
                    for r in 0..*ckk {
                        let (ch, ky, kx) = (r / (k * k), (r / k) % k, r % k);
                        for o in 0..*out_c {
                            weight[[o, ch, ky, kx]] = wv[r * out_c + o];
                        }
                    }
                    TrainedLayer::Conv2d {
                        weight,
                        bias: Array1::from(to64(b.as_tensor())?),
                        stride: *stride,
                        padding: *padding,
                    }
                }
                NetLayer::Pool { k, stride, .. } => TrainedLayer::AvgPool {
                    kernel: *k,
                    stride: *stride,
                },
                NetLayer::Dense { w, b, in_layout } => {
                    let wv = to64(w.as_tensor())?;
                    let (n, o) = w.as_tensor().dims2()?;
                    let mut weight = Array2::<f64>::zeros((o, n));
                    // Map each training feature index to its CHW flatten index.
                    let perm: Vec<usize> = match *in_layout {
                        Layout::Flat {
                            from: Some((chw, c, h, w)),
                            ..
                        } => {
                            let src = if chw {
                                Layout::Chw { c, h, w }
                            } else {
                                Layout::Hwc { c, h, w }
                            };
                            let mut p = vec![0; n];
                            for ch in 0..c {
                                for y in 0..h {
                                    for x in 0..w {
                                        p[src.index(ch, y, x)] = (ch * h + y) * w + x;
                                    }
                                }
                            }
                            p
                        }
                        _ => (0..n).collect(),
                    };
                    for (j, &pj) in perm.iter().enumerate() {
                        for oi in 0..o {
                            weight[[oi, pj]] = wv[j * o + oi];
                        }
                    }
                    TrainedLayer::Dense {
                        weight,
                        bias: Array1::from(to64(b.as_tensor())?),
                    }
                }
                NetLayer::Flatten => TrainedLayer::Flatten,
                NetLayer::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    ..
                } => TrainedLayer::BatchNorm {
                    gamma: Array1::from(to64(gamma.as_tensor())?),
                    beta: Array1::from(to64(beta.as_tensor())?),
                    mean: mean.iter().map(|&v| v as f64).collect(),
                    var: var.iter().map(|&v| v as f64).collect(),
                    eps: BN_EPS,
                },
                NetLayer::Act(NetAct::Std(f)) => TrainedLayer::Act(Activation::Std { func: *f }),
                NetLayer::Act(NetAct::Poly { coeffs, .. }) => TrainedLayer::Act(Activation::Poly {
                    coeffs: Polynomial::new(to64(coeffs)?),
                }),
            });
        }
        Ok(Model::fold(
            &self.arch.name,
            self.input,
            normalization,
            trained,
            training,
        )?)
    }
}
