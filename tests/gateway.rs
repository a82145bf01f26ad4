//! Integration tests of the proxy (being written).
