//! Any bytes as the answer on host-agent's local status socket (what
//! `host-agent status` reads): parsing and rendering must never panic, and
//! the rendering never passes a control character (a terminal escape from
//! a hostile DPU's text) to the operator's terminal.
#![no_main]

use host_agent::local_status::StatusReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = serde_json::from_slice::<StatusReport>(data) else {
        return;
    };
    let text = report.render();
    if let Some(c) = text
        .chars()
        .find(|c| *c != '\n' && (c.is_control() || *c == '\u{7f}'))
    {
        panic!("control character {c:?} in the rendered status:\n{text}");
    }
});
