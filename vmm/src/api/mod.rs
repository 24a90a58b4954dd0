//! The HTTP/1.1 + JSON API on a Unix socket, compatible with Firecracker's paths and bodies.
//!
//! Data flow: client -> Unix socket -> connection thread ([`server`]: [`http`] parses the request,
//! [`routes`] turns it into an [`routes::Action`] or an [`ApiError`]) -> channel + EventFd
//! ([`ApiChannel`]) -> the VMM thread: before the VM exists its pre-boot loop hands the request to
//! [`crate::controller::PrebootController`]; once it runs, [`crate::controller::RuntimeApi`] (an event
//! subscriber) hands it to [`crate::controller::RuntimeController`] -> the answer back on a per-request
//! channel -> HTTP response. Everything that reads or changes the VM happens on the VMM thread; the API
//! threads hold no VM state.
//!
//! The parsing entry points are plain functions of their input, callable without a VM (unit tests, fuzz
//! targets): [`http::read_request`] over any `Read`, [`routes::route`] over (method, path, body), and
//! [`crate::config::VmConfig`] / [`crate::config::DriveConfig`] from JSON with serde.

pub mod http;
pub mod routes;
pub mod server;

pub use routes::ApiError;
pub use server::{
    start, ApiChannel, ApiMetrics, ApiRequest, Outcome, Reply, ServerError, SocketGuard,
};
