//! The CPU fast path (DESIGN §6): on flex with f32 weights the forward pass runs here, on host
//! memory, with one packed skinny-matmul kernel for every product and a host KV cache laid out for
//! it. The burn-ops path ([`crate::model`]) stays for GPUs and is tested against this one.

pub mod kernels;
pub mod kv;
pub mod layer;
pub mod quant;

/// Runs `f` on a worker of rayon's global pool and returns its result (DESIGN §6.4).
///
/// Every product of the fast path is split over the pool. Called from a thread outside the pool,
/// each of a forward pass's ~300 products parks the caller and wakes it again once the pool has
/// finished; on 2 cores those context switches cost about a quarter of a decode step. Called from
/// inside the pool, a product starts on the calling worker and is only shared with the others.
/// The binaries run their commands through this; a library caller that decodes on the CPU should
/// too. Not for code that blocks on other threads which themselves use the pool (training's worker
/// threads): the blocked worker would be lost to them.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // Workers get the main thread's usual stack (a command may run deep recursions, such as the
    // tokenizer's), instead of the 2 MiB default of spawned threads. The global pool can only be
    // built once; if something built it already, that pool serves.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    rayon::scope(|_| f())
}
