//! A str0m client used by the tests and the load generator: publishes synthetic
//! VP8 + Opus, or subscribes and counts what arrives. Not for production clients.
