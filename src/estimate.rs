//! Remaining-time estimates and stall detection (being written).
