//! The HTTP/1.1 + JSON API on a Unix socket, compatible with Firecracker's paths and bodies.
//!
//! Data flow: client -> Unix socket -> connection thread ([`server`]: [`http`] parses the request,
//! [`routes`] turns it into an [`routes::Action`] or an [`ApiError`]) -> channel + EventFd -> the VMM
//! thread's event manager ([`ApiEvents`]) -> [`crate::controller::Controller::handle`] -> the answer back on
//! a per-request channel -> HTTP response. Everything that reads or changes the VM happens on the VMM thread.

pub mod http;
pub mod routes;
pub mod server;

pub use routes::ApiError;
pub use server::{
    start, ApiEvents, ApiMetrics, ApiRequest, Outcome, Reply, ServerError, SocketGuard,
};
