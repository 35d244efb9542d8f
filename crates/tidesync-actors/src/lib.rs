//! tidesync-actors
