//! Hostile-input tests for every decoder of bytes read from disk.
