//! A pickle codec that executes nothing.
