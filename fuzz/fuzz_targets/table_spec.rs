//! Table declarations of any bytes, as TOML and JSON: parse, validate, build a schema, and
//! read keys of arbitrary records with it. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidesync_core::TableSpec;
use tidesync_core::local::Schema;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (spec_text, record_text) = text.split_once('\u{0}').unwrap_or((text, "{}"));
    let specs = [
        toml::from_str::<TableSpec>(spec_text).ok(),
        serde_json::from_str::<TableSpec>(spec_text).ok(),
    ];
    for spec in specs.into_iter().flatten() {
        let _ = spec.validate();
        if let Ok(schema) = Schema::new([spec.clone()]) {
            let _ = schema.table(&spec.name);
        }
        if let Ok(Value::Object(record)) = serde_json::from_str::<Value>(record_text) {
            let _ = spec.key_of(&record);
            let _ = spec.remote_key_of(&record);
        }
    }
});
