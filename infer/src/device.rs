//! Choosing the compute device and the weight dtype used on it.

use burn::tensor::{DType, Device};

use crate::error::{InferError, Result};

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first compiled-in device that works: cuda, then vulkan, then flex.
    Auto,
    /// burn's flex CPU backend (f32).
    Flex,
    /// NVIDIA GPU through CUDA (bf16); needs the `cuda` feature.
    Cuda,
    /// Any Vulkan GPU through wgpu (f32); needs the `vulkan` feature.
    Vulkan,
}

impl DeviceChoice {
    /// The device and the weight dtype used on it.
    pub fn resolve(self) -> Result<(Device, DType)> {
        match self {
            Self::Auto => {
                // The first compiled-in GPU that answers, else the CPU.
                let candidates = [
                    (cfg!(feature = "cuda"), Self::Cuda),
                    (cfg!(feature = "vulkan"), Self::Vulkan),
                    (cfg!(feature = "flex"), Self::Flex),
                ];
                let mut last_error = None;
                for (_, choice) in candidates.into_iter().filter(|(built, _)| *built) {
                    match choice.resolve() {
                        Ok(r) => return Ok(r),
                        Err(e) => last_error = Some(e),
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    InferError::Context(
                        "this binary was built without any backend feature (flex, cuda, vulkan)"
                            .into(),
                    )
                }))
            }
            Self::Flex => {
                #[cfg(feature = "flex")]
                return Ok((Device::flex(), DType::F32));
                #[allow(unreachable_code)]
                {
                    Err(InferError::Context(
                        "this binary was built without the `flex` feature".into(),
                    ))
                }
            }
            Self::Cuda => {
                #[cfg(feature = "cuda")]
                return probe(Device::cuda(0), "CUDA").map(|d| (d, DType::BF16));
                #[allow(unreachable_code)]
                {
                    Err(InferError::Context(
                        "this binary was built without the `cuda` feature; rebuild with --features cuda (needs network access at build time)"
                            .into(),
                    ))
                }
            }
            Self::Vulkan => {
                #[cfg(feature = "vulkan")]
                return probe(
                    Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
                    "Vulkan",
                )
                .map(|d| (d, DType::F32));
                #[allow(unreachable_code)]
                {
                    Err(InferError::Context(
                        "this binary was built without the `vulkan` feature; rebuild with --features vulkan"
                            .into(),
                    ))
                }
            }
        }
    }
}

/// Runs one tiny operation on `device` in a separate thread, with panic messages silenced, so a
/// machine without the GPU or its driver gets one sentence instead of a backtrace from the
/// backend's threads.
#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn probe(device: Device, name: &str) -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let d = device.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ok = std::panic::catch_unwind(|| {
            burn::tensor::Tensor::<1>::zeros([1], &d).into_data();
        })
        .is_ok();
        let _ = tx.send(ok);
    });
    let ok = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or(false);
    std::panic::set_hook(hook);
    if !ok {
        return Err(InferError::Context(format!(
            "no usable {name} device was found (is a GPU with its driver installed?); use the flex device to run on the CPU"
        )));
    }
    Ok(device)
}
