//! tidesync-store-redb
