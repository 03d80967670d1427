//! Finding, verifying and loading weight files. Every file a model uses is checked against the
//! sha256 its manifest pins before a byte of it is trusted; tensors are checked for NaN/Inf.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Hex sha256 of a file, streamed.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `path` against the pinned hex sha256 `expected`.
///
/// # Errors
/// [`Error::ModelFile`] when the file is missing, [`Error::Checksum`] when it differs.
pub fn verify_file(path: &Path, expected: &str) -> Result<()> {
    if !path.is_file() {
        return Err(Error::model_file(
            path,
            "not found (run scripts/setup.sh, or pass the right model directory)",
        ));
    }
    let found = sha256_file(path)?;
    if !found.eq_ignore_ascii_case(expected) {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

/// Checks every `(file name → sha256)` pin of a manifest inside `dir`.
///
/// # Errors
/// As [`verify_file`], for the first file that fails.
pub fn verify_all(dir: &Path, pins: &BTreeMap<String, String>) -> Result<()> {
    for (name, sha) in pins {
        verify_file(&dir.join(name), sha)?;
    }
    Ok(())
}

/// Reads every tensor of a safetensors file, converted to `dtype` on `device`, refusing
/// non-finite values so that a corrupted file never turns into silent garbage.
///
/// # Errors
/// [`Error::ModelFile`] naming the file for unreadable, malformed or non-finite content.
pub fn load_safetensors(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::model_file(path, format!("not a readable safetensors file: {e}")))?;
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        if t.dtype().is_float() {
            let t = t.to_dtype(DType::F32)?;
            let finite = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .all(|v| v.is_finite());
            if !finite {
                return Err(Error::model_file(
                    path,
                    format!("tensor {name} holds NaN or Inf"),
                ));
            }
            out.insert(name, t.to_dtype(dtype)?.to_device(device)?);
        } else {
            out.insert(name, t.to_device(device)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(verify_file(
            &p,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        .is_ok());
        let err = verify_file(&p, "00").unwrap_err().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("abc"),
            "{err}"
        );
        let err = verify_file(&dir.path().join("nope"), "00")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn non_finite_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let t = Tensor::new(&[1.0f32, f32::NAN], &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("w".to_string(), t)]), &p).unwrap();
        let err = load_safetensors(&p, DType::F32, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NaN") && err.contains("w.safetensors"),
            "{err}"
        );
    }
}
