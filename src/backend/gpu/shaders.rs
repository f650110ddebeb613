//! WGSL sources: one file per kernel family under `shaders/`, with the shared prelude prepended.

/// Modular-arithmetic prelude prepended to every family.
pub const PRELUDE: &str = include_str!("../../../shaders/prelude.wgsl");
/// The prelude's wide products with native 64-bit integers ([`Arith::Int64`]).
pub const PRELUDE_INT64: &str = include_str!("../../../shaders/prelude_int64.wgsl");

/// How the shaders build 32x32->64-bit products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arith {
    /// From 16-bit halves: 4 u32 multiplies per wide product, any adapter.
    Portable,
    /// Native `u64` (`wgpu::Features::SHADER_INT64`): one multiply per wide product.
    Int64,
}

impl Arith {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Arith::Portable => "portable",
            Arith::Int64 => "int64",
        }
    }

    /// u32 multiplies of a full 32x32->64 product.
    pub fn wide(self) -> u64 {
        match self {
            Arith::Portable => 4,
            Arith::Int64 => 1,
        }
    }

    /// u32 multiplies of a Shoup product `x*w mod q` (low product, high product, quotient).
    pub fn shoup(self) -> u64 {
        2 + self.wide()
    }

    /// u32 multiplies of a Barrett product `a*b mod q` (wide product, wide quotient estimate,
    /// quotient times q).
    pub fn barrett(self) -> u64 {
        2 * self.wide() + 1
    }
}

/// Coefficients per NTT workgroup tile (`TILE` in `shaders/ntt.wgsl`): 8 KiB of workgroup memory.
pub const NTT_TILE: u32 = 2048;
/// The NTT tile of [`Family::NttWide`]: 32 KiB of workgroup memory, one pass for n <= 8192.
pub const NTT_TILE_WIDE: u32 = 8192;
/// Coefficients per workgroup of the linear kernel (`TC` in `shaders/linear.wgsl`).
pub const LINEAR_TC: usize = 32;
/// Output slots per block of the linear kernel (`TM`).
pub const LINEAR_TM: usize = 128;
/// Inputs per chunk of a block's input list (`TK`): TK x TC words of workgroup memory.
pub const LINEAR_TK: usize = 64;
/// Source limbs per group a base conversion holds in registers (`MAX_GROUP` in
/// `shaders/rns.wgsl`).
pub const RNS_MAX_GROUP: usize = 32;
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
    /// `shaders/ntt.wgsl` with tiles of [`NTT_TILE_WIDE`] coefficients (adapters with 32 KiB of
    /// workgroup storage).
    NttWide,
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
    pub const ALL: [Family; 7] = [
        Family::Ntt,
        Family::NttWide,
        Family::Elementwise,
        Family::Rns,
        Family::Keyswitch,
        Family::Automorphism,
        Family::Linear,
    ];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Family::Ntt | Family::NttWide => "ntt.wgsl",
            Family::Elementwise => "elementwise.wgsl",
            Family::Rns => "rns.wgsl",
            Family::Keyswitch => "keyswitch.wgsl",
            Family::Automorphism => "automorphism.wgsl",
            Family::Linear => "linear.wgsl",
        }
    }

    /// The family its dispatches are counted under.
    pub fn cost_family(self) -> crate::backend::cost::CostFamily {
        use crate::backend::cost::CostFamily as C;
        match self {
            Family::Ntt | Family::NttWide => C::Ntt,
            Family::Elementwise => C::Elementwise,
            Family::Rns => C::Rns,
            Family::Keyswitch => C::Keyswitch,
            Family::Automorphism => C::Automorphism,
            Family::Linear => C::Linear,
        }
    }

    /// The family's bindings in group 0, in binding order (the last one is the uniform block).
    pub fn bindings(self) -> &'static [Binding] {
        use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
        match self {
            Family::Ntt | Family::NttWide => &[W, R, R, R, R, R, U],
            Family::Elementwise => &[W, R, R, R, R, R, U],
            Family::Rns => &[W, R, R, R, R, R, R, R, U],
            Family::Keyswitch => &[W, R, R, R, R, R, U],
            Family::Automorphism => &[W, R, R, R, U],
            Family::Linear => &[W, R, R, R, R, R, R, U],
        }
    }

    fn body(self) -> &'static str {
        match self {
            Family::Ntt | Family::NttWide => include_str!("../../../shaders/ntt.wgsl"),
            Family::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Family::Rns => include_str!("../../../shaders/rns.wgsl"),
            Family::Keyswitch => include_str!("../../../shaders/keyswitch.wgsl"),
            Family::Automorphism => include_str!("../../../shaders/automorphism.wgsl"),
            Family::Linear => include_str!("../../../shaders/linear.wgsl"),
        }
    }
}

/// The prelude for `arith`.
pub fn prelude(arith: Arith) -> String {
    match arith {
        Arith::Portable => PRELUDE.to_string(),
        Arith::Int64 => {
            let (start, end) = ("// <wide-products>", "// </wide-products>");
            let (a, b) = (
                PRELUDE
                    .find(start)
                    .expect("prelude marks its wide products"),
                PRELUDE.find(end).expect("prelude marks its wide products") + end.len(),
            );
            format!("{}{}{}", &PRELUDE[..a], PRELUDE_INT64, &PRELUDE[b..])
        }
    }
}

/// Full source of a family: the prelude for `arith` followed by the family's file (for
/// [`Family::NttWide`], with the wide tile).
pub fn source(family: Family, arith: Arith) -> String {
    let body = match family {
        Family::NttWide => family
            .body()
            .replace(
                &format!("const TILE: u32 = {NTT_TILE}u;"),
                &format!("const TILE: u32 = {NTT_TILE_WIDE}u;"),
            )
            .replace(
                &format!("const LOG_TILE: u32 = {}u;", NTT_TILE.trailing_zeros()),
                &format!("const LOG_TILE: u32 = {}u;", NTT_TILE_WIDE.trailing_zeros()),
            ),
        _ => family.body().to_string(),
    };
    format!("{}\n{body}", prelude(arith))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_parses_and_validates_with_naga() {
        for (family, arith) in Family::ALL
            .iter()
            .flat_map(|&f| [(f, Arith::Portable), (f, Arith::Int64)])
        {
            let src = source(family, arith);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{}: {}", family.file_name(), e.emit_to_string(&src)));
            let caps = match arith {
                Arith::Portable => naga::valid::Capabilities::empty(),
                Arith::Int64 => naga::valid::Capabilities::SHADER_INT64,
            };
            let mut validator =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
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
    fn the_int64_prelude_replaces_only_the_wide_products() {
        let (p, w) = (prelude(Arith::Portable), prelude(Arith::Int64));
        for src in [&p, &w] {
            assert_eq!(src.matches("fn mul_wide(").count(), 1);
            assert_eq!(src.matches("fn mul_hi(").count(), 1);
            assert!(src.contains("fn barrett_reduce_wide("));
        }
        assert!(w.contains("u64(a) * u64(b)") && !p.contains("u64"));
        assert_eq!((Arith::Portable.shoup(), Arith::Portable.barrett()), (6, 9));
        assert_eq!((Arith::Int64.shoup(), Arith::Int64.barrett()), (3, 3));
    }

    #[test]
    fn tile_constant_matches_the_shader() {
        for (family, tile) in [(Family::Ntt, NTT_TILE), (Family::NttWide, NTT_TILE_WIDE)] {
            let src = source(family, Arith::Portable);
            assert!(src.contains(&format!("const TILE: u32 = {tile}u;")));
            assert!(src.contains(&format!(
                "const LOG_TILE: u32 = {}u;",
                tile.trailing_zeros()
            )));
        }
        assert!(Family::Rns
            .body()
            .contains(&format!("const MAX_GROUP: u32 = {RNS_MAX_GROUP}u;")));
        let linear = Family::Linear.body();
        for (name, v) in [("TC", LINEAR_TC), ("TM", LINEAR_TM), ("TK", LINEAR_TK)] {
            assert!(
                linear.contains(&format!("const {name}: u32 = {v}u;")),
                "{name}"
            );
        }
        for family in Family::ALL {
            assert!(
                family.body().contains("@workgroup_size(256)"),
                "{} must use 256 invocations",
                family.file_name()
            );
        }
    }
}
