//! tidesync-transport-rest (being written)
