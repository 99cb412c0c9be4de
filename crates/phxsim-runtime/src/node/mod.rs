//! The cluster node driver.
