//! Host simulation platform.
