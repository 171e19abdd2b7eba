//! Time-driven behaviour: keepalive pings, the idle timeout and the close timeout.
//!
//! Every deadline is computed from `now` arguments; the driver asks [`Connection::poll_timeout`]
//! when to call [`Connection::handle_timeout`] next.

use std::time::Instant;

use bytes::Bytes;

use super::{CloseTimer, Connection, End, Phase};
use crate::error::ProtocolError;
use crate::frame::OpCode;
use crate::message::CloseCode;

/// Keepalive and idle state while the connection is open.
///
/// No clock is read per input: reads and sends only set `rx_activity` and `data_activity`.
/// The timer is then in one of two modes. *Quiet*: it sleeps until the next deadline (a ping,
/// its answer, the idle timeout), and the first activity makes [`Connection::wants_clock`] true,
/// so a driver dates it with one `handle_timeout` (exact). That call makes it *busy*, unless
/// the activity answers our ping (an idle connection's pong): the timer then looks at the
/// flags every quarter of the shortest period (`ping_interval`, `idle_timeout`) instead, so a
/// busy connection costs four timer wake-ups per period and nothing per message; the first
/// look that finds no activity goes back to quiet. Either way a deadline counts from at most a
/// quarter period after the activity it follows.
#[derive(Debug, Default)]
pub(super) struct Keepalive {
    /// When the next ping goes out; `None` until the first `handle_timeout` arms it.
    next_ping: Option<Instant>,
    /// While a ping waits for proof that the peer is alive: when to give up.
    answer_by: Option<Instant>,
    /// When the idle timeout closes the connection.
    idle_by: Option<Instant>,
    /// Busy: when the timer next looks at the activity flags. `None`: quiet.
    check_at: Option<Instant>,
    /// Payload of the last ping sent (a counter).
    ping_count: u64,
    /// [`super::SendQueue::written`] at the last `handle_timeout`.
    seen_written: u64,
    /// The send queue was at its high-water mark at the last `handle_timeout`.
    blocked: bool,
    /// Since when the send queue has been full without the transport taking any of it.
    stalled_since: Option<Instant>,
    /// Input arrived since the last `handle_timeout`.
    pub(super) rx_activity: bool,
    /// A data message went either way since the last `handle_timeout`.
    pub(super) data_activity: bool,
}

impl Connection {
    /// Advances timers to `now`: keepalive pings, the idle timeout and the close timeout.
    ///
    /// Call it once when the connection starts, whenever the instant from
    /// [`Self::poll_timeout`] is reached, and after input or a send while [`Self::wants_clock`]
    /// is true. No other call is needed, and a busy connection needs none per message: the core
    /// notes input and data as they happen, and while they keep coming the deadline is a check
    /// every quarter of the shortest period (`ping_interval`, `idle_timeout`) that looks at
    /// what it noted. So a ping goes out after between `ping_interval` and 1.25 times that of
    /// silence from the peer, and the idle timeout closes after between `idle_timeout` and
    /// 1.25 times that without data, however busy the connection was before. (A driver that
    /// also skips the calls asked by [`Self::wants_clock`] gets up to 1.25 periods after the
    /// call that first sees the activity.) An idle connection whose peer answers pings wakes
    /// once per ping, `ping_interval` after the answer to the previous one.
    /// Each call takes effect at once: a close it queues (idle timeout) has its close timeout
    /// armed in the same call, so `poll_timeout` always tells the next instant that matters.
    /// Timers are relative to the `now` of the call that first sees the state they belong to.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
        match self.phase {
            Phase::Open => self.keepalive(now),
            Phase::CloseSent { .. } | Phase::Ended { .. } => self.close_timer(now),
        }
    }

    /// Whether a [`Self::handle_timeout`] now would date activity that the timers have not
    /// seen: input arrived (or, with an idle timeout, data was sent) while the connection was
    /// quiet. A driver asks it after each read and send (a few flags) and reads the clock only
    /// when it is true: once per quiet spell, since that call turns the quarter-period checks
    /// on (except for the answer to a ping), and they time a busy connection from then on.
    /// Never true without keepalive or an idle timeout.
    pub fn wants_clock(&self) -> bool {
        let k = &self.keepalive;
        // Data sent matters only to the idle timeout; input to both.
        k.check_at.is_none()
            && self.phase == Phase::Open
            && (k.rx_activity && self.config.ping_interval.is_some_and(|i| !i.is_zero())
                || (k.rx_activity || k.data_activity) && self.config.idle_timeout.is_some())
    }

    /// Whether [`Self::handle_timeout`] has anything to do: a keepalive or idle timer is
    /// configured, or the connection is closing. While false, a driver may skip reading the
    /// clock after input (it must still honour [`Self::poll_timeout`]).
    pub fn needs_time(&self) -> bool {
        self.config.ping_interval.is_some()
            || self.config.idle_timeout.is_some()
            || self.phase != Phase::Open
    }

    /// The next instant at which [`Self::handle_timeout`] must be called, if any.
    ///
    /// Never `None` while a deadline is pending, once `handle_timeout` has been called (it gives
    /// the connection its first instant). An instant in the past means "now": a close
    /// queued by a call without a clock ([`Self::close`], a protocol violation, the peer's close
    /// frame) has its close timeout armed by the next `handle_timeout`, and this returns the
    /// last instant the connection was given until then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => self.keepalive.deadline(),
            Phase::CloseSent { timer } | Phase::Ended { timer, .. } => match timer {
                _ if self.should_close_transport() => None,
                CloseTimer::Off => None,
                CloseTimer::Due => self.clock,
                CloseTimer::At(deadline) => Some(deadline),
            },
        }
    }

    /// The close timer for a close queued now: armed at `now` when the caller knows the time,
    /// due at the next `handle_timeout` otherwise, off without [`crate::Config::close_timeout`].
    pub(super) fn close_timer_from(&self, now: Option<Instant>) -> CloseTimer {
        match (self.config.close_timeout, now) {
            (None, _) => CloseTimer::Off,
            (Some(timeout), Some(now)) => {
                later(now, timeout).map_or(CloseTimer::Off, CloseTimer::At)
            }
            (Some(_), None) => CloseTimer::Due,
        }
    }

    /// Keepalive (RFC 6455 §5.5.2: pings may serve to verify the peer is responsive) and the
    /// idle timeout, while open.
    fn keepalive(&mut self, now: Instant) {
        // A zero interval would ask for a ping at every call: no keepalive, as with `None`.
        let interval = self.config.ping_interval.filter(|i| !i.is_zero());
        let idle = self.config.idle_timeout;
        let written = self.out.written();
        let full = self.is_send_buffer_full();
        let k = &mut self.keepalive;
        // Any frame from the peer proves it is alive; a pong stuck behind a large message
        // should not kill a busy connection. So does progress of a send queue that was held up
        // by flow control: the transport only takes more once the peer has read, and while a
        // driver waits for that it may not be reading the peer's pong. (Bytes taken while the
        // queue was short prove nothing: the kernel buffers them for a dead peer too.)
        let progressed = std::mem::replace(&mut k.seen_written, written) != written;
        // "Held up" is decided only when a deadline or check is reached: a call before it
        // dates activity (`wants_clock`), a send's say, before the driver even tried to write,
        // and what the transport's own buffer takes next is no proof that the peer reads.
        let at_deadline = k.deadline().map_or(true, |w| now >= w);
        let was_blocked = k.blocked;
        k.blocked = full && (was_blocked || at_deadline);
        // But a peer that keeps sending while our queue has been stuck for a whole interval is
        // not reading: its frames no longer count, so keepalive gives up on it.
        if !full {
            k.stalled_since = None;
        } else if progressed || k.stalled_since.is_none() {
            k.stalled_since = Some(now);
        }
        let stalled = match (k.stalled_since, interval) {
            (Some(since), Some(i)) => later(since, i).is_some_and(|t| now >= t),
            _ => false,
        };
        let rx = std::mem::take(&mut k.rx_activity);
        let data = std::mem::take(&mut k.data_activity);
        let heard = (rx && !stalled) || (progressed && was_blocked);
        // Input while a ping waits is (most likely) its pong: an idle connection stays quiet.
        let answers = heard && k.answer_by.is_some();
        if heard {
            k.answer_by = None;
            k.next_ping = interval.and_then(|i| later(now, i));
        }
        if data || k.idle_by.is_none() {
            k.idle_by = idle.and_then(|t| later(now, t));
        }
        if k.next_ping.is_none() && k.answer_by.is_none() {
            k.next_ping = interval.and_then(|i| later(now, i));
        }
        // Quiet or busy (see `Keepalive`): any activity but the answer to our ping makes the
        // timer check every quarter period from now on (a full send queue too, so progress and
        // stalls are seen in time); a check that finds none goes back to quiet.
        let quarter = match (interval, idle) {
            (Some(i), Some(t)) => Some(i.min(t) / 4),
            (i, t) => i.or(t).map(|d| d / 4),
        };
        let active = rx || (data && idle.is_some()) || full || (progressed && was_blocked);
        let busy = active && (k.check_at.is_some() || at_deadline || !answers);
        k.check_at = if busy { quarter.and_then(|q| later(now, q)) } else { None };
        if k.answer_by.is_some_and(|d| now >= d) {
            let err = self.fail(ProtocolError::KeepaliveTimeout);
            self.pending_error = Some(err);
            return;
        }
        if k.idle_by.is_some_and(|d| now >= d) {
            self.queue_close(Some((CloseCode::GOING_AWAY, "idle timeout")), Some(now));
            self.reply_queued = true;
            return;
        }
        if k.next_ping.is_some_and(|d| now >= d) {
            k.ping_count = k.ping_count.wrapping_add(1);
            let payload = Bytes::copy_from_slice(&k.ping_count.to_be_bytes());
            k.next_ping = interval.and_then(|i| later(now, i));
            if k.answer_by.is_none() {
                k.answer_by = self.config.ping_timeout.and_then(|t| later(now, t));
            }
            self.queue_frame(OpCode::Ping, payload);
            self.reply_queued = true;
        }
    }

    /// The close timeout: for the peer's reply to our close, or (client) for the server to close
    /// TCP after the closing handshake (RFC 6455 §7.1.1).
    fn close_timer(&mut self, now: Instant) {
        let (Phase::CloseSent { timer } | Phase::Ended { timer, .. }) = &mut self.phase else {
            return;
        };
        match *timer {
            CloseTimer::Off => {}
            CloseTimer::Due => {
                *timer = self
                    .config
                    .close_timeout
                    .and_then(|t| later(now, t))
                    .map_or(CloseTimer::Off, CloseTimer::At)
            }
            CloseTimer::At(deadline) if now >= deadline => {
                self.phase = Phase::Ended { end: End::TimedOut, timer: CloseTimer::Off };
            }
            CloseTimer::At(_) => {}
        }
    }
}

impl Keepalive {
    /// The earliest deadline while open.
    fn deadline(&self) -> Option<Instant> {
        earliest(earliest(self.next_ping, self.answer_by), earliest(self.idle_by, self.check_at))
    }
}

/// The earlier of two optional deadlines; `None` only when neither is set.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// `now + d`, or `None` when that is beyond what an `Instant` can hold (`Duration::MAX` as
/// "forever"): no deadline.
fn later(now: Instant, d: std::time::Duration) -> Option<Instant> {
    now.checked_add(d)
}
