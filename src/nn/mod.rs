//! Neural networks: polynomial activations, models, datasets, plaintext reference, training.
//!
//! Public API for the HE scheduler: [`Model::load`] reads a trained `.safetensors` model whose
//! batch norms are folded and whose average pools are sum pools (1/k^2 folded forward);
//! [`Model::layers`] lists [`Layer`]s; [`reference::forward`] gives the f64 logits in exactly the
//! operation order the encrypted path must use (see the [`reference`] module docs).

pub mod activation;
pub mod arch;
pub mod dataset;
pub mod fit;
pub mod images;
pub mod model;
pub mod onnx;
pub mod reference;
pub mod train;

pub use activation::{ActFn, Polynomial};
pub use arch::{ActChoice, ArchSpec, LayerSpec};
pub use dataset::{Dataset, DatasetKind};
pub use fit::{fit, Fit, FitMethod};
pub use model::{Activation, Layer, Model};
