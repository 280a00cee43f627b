#![no_main]

#[path = "common/rewrite.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use switchyard::rewrite::ResponseRewrite;

fuzz_target!(|data: &[u8]| common::run(ResponseRewrite::FindCoordinator, data));
