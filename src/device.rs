//! Device choice. `Auto` takes the first CUDA device when this build has CUDA and one works,
//! otherwise the CPU, and logs why. Only this module and `src/ops` know that CUDA exists.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where the encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device if this build supports CUDA and one can be opened, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `n`; an error if it cannot be opened.
    Cuda(usize),
}

impl DeviceChoice {
    /// Opens the device.
    ///
    /// # Errors
    /// [`Error::Device`] when `Cuda(n)` is asked for and this build lacks CUDA or the device
    /// cannot be opened. `Auto` never fails: it falls back to the CPU and logs the reason.
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
            DeviceChoice::Cuda(n) => open_cuda(n),
            DeviceChoice::Auto => match open_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::info!(reason = %e, "using the CPU");
                    Ok(candle_core::Device::Cpu)
                }
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<candle_core::Device> {
    // `Device::cuda_if_available` returns the error instead of falling back, so we try directly.
    candle_core::Device::new_cuda(n)
        .map_err(|e| Error::Device(format!("CUDA device {n} cannot be opened: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<candle_core::Device> {
    Err(Error::Device(format!(
        "CUDA device {n} requested, but this build has no CUDA support \
         (rebuild with `--features cuda` on a host with the CUDA libraries)"
    )))
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(Error::Config(format!(
                    "unknown device {s:?}: expected auto, cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_always_opens_something() {
        assert!(DeviceChoice::Auto.open().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_support_is_a_clear_error() {
        let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
