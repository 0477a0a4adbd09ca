//! Typed subscriptions: a [`Subscription`] whose events come decoded and
//! upcast, like [`Client::read_typed`](crate::Client::read_typed)'s.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;

use super::typed::{Event, EventError, Typed, decode};
use super::upcast::Upcasters;
use crate::{Checkpoint, RecordedEvent, Subscription, SubscriptionMessage};

/// What a [`TypedSubscription`] yields, in the subscription's order.
#[derive(Debug)]
pub enum TypedMessage<E> {
    /// An application event, decoded and upcast to its current schema.
    Event(Typed<E>),
    /// A system event (its type starts with `$`): stream metadata set, a
    /// truncation, a deletion. A projection drops or trims its state for
    /// the stream it names.
    System(RecordedEvent),
    /// An event that does not decode as `E` (another application's type
    /// on `$all`, data that does not match, a schema with no upcaster).
    /// The subscription goes on: skip it, or stop, as the application
    /// decides; either way it can be checkpointed past.
    Undecodable {
        /// The event as stored.
        event: RecordedEvent,
        /// Why it did not decode.
        error: EventError,
    },
    /// `CaughtUp`, `FellBehind` or `Checkpoint`, as the subscription said.
    Progress(SubscriptionMessage),
}

/// A subscription whose events are decoded as `E` through `upcasters`
/// ([`Subscription::typed`]). Ends with the subscription's error, if any,
/// as a [`crate::Error`].
pub struct TypedSubscription<E> {
    inner: Subscription,
    upcasters: Arc<Upcasters>,
    _event: PhantomData<fn() -> E>,
}

impl Subscription {
    /// This subscription, with its events decoded as `E` and upcast to
    /// their current schema versions (see [`crate::es`]).
    pub fn typed<E: Event>(self, upcasters: Arc<Upcasters>) -> TypedSubscription<E> {
        TypedSubscription {
            inner: self,
            upcasters,
            _event: PhantomData,
        }
    }
}

impl<E: Event> TypedSubscription<E> {
    /// The resume point after everything yielded so far
    /// ([`Subscription::resume_point`]).
    pub fn resume_point(&self) -> Checkpoint {
        self.inner.resume_point()
    }

    /// The resume point after `message`, one this subscription yielded
    /// ([`Subscription::checkpoint_after`]).
    pub fn checkpoint_after(&self, message: &TypedMessage<E>) -> Option<Checkpoint> {
        match message {
            TypedMessage::Event(t) => Some(self.inner.checkpoint_after_event(&t.recorded)),
            TypedMessage::System(e) | TypedMessage::Undecodable { event: e, .. } => {
                Some(self.inner.checkpoint_after_event(e))
            }
            TypedMessage::Progress(m) => self.inner.checkpoint_after(m),
        }
    }

    /// The subscription underneath.
    pub fn into_inner(self) -> Subscription {
        self.inner
    }
}

impl<E: Event> Stream for TypedSubscription<E> {
    type Item = crate::Result<TypedMessage<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let message = match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(m))) => m,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let typed = match message {
            SubscriptionMessage::Event(event) if event.event_type.starts_with('$') => {
                TypedMessage::System(event)
            }
            SubscriptionMessage::Event(event) => {
                // `decode` takes the event; keep a cheap copy (its data
                // are shared bytes) for the error case.
                match decode(event.clone(), &this.upcasters) {
                    Ok(t) => TypedMessage::Event(t),
                    Err(error) => TypedMessage::Undecodable { event, error },
                }
            }
            other => TypedMessage::Progress(other),
        };
        Poll::Ready(Some(Ok(typed)))
    }
}

impl<E> std::fmt::Debug for TypedSubscription<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedSubscription")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
