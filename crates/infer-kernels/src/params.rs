//! Kernel parameters: one definition gives both sides of a uniform block.
//!
//! [`params!`] declares a `#[repr(C)]` Pod struct of `u32` / `f32` fields and, from the same
//! field list, the WGSL `struct Params` the kernel reads (as [`Params::WGSL`]). The registry
//! prepends that text to the kernel's source ([`crate::Kernel::source_for`]), so no WGSL file
//! declares its own `Params` and the two sides cannot drift apart.

/// A kernel's uniform parameters: the Rust value uploaded to binding 0 and the WGSL
/// declaration of the same layout.
pub trait Params: bytemuck::Pod {
    /// `struct Params { .. }` in WGSL, field for field the Rust struct.
    const WGSL: &'static str;
}

/// Declares a params struct and its WGSL twin:
///
/// ```ignore
/// params! {
///     /// What it is for.
///     pub(crate) struct SoftcapParams { n: u32, cap: f32, _pad0: u32, _pad1: u32 }
/// }
/// ```
///
/// Only `u32` and `f32` fields (their WGSL names are the same); padding is spelled out as
/// fields, since WGSL arrays in a uniform block have a 16-byte stride.
macro_rules! params {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fm:meta])* $field:ident : $ty:ident),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fm])* pub(crate) $field: $ty),*
        }

        impl $crate::params::Params for $name {
            const WGSL: &'static str = concat!(
                "struct Params {\n",
                $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                "}\n"
            );
        }
    };
}

pub(crate) use params;

#[cfg(test)]
mod tests {
    use super::Params;

    params! {
        struct Demo { n: u32, scale: f32, _pad0: u32 }
    }

    #[test]
    fn wgsl_lists_the_rust_fields_in_order() {
        assert_eq!(
            Demo::WGSL,
            "struct Params {\n    n: u32,\n    scale: f32,\n    _pad0: u32,\n}\n"
        );
        let d = Demo {
            n: 1,
            scale: 2.0,
            _pad0: 0,
        };
        assert_eq!(bytemuck::bytes_of(&d).len(), 12);
    }
}
