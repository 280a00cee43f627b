#![no_main]

#[path = "common/rewrite.rs"]
mod common;

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use libfuzzer_sys::fuzz_target;
use switchyard::rewrite::ResponseRewrite;

fuzz_target!(|data: &[u8]| {
    common::run::<ApiVersionsResponse>(ResponseRewrite::ApiVersions, ApiKey::ApiVersions, data)
});
