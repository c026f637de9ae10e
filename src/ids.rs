//! Identifiers shared by the endpoint, its connections and the events
//! (one small module, so that `event`, `endpoint` and `connection` do not
//! import each other in a circle).

/// Identifies one transport (connection) accepted by an
/// [`Endpoint`](crate::Endpoint). Unique within the endpoint; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransportId(pub u64);

/// Identifies one session of an [`Endpoint`](crate::Endpoint). Unique within
/// the endpoint; never reused. Ids grow: a smaller id is an older session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);
