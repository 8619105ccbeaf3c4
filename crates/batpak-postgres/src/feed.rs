//! Wake-ups: how waiting cursors and lossy subscribers of one [`PgStore`]
//! hear of commits from any process, and the lossy subscribers themselves.
//!
//! This module owns the store's delivery threads and what they share:
//! - the **hub**: a generation counter under a mutex and condition variable;
//!   every reason to look again (a local commit, a notification, a
//!   reconnect, the close) bumps it and wakes every waiting cursor;
//! - the **notifier** (started by the first commit of this handle): after
//!   each commit it sends `NOTIFY` on the store's channel from its own
//!   connection, outside the append's transaction, coalescing the commits
//!   that happened while the previous one was on the wire (ADR 0020 says
//!   why not inside the append);
//! - the **listener** (started by the first waiting cursor or subscriber):
//!   one dedicated connection that `LISTEN`s on the channel, pings it, and
//!   reconnects with backoff when it drops; after every (re)connect it
//!   wakes everyone, since a notification may have been lost meanwhile;
//! - the **dispatcher** of lossy subscriptions, run by the listener thread:
//!   one stable read of new events for all subscribers, offered to each
//!   without ever waiting for one.
//!
//! Nothing here decides what a reader may see: a notification only says
//! "look again"; the stable bound of the read decides (ADR 0018). A cursor
//! that hears nothing still reads every `poll_interval`.

use crate::cursor::Pager;
use crate::pool::{Conn, Manager, Pool};
use crate::schema::Sql;
use batpak::coordinate::Region;
use batpak::store::{Notification, StoreError, Subscription, SubscriptionFeed};
use parking_lot::{Condvar, Mutex};
use postgres::fallible_iterator::FallibleIterator;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the listener blocks on its socket before it looks at the
/// clock and the close flag again.
const TICK: Duration = Duration::from_millis(100);
/// Reconnect delays of the listener and the notifier.
const RECONNECT_FIRST: Duration = Duration::from_millis(10);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// Shortest time between two notifications of one handle: commits within it
/// are announced together. It bounds what notifying costs the server (one
/// small transaction per notification) whatever the append rate, for at
/// most this much added latency.
const NOTIFY_GAP: Duration = Duration::from_millis(5);
/// Events the dispatcher reads per round trip.
const DISPATCH_PAGE: usize = 1024;

/// The `LISTEN`/`NOTIFY` channel of the store in `schema`: a plain
/// identifier of fixed length (a schema name may be 63 bytes, a channel
/// name no longer than that), the same in every process (FNV-1a 64).
pub(crate) fn channel_name(schema: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in schema.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("batpak_{h:016x}")
}

#[derive(Default)]
struct Hub {
    generation: u64,
    closed: bool,
}

/// What the notifier has to announce.
#[derive(Default)]
struct Outbox {
    /// Highest position committed by this handle and not yet announced.
    pending: Option<u64>,
    started: bool,
}

/// One lossy subscriber and the position after which it wants events.
struct Subscriber {
    feed: SubscriptionFeed,
    after: Option<u64>,
    /// Positions at or above the stable bound that had already committed
    /// when the subscriber joined (a transaction older than the bound was
    /// still open then): not news to it. Ascending; passed ones are dropped.
    committed_before: std::collections::VecDeque<u64>,
}

#[derive(Default)]
struct Dispatch {
    subscribers: Vec<Subscriber>,
    /// Reads every new event for the subscribers (`Region::all()`).
    pager: Option<Pager>,
}

/// The delivery state shared by a [`crate::PgStore`], its cursors and its
/// threads.
pub(crate) struct Feed {
    pub(crate) channel: String,
    pub(crate) pool: Pool,
    pub(crate) sql: Arc<Sql>,
    pub(crate) poll_interval: Duration,
    pub(crate) page_size: usize,
    /// Transactions per window of a filtered cursor scan.
    pub(crate) window_xids: i64,
    notify: bool,
    capacity: usize,
    connector: Manager,
    hub: Mutex<Hub>,
    changed: Condvar,
    /// Highest position this process knows to be committed (its own
    /// commits and notifications from others): a cursor whose stable bound
    /// is at or below it knows an older transaction is holding it back, and
    /// looks again soon rather than at its next notification.
    announced: AtomicU64,
    outbox: Mutex<Outbox>,
    outbox_ready: Condvar,
    listening: AtomicBool,
    listener_started: AtomicBool,
    dispatch: Mutex<Dispatch>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Feed {
    pub(crate) fn new(
        config: &crate::PgConfig,
        pool: Pool,
        sql: Arc<Sql>,
    ) -> Result<Arc<Self>, StoreError> {
        let connector = Manager::new(config).map_err(|e| {
            StoreError::Configuration(format!(
                "invalid connection string {}: {e}",
                config.redacted_url()
            ))
        })?;
        Ok(Arc::new(Self {
            channel: channel_name(&config.schema),
            pool,
            sql,
            poll_interval: config.poll_interval,
            page_size: config.cursor_page_size as usize,
            window_xids: config.cursor_window(),
            notify: config.notify,
            capacity: config.broadcast_capacity,
            connector,
            hub: Mutex::new(Hub::default()),
            changed: Condvar::new(),
            announced: AtomicU64::new(0),
            outbox: Mutex::new(Outbox::default()),
            outbox_ready: Condvar::new(),
            listening: AtomicBool::new(false),
            listener_started: AtomicBool::new(false),
            dispatch: Mutex::new(Dispatch::default()),
            threads: Mutex::new(Vec::new()),
        }))
    }

    /// The current generation: pass it to [`Feed::wait`].
    pub(crate) fn generation(&self) -> u64 {
        self.hub.lock().generation
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.hub.lock().closed
    }

    /// Highest position known to be committed (see `announced`).
    pub(crate) fn announced(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// The listening connection is up (notifications from other processes
    /// are being heard).
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Wake every waiting cursor.
    fn wake(&self) {
        let mut hub = self.hub.lock();
        hub.generation = hub.generation.wrapping_add(1);
        self.changed.notify_all();
    }

    /// Sleep until the generation moves past `seen`, the store closes, or
    /// `until` passes (`None`: no time limit).
    pub(crate) fn wait(&self, seen: u64, until: Option<Instant>) {
        let mut hub = self.hub.lock();
        while hub.generation == seen && !hub.closed {
            match until {
                Some(t) => {
                    if self.changed.wait_until(&mut hub, t).timed_out() {
                        return;
                    }
                }
                None => self.changed.wait(&mut hub),
            }
        }
    }

    /// This handle committed events up to `position`: wake local cursors
    /// now, and have the notifier announce it to other processes.
    pub(crate) fn committed(self: &Arc<Self>, position: u64) {
        self.announced.fetch_max(position, Ordering::AcqRel);
        self.wake();
        if !self.notify {
            return;
        }
        let mut out = self.outbox.lock();
        out.pending = Some(out.pending.map_or(position, |p| p.max(position)));
        if !out.started {
            out.started = true;
            let feed = self.clone();
            self.spawn("batpak-pg-notify", move || feed.notifier());
        }
        self.outbox_ready.notify_one();
    }

    /// Make sure the listener runs (idempotent).
    pub(crate) fn listen(self: &Arc<Self>) {
        if self.listener_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let feed = self.clone();
        self.spawn("batpak-pg-listen", move || feed.listener());
    }

    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new().name(name.into()).spawn(f) {
            Ok(handle) => self.threads.lock().push(handle),
            // Delivery still works without it: cursors read every
            // poll_interval.
            Err(e) => {
                tracing::error!(error = %e, thread = name, "batpak: cannot start a delivery thread")
            }
        }
    }

    /// Stop: waiting cursors return, subscriptions end, threads exit within
    /// a tick.
    pub(crate) fn close(&self) {
        {
            let mut hub = self.hub.lock();
            hub.closed = true;
            hub.generation = hub.generation.wrapping_add(1);
            self.changed.notify_all();
        }
        {
            let _out = self.outbox.lock();
            self.outbox_ready.notify_all();
        }
        let mut d = self.dispatch.lock();
        d.subscribers.clear();
        d.pager = None;
    }

    /// [`Feed::close`], then wait for the threads (unless called on one).
    pub(crate) fn close_and_join(&self) {
        self.close();
        let me = std::thread::current().id();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    /// Sleep `d` unless the store closes first; false once closed.
    pub(crate) fn nap(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut hub = self.hub.lock();
        while !hub.closed {
            if self.changed.wait_until(&mut hub, until).timed_out() {
                return true;
            }
        }
        false
    }

    /// A dedicated connection (not from the pool: it stays with one
    /// thread), with the pool's session settings, named after its `role`.
    pub(crate) fn dedicated(&self, role: &str) -> Result<Conn, postgres::Error> {
        self.connector.connect_as(role)
    }

    /// The notifier thread: announce this handle's commits, coalescing
    /// those that arrive while a `NOTIFY` is on the wire and for
    /// [`NOTIFY_GAP`] after it. A notification it
    /// cannot send is dropped: readers find the events at their next poll.
    fn notifier(self: Arc<Self>) {
        let mut conn: Option<Conn> = None;
        let mut backoff = RECONNECT_FIRST;
        loop {
            let position = {
                let mut out = self.outbox.lock();
                loop {
                    if self.is_closed() {
                        return;
                    }
                    if let Some(p) = out.pending.take() {
                        break p;
                    }
                    self.outbox_ready.wait(&mut out);
                }
            };
            if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                match self.dedicated("notify") {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = RECONNECT_FIRST;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "batpak: notifier cannot connect; readers will poll");
                        if !self.nap(backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(RECONNECT_MAX);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let sent = c.statement("SELECT pg_notify($1, $2)").and_then(|st| {
                c.client
                    .execute(&st, &[&self.channel, &position.to_string()])
            });
            if let Err(e) = sent {
                tracing::debug!(error = %e, "batpak: notify failed; readers will poll");
                conn = None;
            }
            // Commits meanwhile wait for the next notification.
            std::thread::sleep(NOTIFY_GAP);
        }
    }

    /// The listener thread: hold a `LISTEN` connection, wake everyone on
    /// each notification and after each (re)connect, feed the lossy
    /// subscribers, and reconnect with backoff when the connection drops.
    fn listener(self: Arc<Self>) {
        let mut backoff = RECONNECT_FIRST;
        while !self.is_closed() {
            let mut conn = match self.dedicated("listen").and_then(|mut c| {
                c.client
                    .batch_execute(&format!("LISTEN {}", self.channel))
                    .map(|()| c)
            }) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "batpak: cannot listen for commits; readers poll meanwhile");
                    self.dispatch();
                    if !self.nap(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            backoff = RECONNECT_FIRST;
            self.listening.store(true, Ordering::Release);
            // Anything committed while nobody listened was not announced.
            self.wake();
            self.dispatch();
            let mut last_check = Instant::now();
            loop {
                if self.is_closed() {
                    return;
                }
                match self.next_notifications(&mut conn) {
                    Ok(0) => {}
                    Ok(_) => {
                        self.wake();
                        self.dispatch();
                        last_check = Instant::now();
                        continue;
                    }
                    Err(()) => break,
                }
                if last_check.elapsed() >= self.poll_interval {
                    last_check = Instant::now();
                    // A connection that died silently shows here; the
                    // subscribers get what notifications did not announce.
                    if conn.client.is_closed() || conn.client.batch_execute("").is_err() {
                        break;
                    }
                    self.dispatch();
                }
            }
            self.listening.store(false, Ordering::Release);
            tracing::debug!("batpak: the listening connection dropped; reconnecting");
            self.wake();
        }
    }

    /// Wait up to a tick for notifications, then take those already
    /// buffered; how many arrived, or `Err` when the connection is gone.
    fn next_notifications(&self, conn: &mut Conn) -> Result<usize, ()> {
        let mut got = 0usize;
        {
            let mut notes = conn.client.notifications();
            let first = notes.timeout_iter(TICK).next();
            match first {
                Ok(Some(n)) => {
                    got += 1;
                    self.heard(n.payload());
                }
                Ok(None) => {}
                Err(_) => return Err(()),
            }
            if got > 0 {
                let mut buffered = notes.iter();
                while got < 4096 {
                    match buffered.next() {
                        Ok(Some(n)) => {
                            got += 1;
                            self.heard(n.payload());
                        }
                        _ => break,
                    }
                }
            }
        }
        if got == 0 && conn.client.is_closed() {
            return Err(());
        }
        Ok(got)
    }

    /// A notification's payload is the highest position its sender committed.
    fn heard(&self, payload: &str) {
        if let Ok(p) = payload.parse::<u64>() {
            self.announced.fetch_max(p, Ordering::AcqRel);
        }
    }

    /// Register a lossy subscriber for events that commit from now on:
    /// those at or above the stable bound read now (every transaction below
    /// it has ended, every later one commits above it).
    pub(crate) fn subscribe(self: &Arc<Self>, region: &Region) -> Result<Subscription, StoreError> {
        let start = crate::read::subscription_start(&self.pool, &self.sql.schema)?;
        let after = start.after;
        let (feed, subscription) = Subscription::channel(region, self.capacity);
        {
            let mut d = self.dispatch.lock();
            if self.is_closed() {
                // Dropping the feed ends the subscription at once.
                return Ok(subscription);
            }
            if d.subscribers.is_empty() || d.pager.is_none() {
                d.pager = Some(Pager::new(self, &Region::all(), after, DISPATCH_PAGE));
            }
            d.subscribers.push(Subscriber {
                feed,
                after,
                committed_before: start.committed.into(),
            });
        }
        self.listen();
        Ok(subscription)
    }

    /// Offer every event that became stable since the last round to the
    /// subscribers whose region it matches; drop subscribers that left.
    fn dispatch(&self) {
        let mut d = self.dispatch.lock();
        if d.subscribers.is_empty() {
            return;
        }
        let Dispatch { subscribers, pager } = &mut *d;
        let Some(pager) = pager.as_mut() else { return };
        loop {
            let batch = match pager.next_page() {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e.display_chain(), "batpak: subscription read failed; retrying at the next wake-up");
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            let mut gone = false;
            for e in &batch {
                let mut note: Option<Notification> = None;
                for s in subscribers.iter_mut() {
                    while s
                        .committed_before
                        .front()
                        .is_some_and(|&p| p < e.global_sequence)
                    {
                        s.committed_before.pop_front();
                    }
                    let old_news = s.committed_before.front() == Some(&e.global_sequence);
                    if old_news {
                        s.committed_before.pop_front();
                    }
                    if old_news
                        || s.after.is_some_and(|a| e.global_sequence <= a)
                        || !s
                            .feed
                            .region()
                            .matches_event(e.coord.entity(), e.coord.scope(), e.kind)
                    {
                        continue;
                    }
                    let n = note.get_or_insert_with(|| Notification {
                        event_id: e.event_id,
                        correlation_id: e.correlation_id,
                        causation_id: e.causation_id,
                        coord: e.coord.clone(),
                        kind: e.kind,
                        sequence: e.global_sequence,
                    });
                    gone |= !s.feed.offer(n.clone());
                }
            }
            if gone {
                subscribers.retain(|s| !s.feed.is_gone());
                if subscribers.is_empty() {
                    return;
                }
            }
        }
    }

    /// Subscribers registered (for diagnostics and tests).
    pub(crate) fn subscribers(&self) -> usize {
        self.dispatch.lock().subscribers.len()
    }
}
