//! switchyard: a Kafka wire-protocol proxy that moves live applications from
//! one Kafka cluster to another without downtime or lost records.

pub mod admin;
pub mod cli;
pub mod config;
pub mod cutover;
pub mod error;
pub mod metrics;
pub mod mirror;
pub mod protocol;
pub mod proxy;
pub mod rewrite;
pub mod state;
pub mod status;
pub mod translate;

#[cfg(feature = "demo")]
pub mod demo;

pub use config::Config;
pub use proxy::Proxy;
