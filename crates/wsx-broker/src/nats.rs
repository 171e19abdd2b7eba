//! The NATS driver (stub until the NATS step).
use crate::{Outgoing, Shared};
use std::sync::Arc;
use tokio::sync::mpsc;
use wsx::pubsub::WeakHub;
pub(crate) async fn run(_shared: &Arc<Shared>, _hub: &WeakHub, _rx: &mut mpsc::Receiver<Outgoing>) {
}
