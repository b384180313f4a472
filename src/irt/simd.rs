//! Runtime dispatch of the vectorized loops of the selection kernels to the
//! widest instruction set the CPU has: AVX2 (`x86-64-v3`) where present, the
//! build's baseline (SSE2 on x86-64) otherwise, through [`pulp::Arch`].
//!
//! The loops stay plain Rust over slices; the compiler vectorizes the closure
//! once per instruction set, and the dispatch picks one at run time (the
//! detection is done once). Rust never fuses `a * b + c` into a fused
//! multiply-add, nor reorders floating-point operations, so every
//! instruction set computes the same bits: the blocks' and tables' bit-for-bit
//! tests compare the dispatched kernels with the scalar per-item formulas.

use std::sync::OnceLock;

/// Runs `f` compiled for the best instruction set available. `f` itself
/// (`vectorized(#[inline(always)] || ...)`) and what it calls must be inlined
/// (`#[inline(always)]`) to be compiled for that set.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    dispatch(f)
}

/// Runs `op` with the best instruction set available: for kernels written
/// against [`pulp::Simd`]'s vectors, where the compiler's own vectorization
/// of plain loops goes astray.
#[inline(always)]
pub(crate) fn dispatch<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    static ARCH: OnceLock<pulp::Arch> = OnceLock::new();
    ARCH.get_or_init(pulp::Arch::new).dispatch(op)
}
