//! Model-directory metadata from untrusted bytes: the tremble manifest (with its fusion) and
//! the encoder's config.json parse into checked values or clear errors, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tremble::models::bert::BertConfig;
use tremble::DetectorManifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = DetectorManifest::parse(text, Path::new("tremble.json")) {
        assert!(m.window.validate().is_ok());
        if let Some(f) = &m.fusion {
            let _ = f.validate();
        }
    }
    let _ = BertConfig::parse(text, Path::new("config.json"));
});
