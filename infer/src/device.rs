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
    /// NVIDIA GPU `N` through CUDA (bf16); needs the `cuda` feature.
    Cuda(usize),
    /// A Vulkan device through wgpu (f32); needs the `vulkan` feature.
    Vulkan(VulkanDevice),
}

/// Which Vulkan device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VulkanDevice {
    /// wgpu's choice (high-power GPUs first).
    Default,
    /// The `N`th discrete GPU.
    Discrete(usize),
    /// A CPU implementation of Vulkan (Mesa's lavapipe).
    Cpu,
}

impl DeviceChoice {
    /// Parses `auto`, `flex` (or `cpu`), `cuda`, `cuda:N`, `vulkan`, `vulkan:N` or `vulkan:cpu`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => (k, Some(i)),
            None => (s.as_str(), None),
        };
        let number = |i: &str| {
            i.parse::<usize>()
                .map_err(|_| format!("`{s}`: the device index must be a number (e.g. {kind}:0)"))
        };
        match (kind, index) {
            ("auto", None) => Ok(Self::Auto),
            ("flex" | "cpu", None) => Ok(Self::Flex),
            ("cuda", None) => Ok(Self::Cuda(0)),
            ("cuda", Some(i)) => Ok(Self::Cuda(number(i)?)),
            ("vulkan", None) => Ok(Self::Vulkan(VulkanDevice::Default)),
            ("vulkan", Some("cpu")) => Ok(Self::Vulkan(VulkanDevice::Cpu)),
            ("vulkan", Some(i)) => Ok(Self::Vulkan(VulkanDevice::Discrete(number(i)?))),
            _ => Err(format!(
                "`{s}` is not a device: use auto, flex, cuda, cuda:N, vulkan, vulkan:N or vulkan:cpu"
            )),
        }
    }
}

impl DeviceChoice {
    /// The device and the weight dtype used on it.
    pub fn resolve(self) -> Result<(Device, DType)> {
        match self {
            Self::Auto => {
                // The first compiled-in GPU that answers, else the CPU.
                let candidates = [
                    (cfg!(feature = "cuda"), Self::Cuda(0)),
                    (
                        cfg!(feature = "vulkan"),
                        Self::Vulkan(VulkanDevice::Default),
                    ),
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
            Self::Cuda(index) => {
                let _ = index;
                #[cfg(feature = "cuda")]
                return probe(Device::cuda(index), &format!("CUDA device {index}"))
                    .map(|d| (d, DType::BF16));
                #[allow(unreachable_code)]
                {
                    Err(InferError::Context(
                        "this binary was built without the `cuda` feature; rebuild with --features cuda (needs network access at build time)"
                            .into(),
                    ))
                }
            }
            Self::Vulkan(which) => {
                let _ = which;
                #[cfg(feature = "vulkan")]
                {
                    use burn::tensor::DeviceKind;
                    let (kind, name) = match which {
                        VulkanDevice::Default => (DeviceKind::DefaultDevice, "Vulkan".to_string()),
                        VulkanDevice::Discrete(i) => (
                            DeviceKind::DiscreteGpu(i),
                            format!("Vulkan discrete GPU {i}"),
                        ),
                        VulkanDevice::Cpu => (DeviceKind::Cpu, "Vulkan CPU (lavapipe)".to_string()),
                    };
                    return probe(Device::vulkan(kind), &name).map(|d| (d, DType::F32));
                }
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
            "no usable {name} was found (is that GPU present, with its driver installed?); use --device flex to run on the CPU"
        )));
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_with_indices_and_bad_ones_say_what_is_accepted() {
        assert_eq!(DeviceChoice::parse("auto"), Ok(DeviceChoice::Auto));
        assert_eq!(DeviceChoice::parse("cpu"), Ok(DeviceChoice::Flex));
        assert_eq!(DeviceChoice::parse("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("CUDA:3"), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(
            DeviceChoice::parse("vulkan:1"),
            Ok(DeviceChoice::Vulkan(VulkanDevice::Discrete(1)))
        );
        assert_eq!(
            DeviceChoice::parse("vulkan:cpu"),
            Ok(DeviceChoice::Vulkan(VulkanDevice::Cpu))
        );
        let e = DeviceChoice::parse("cuda:x").unwrap_err();
        assert!(e.contains("must be a number"), "{e}");
        let e = DeviceChoice::parse("tpu").unwrap_err();
        assert!(e.contains("cuda:N") && e.contains("vulkan:cpu"), "{e}");
        assert!(DeviceChoice::parse("flex:1").is_err());
    }
}
