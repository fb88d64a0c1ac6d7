//! The one place a tensor's values are copied to the host (a leaf module: the model, the caches,
//! the heads and decoding all use it, and it uses none of them).

use burn::tensor::{DType, Tensor};

/// Copies a tensor's values to the host as f32 (converting from its dtype), row-major.
pub fn to_host_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    let t = if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    };
    t.into_data()
        .try_into_vec::<f32>()
        .expect("an f32 tensor converts to f32")
}
