//! Header values and templates of any text: `Retry-After` (never an absurd or overflowing
//! delay), `Link`, route templates (parse and render), timestamps. Must never panic.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidesync_transport_rest::template::Value as Slot;
use tidesync_transport_rest::{Template, TimeFormat, link_next};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    if let Some(delay) = tidesync_transport_rest::classify::parse_retry_after(text, now) {
        let _ = delay.as_millis();
    }
    if let Some(target) = link_next(text) {
        assert!(text.contains(&target));
    }
    if let Ok(template) = Template::parse(text) {
        let _ = template.render::<()>(true, |name| Ok(Slot::Text(name.repeat(2))));
        let _ = template.render::<()>(false, |_| Ok(Slot::Absent));
    }
    for format in [TimeFormat::EpochMs, TimeFormat::EpochS, TimeFormat::Rfc3339] {
        if let Some(ns) = format.parse(&Value::String(text.to_owned())) {
            let _ = format.format(ns);
        }
    }
    let _ = tidesync_transport_rest::time::parse_rfc3339(text);
});
