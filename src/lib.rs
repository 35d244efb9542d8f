//! tidesync
