//! Helpers shared by the integration tests (each test crate uses some of them).
#![allow(dead_code)]

pub mod job;

use cryptodl::backend::gpu::GpuRuntime;
use std::sync::Arc;

/// The shared GPU runtime, or `None` (loudly) when there is no adapter; with
/// `CRYPTODL_REQUIRE_GPU=1` a missing adapter fails the test instead.
pub fn gpu() -> Option<Arc<GpuRuntime>> {
    match GpuRuntime::shared() {
        Ok(rt) => Some(rt),
        Err(e) => {
            if std::env::var("CRYPTODL_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("CRYPTODL_REQUIRE_GPU=1 but no GPU adapter could be opened: {e}");
            }
            eprintln!("SKIPPED: no GPU adapter ({e}); install mesa-vulkan-drivers libvulkan1 to run the GPU tests");
            None
        }
    }
}
