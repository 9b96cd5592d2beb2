//! A live terminal view of running operations (feature `terminal`); being written.
