//! Any text as ovs-vswitchd's answer to `dpctl/ipf-get-status`: the counters
//! or an error naming the missing one, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = dpu_agent::fragments::parse_status(&text);
});
