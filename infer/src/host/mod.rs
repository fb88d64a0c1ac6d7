//! The CPU fast path (DESIGN §6): on flex with f32 weights the forward pass runs here, on host
//! memory, with one packed skinny-matmul kernel for every product and a host KV cache laid out for
//! it. The burn-ops path ([`crate::model`]) stays for GPUs and is tested against this one.

pub mod int8;
pub mod kernels;
pub mod kv;
pub mod layer;
pub mod quant;
pub mod weight;

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

/// `TOKENSWIFT_SPIN=0`: forward passes leave the pool's idle workers asleep between products
/// (for A/B runs of [`busy_pool`]).
static SPIN: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("TOKENSWIFT_SPIN").as_deref() != Ok("0"));

/// Runs `f` (one forward pass) with the pool's other workers kept busy looking for work
/// (DESIGN §6.4).
///
/// rayon parks a worker after ~60 idle rounds and wakes it with a futex when the next job is
/// pushed. A forward pass hands the pool ~300 short products with serial work (norms, RoPE,
/// softmax of a few rows) between them, long enough for the other workers to fall asleep, so
/// nearly every product paid a wake-up: on a 2-core VM 10–17 % of a decode step's samples were in
/// `try_to_wake_up`. Here each other worker runs a job that steals and runs the pass's jobs
/// ([`rayon::yield_now`]) until `f` returns — the polling that llama.cpp's thread pool does. One
/// wake-up per pass remains (the spinners' start). Only from inside the pool (see [`on_pool`]);
/// elsewhere `f` just runs.
pub fn busy_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 || rayon::current_thread_index().is_none() || !*SPIN {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 0..others {
            s.spawn(|_| {
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let r = f();
        done.store(true, Ordering::Release);
        r
    })
}
