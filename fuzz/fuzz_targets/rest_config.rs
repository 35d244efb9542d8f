//! A REST transport config file of any bytes, as TOML and as JSON: parse, then validate.
//! Must never panic; a parse or validation failure is an error value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidesync_transport_rest::RestConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = toml::from_str::<RestConfig>(text) {
        let _ = config.validate();
    }
    if let Ok(config) = RestConfig::from_json(text) {
        let _ = config.validate();
    }
});
