//! WGSL sources: one file per kernel family under `shaders/`, with the shared prelude prepended.

/// Modular-arithmetic prelude prepended to every family.
pub const PRELUDE: &str = include_str!("../../../shaders/prelude.wgsl");

/// Coefficients per NTT workgroup tile (`TILE` in `shaders/ntt.wgsl`): 8 KiB of workgroup memory.
pub const NTT_TILE: u32 = 2048;
/// Invocations per workgroup of every kernel.
pub const WORKGROUP_SIZE: u32 = 256;

/// Kind of one binding of a kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `var<storage, read>`.
    ReadOnly,
    /// `var<storage, read_write>`.
    ReadWrite,
    /// `var<uniform>`.
    Uniform,
}

/// A kernel family (one WGSL file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// `shaders/ntt.wgsl`: batched forward / inverse negacyclic NTT.
    Ntt,
    /// `shaders/elementwise.wgsl`: add, sub, negate, products, tensor product.
    Elementwise,
    /// `shaders/rns.wgsl`: fast base conversion (mod-up / mod-down / rescale).
    Rns,
    /// `shaders/keyswitch.wgsl`: key-switching inner product.
    Keyswitch,
    /// `shaders/automorphism.wgsl`: Galois automorphisms.
    Automorphism,
    /// `shaders/linear.wgsl`: sparse weighted sums of the polynomials of a batch.
    Linear,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 6] = [
        Family::Ntt,
        Family::Elementwise,
        Family::Rns,
        Family::Keyswitch,
        Family::Automorphism,
        Family::Linear,
    ];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Family::Ntt => "ntt.wgsl",
            Family::Elementwise => "elementwise.wgsl",
            Family::Rns => "rns.wgsl",
            Family::Keyswitch => "keyswitch.wgsl",
            Family::Automorphism => "automorphism.wgsl",
            Family::Linear => "linear.wgsl",
        }
    }

    /// The family's bindings in group 0, in binding order (the last one is the uniform block).
    pub fn bindings(self) -> &'static [Binding] {
        use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
        match self {
            Family::Ntt => &[W, R, R, R, U],
            Family::Elementwise => &[W, R, R, R, R, R, U],
            Family::Rns => &[W, R, R, R, R, R, R, R, U],
            Family::Keyswitch => &[W, R, R, R, R, R, U],
            Family::Automorphism => &[W, R, R, R, U],
            Family::Linear => &[W, R, R, R, R, R, R, U],
        }
    }

    fn body(self) -> &'static str {
        match self {
            Family::Ntt => include_str!("../../../shaders/ntt.wgsl"),
            Family::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Family::Rns => include_str!("../../../shaders/rns.wgsl"),
            Family::Keyswitch => include_str!("../../../shaders/keyswitch.wgsl"),
            Family::Automorphism => include_str!("../../../shaders/automorphism.wgsl"),
            Family::Linear => include_str!("../../../shaders/linear.wgsl"),
        }
    }
}

/// Full source of a family: the prelude followed by the family's file.
pub fn source(family: Family) -> String {
    format!("{PRELUDE}\n{}", family.body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_parses_and_validates_with_naga() {
        for family in Family::ALL {
            let src = source(family);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{}: {}", family.file_name(), e.emit_to_string(&src)));
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            );
            validator
                .validate(&module)
                .unwrap_or_else(|e| panic!("{}: {}", family.file_name(), e.emit_to_string(&src)));
            let mut declared: Vec<(u32, Binding)> = module
                .global_variables
                .iter()
                .filter_map(|(_, v)| {
                    let b = v.binding.as_ref()?;
                    assert_eq!(b.group, 0, "{}: only group 0 is used", family.file_name());
                    let kind = match v.space {
                        naga::AddressSpace::Uniform => Binding::Uniform,
                        naga::AddressSpace::Storage { access } => {
                            if access.contains(naga::StorageAccess::STORE) {
                                Binding::ReadWrite
                            } else {
                                Binding::ReadOnly
                            }
                        }
                        other => panic!("{}: unexpected space {other:?}", family.file_name()),
                    };
                    Some((b.binding, kind))
                })
                .collect();
            declared.sort_by_key(|d| d.0);
            let expected: Vec<(u32, Binding)> = family
                .bindings()
                .iter()
                .enumerate()
                .map(|(i, &k)| (i as u32, k))
                .collect();
            assert_eq!(declared, expected, "{} bindings", family.file_name());
            assert!(
                !module.entry_points.is_empty(),
                "{} has no entry point",
                family.file_name()
            );
        }
    }

    #[test]
    fn tile_constant_matches_the_shader() {
        assert!(Family::Ntt
            .body()
            .contains(&format!("const TILE: u32 = {NTT_TILE}u;")));
        for family in Family::ALL {
            assert!(
                family.body().contains("@workgroup_size(256)"),
                "{} must use 256 invocations",
                family.file_name()
            );
        }
    }
}
