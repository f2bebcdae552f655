//! Any config file text: parsing and validation of both agents' configs
//! must return a value or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = dpu_agent::config::DpuConfig::parse(text) {
        let _ = config.validate();
    }
    if let Ok(config) = host_agent::config::HostConfig::parse(text) {
        if let Ok(valid) = config.validate() {
            let _ = valid.proposal();
        }
    }
});
