//! Fault-injecting TCP relay for tests and the demo (to be written).
