//! poolkeeper: a self-hosted service and CLI that manages pools of provider accounts.
//! See DESIGN.md in the project's shared notes and the README (and docs/) for the big picture.

pub mod app;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod domain;
pub mod files;
pub mod http;
pub mod import;
pub mod jobs;
pub mod lease_exec;
pub mod metrics;
pub mod providers;
pub mod server;
pub mod service;
pub mod store;
