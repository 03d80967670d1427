//! Fetching model files from the Hugging Face hub through hf-hub, honouring `HF_HOME` (cache
//! location) and `HF_HUB_OFFLINE` (cache only, no network), as the Python libraries do.

use std::path::PathBuf;

use crate::error::{Error, Result};

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "False"))
}

/// Returns the local directory holding `files` of model `repo`, downloading what the cache
/// lacks unless offline. All files end up in one snapshot directory.
///
/// # Errors
/// [`Error::Hub`] naming the file that could not be found or fetched.
pub fn fetch_model(repo: &str, files: &[&str]) -> Result<PathBuf> {
    let mut dir = None;
    for file in files {
        let path = if offline() {
            hf_hub::Cache::from_env()
                .model(repo.to_string())
                .get(file)
                .ok_or_else(|| {
                    Error::Hub(format!(
                        "{repo}/{file} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
                    ))
                })?
        } else {
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(false)
                .build()
                .map_err(|e| Error::Hub(format!("cannot start the hub client: {e}")))?;
            api.model(repo.to_string())
                .get(file)
                .map_err(|e| Error::Hub(format!("cannot fetch {repo}/{file}: {e}")))?
        };
        dir = path.parent().map(PathBuf::from);
    }
    dir.ok_or_else(|| Error::Hub(format!("no files requested from {repo}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn offline_cache_miss_is_a_clear_error() {
        // A fresh HF_HOME with offline mode: nothing may touch the network.
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("HF_HOME", dir.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let err = super::fetch_model("sentence-transformers/all-MiniLM-L6-v2", &["config.json"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    }
}
