//! Text views of snapshots (being written).
