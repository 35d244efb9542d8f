//! tidesync-store-memory
