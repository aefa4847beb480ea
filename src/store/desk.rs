//! Group commit. Small writes that arrive together (a burst of lease changes, a burst of redeems)
//! each cost mostly their fixed price: taking the writer, `BEGIN`, `COMMIT`, and on SQLite the
//! hand-offs between the async runtime and the connection's thread, on PostgreSQL a WAL flush. A
//! [`Desk`] runs whatever writes are waiting as one batch, in the order they arrived, and answers
//! each with its own outcome. What a batch is (one transaction, one statement per kind of write)
//! is up to its [`Batch`].
//!
//! Should a batch fail as a whole (a database error), each of its writes runs again alone, so one
//! bad write cannot fail the others. Batches run apart from the requests: a request dropped
//! half-way (its client went away) cannot stop the writes of the others waiting with it.
//!
//! They run on a thread of the runtime's blocking pool (for as long as writes keep coming), not
//! as one more task among the requests': between its round trips to the database a batch would
//! wait in line behind every request the runtime had to poll, and the writer, which all the
//! waiting writes need, would sit idle meanwhile.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::{StoreError, StoreResult};

/// A kind of write a [`Desk`] batches.
pub trait Batch: Send + Sync + 'static {
    /// The database handle the writes go to.
    type Db: Clone + Send + Sync + 'static;
    /// One write.
    type Op: Send + Sync + 'static;
    /// What one write did.
    type Out: Send + 'static;

    /// Runs `ops` together and commits them: one outcome per op, in order. A write that cannot be
    /// done (a code already taken, a lease released already) is an outcome, not an error; an
    /// error fails the whole batch.
    fn run<'a>(
        db: &'a Self::Db,
        ops: &'a [Self::Op],
    ) -> impl Future<Output = StoreResult<Vec<Self::Out>>> + Send + 'a;
}

struct Waiting<B: Batch> {
    op: B::Op,
    reply: tokio::sync::oneshot::Sender<StoreResult<B::Out>>,
}

struct Queue<B: Batch> {
    waiting: Vec<Waiting<B>>,
    /// Drain tasks running; each takes whatever is waiting until the queue is empty.
    draining: usize,
    /// The most drain tasks at once: 1 on SQLite (one writer); on PostgreSQL several, so that
    /// round trips to the server overlap while each transaction still carries a batch.
    lanes: usize,
}

/// Group commit for the writes of one [`Batch`].
pub struct Desk<B: Batch>(Arc<Mutex<Queue<B>>>);

impl<B: Batch> Clone for Desk<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The most writes one batch takes; the rest wait for the next.
const MAX_BATCH: usize = 128;

impl<B: Batch> Desk<B> {
    /// A desk running at most `lanes` batches at once (at least one).
    pub fn new(lanes: usize) -> Self {
        Self(Arc::new(Mutex::new(Queue {
            waiting: Vec::new(),
            draining: 0,
            lanes: lanes.max(1),
        })))
    }

    /// Queues `op` and waits for its outcome.
    pub async fn submit(&self, db: &B::Db, op: B::Op) -> StoreResult<B::Out> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start_drain = {
            let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.push(Waiting { op, reply });
            let start = queue.draining < queue.lanes;
            if start {
                queue.draining += 1;
            }
            start
        };
        if start_drain {
            let (desk, db) = (self.clone(), db.clone());
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || runtime.block_on(desk.drain(&db)));
        }
        answer.await.map_err(|_| {
            StoreError::Other(sqlx::Error::Protocol(
                "the desk stopped before answering".into(),
            ))
        })?
    }

    /// Runs batches until nothing is waiting.
    async fn drain(&self, db: &B::Db) {
        loop {
            let batch: Vec<Waiting<B>> = {
                let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
                if queue.waiting.is_empty() {
                    queue.draining -= 1;
                    return;
                }
                let n = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..n).collect()
            };
            let (ops, replies): (Vec<B::Op>, Vec<_>) =
                batch.into_iter().map(|w| (w.op, w.reply)).unzip();
            match B::run(db, &ops).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) if ops.len() == 1 => {
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(Err(e));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, writes = ops.len(), "a batch of writes failed; running them one by one");
                    for (op, reply) in ops.chunks(1).zip(replies) {
                        let outcome = B::run(db, op).await.and_then(|mut o| {
                            o.pop().ok_or_else(|| {
                                StoreError::Other(sqlx::Error::Protocol(
                                    "a batch of one write gave no outcome".into(),
                                ))
                            })
                        });
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
    }
}
