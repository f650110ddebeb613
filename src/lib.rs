//! cryptodl: convolutional-network inference over RNS-CKKS ciphertexts, with a bit-exact CPU path
//! and WGSL kernels on any GPU (see `DESIGN.md` in the project's shared folder and the README).
//!
//! Layering (dependencies point one way): `cli` -> `sched` -> (`nn`, `circuits` -> `ckks`) -> `backend` ->
//! `cryptodl_kernels`; [`io`] (atomic file output) is used by all of them.

pub mod backend;
pub mod circuits;
pub mod ckks;
pub mod cli;
pub mod io;
pub mod nn;
pub mod sched;
