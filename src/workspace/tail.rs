//! The live-tail hub. One LISTEN connection per server (on the request role: LISTEN needs
//! no grant) receives `palisade_events` (payload: a conversation id) and `palisade_access`
//! (something that may take access away changed). Notifications carry wake-ups, never
//! data: each subscriber then reads the new events itself, in its own request
//! transaction, under its own policies. A lost connection is re-established and every
//! subscriber woken, so nothing committed meanwhile is missed (they read by sequence).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::state::State;

/// Wake-up channels: one per conversation with subscribers, one for access changes.
pub struct Tails {
    conversations: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    access: watch::Sender<u64>,
    /// Segment bytes shared by the subscribers of a conversation.
    pub segments: SegmentCache,
}

impl Default for Tails {
    fn default() -> Self {
        Self {
            conversations: Mutex::new(HashMap::new()),
            access: watch::channel(0).0,
            segments: SegmentCache::default(),
        }
    }
}

/// What a subscriber waits on.
pub struct Subscription {
    pub events: watch::Receiver<u64>,
    pub access: watch::Receiver<u64>,
}

impl Tails {
    pub fn subscribe(&self, conversation_id: Uuid) -> Subscription {
        let mut map = self.conversations.lock().expect("tails lock");
        // Drop channels nobody listens to any more (bounded by live subscribers).
        map.retain(|_, tx| tx.receiver_count() > 0);
        let events = map
            .entry(conversation_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            events,
            access: self.access.subscribe(),
        }
    }

    /// Wakes the subscribers of one conversation.
    pub fn wake(&self, conversation_id: Uuid) {
        let map = self.conversations.lock().expect("tails lock");
        if let Some(tx) = map.get(&conversation_id) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every subscriber (access changed, or the listener reconnected).
    pub fn wake_all(&self) {
        self.access.send_modify(|n| *n += 1);
    }

    /// Live subscriptions (for tests and metrics).
    pub fn subscribers(&self) -> usize {
        let map = self.conversations.lock().expect("tails lock");
        map.values().map(|tx| tx.receiver_count()).sum()
    }
}

/// Listens for as long as the server runs (the task is dropped at shutdown),
/// reconnecting after a lost connection.
pub async fn listen(state: State, config: tokio_postgres::Config) {
    let mut delay = Duration::from_millis(100);
    loop {
        let error = listen_once(&state, &config).await;
        tracing::warn!(error = %error, "live tail: LISTEN connection lost; reconnecting");
        state.tails.wake_all();
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Runs one LISTEN connection until it fails; returns why.
async fn listen_once(state: &State, config: &tokio_postgres::Config) -> String {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(Ok((n.channel().to_owned(), n.payload().to_owned())));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
        let _ = tx.send(Err("connection closed".to_owned()));
    });
    if let Err(e) = client
        .batch_execute("listen palisade_events; listen palisade_access")
        .await
    {
        driver.abort();
        return e.to_string();
    }
    // Anything committed while no connection listened is read now.
    state.tails.wake_all();
    let error = loop {
        match rx.recv().await {
            Some(Ok((channel, payload))) => {
                if channel == "palisade_events" {
                    if let Ok(id) = payload.parse::<Uuid>() {
                        state.tails.wake(id);
                    }
                } else {
                    state.tails.wake_all();
                }
            }
            Some(Err(e)) => break e,
            None => break "connection closed".to_owned(),
        }
    };
    driver.abort();
    error
}

/// Decoded, checksum-verified segments recently read by live tails. When an append wakes
/// a thousand subscribers of one conversation, each still reads the segment rows under
/// its own policies (RLS decides), but the segment's bytes are fetched from the object
/// store once: the first reader fetches, the others wait for it (single flight).
/// Segments are immutable, so an entry never goes stale; the oldest are dropped past
/// `MAX_SEGMENTS`. Paged reads (`GET .../events`) do not use it.
pub struct SegmentCache {
    inner: Mutex<CacheInner>,
}

type Slot = std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<Vec<bytes::Bytes>>>>;

#[derive(Default)]
struct CacheInner {
    slots: HashMap<Uuid, Slot>,
    order: std::collections::VecDeque<Uuid>,
}

impl SegmentCache {
    /// Segments kept: each at most 4 MB (64 MB in the worst case), typically a few KB.
    pub const MAX_SEGMENTS: usize = 16;

    /// The slot of `segment_id`, created empty if absent.
    pub fn slot(&self, segment_id: Uuid) -> Slot {
        let mut inner = self.inner.lock().expect("segment cache lock");
        if let Some(slot) = inner.slots.get(&segment_id) {
            return std::sync::Arc::clone(slot);
        }
        let slot = Slot::default();
        inner.slots.insert(segment_id, std::sync::Arc::clone(&slot));
        inner.order.push_back(segment_id);
        while inner.order.len() > Self::MAX_SEGMENTS {
            if let Some(old) = inner.order.pop_front() {
                inner.slots.remove(&old);
            }
        }
        slot
    }
}

impl Default for SegmentCache {
    fn default() -> Self {
        Self {
            inner: Mutex::new(CacheInner::default()),
        }
    }
}
