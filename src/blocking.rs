//! Blocking driver over `std::io` transports (to be written).
