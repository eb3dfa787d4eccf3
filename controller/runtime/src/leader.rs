//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several `devplane
//! controller` replicas against one API only one acts at a time.
//!
//! The protocol is client-go's: read the Lease, create it when missing, take it over when it is
//! released or has not been renewed for its lease duration, and renew it while holding it. Every
//! write is a create or a PUT carrying the resourceVersion that was read, so two candidates
//! racing for the same Lease cannot both win: the loser gets a 409.
//!
//! Whether someone else's lease has expired is judged, as client-go does, by this process's own
//! monotonic clock: the lease is expired when its record has not changed for its lease duration
//! since this process first saw that record. Comparing the holder's `renewTime` against the local
//! wall clock would let a replica whose clock runs ahead take a live lease.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
mod tests;

/// Where the Lease lives, who this process is, and the election's timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease; every replica of one controller uses the same name.
    pub name: String,
    /// This process's identity, unique among the replicas (for example the host name plus a
    /// random suffix); written as the Lease's `holderIdentity`.
    pub identity: String,
    /// How long a lease holds without renewal before another replica may take it (15 s by
    /// default). Written as whole seconds, rounded up.
    pub lease_duration: Duration,
    /// How often the holder renews (5 s by default). The holder gives up leadership when no
    /// renewal has succeeded for `lease_duration - renew_interval`, so that its work has
    /// `renew_interval` to wind down before another replica may take over.
    pub renew_interval: Duration,
    /// How long to wait before retrying a failed renewal or a lost campaign (2 s by default).
    pub retry_interval: Duration,
    /// Shared flag telling whether this process currently leads.
    pub state: LeaderState,
}

impl LeaseConfig {
    /// A configuration with the default timing (15 s lease, 5 s renewal, 2 s retry).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
            state: LeaderState::default(),
        }
    }

    fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |reason: &str| Err(LeaderError::InvalidConfig(reason.to_string()));
        if self.name.is_empty() || self.namespace.is_empty() {
            return invalid("the Lease needs a namespace and a name");
        }
        if self.identity.is_empty() {
            return invalid("the identity must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return invalid("the lease duration must be at least one second");
        }
        if self.renew_interval.is_zero() || self.renew_interval >= self.lease_duration {
            return invalid(
                "the renew interval must be positive and shorter than the lease duration",
            );
        }
        if self.retry_interval.is_zero() {
            return invalid("the retry interval must be positive");
        }
        Ok(())
    }

    /// The lease duration in whole seconds, as the Lease spells it.
    fn lease_duration_seconds(&self) -> i32 {
        let seconds =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(seconds).unwrap_or(i32::MAX)
    }

    /// How long the holder may go without a successful renewal before it stops acting.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_interval)
    }
}

/// Whether this process currently leads; cheap to clone and to read from metrics or readiness.
#[derive(Clone, Debug, Default)]
pub struct LeaderState(Arc<AtomicBool>);

impl LeaderState {
    /// True while this process holds the lease and its work runs.
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, leading: bool) {
        self.0.store(leading, Ordering::Release);
    }
}

/// Why leader election stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The configuration cannot work (empty identity, renewal not shorter than the lease, …).
    #[error("invalid leader election configuration: {0}")]
    InvalidConfig(String),
    /// The API refused a Lease operation in a way retrying cannot fix (bad request,
    /// unauthorised, forbidden, invalid).
    #[error("cannot {operation} Lease {namespace}/{name}: {source}")]
    Lease {
        /// What was attempted: "read", "create", "update" or "release".
        operation: &'static str,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API's answer (boxed: it is large and errors are rare).
        #[source]
        source: Box<kube::Error>,
    },
}

/// Runs `work` only while this process holds the lease.
///
/// `work` gets a [`CancellationToken`] that is cancelled when leadership is lost (renewals kept
/// failing for `lease_duration - renew_interval`, or another replica took the lease) or when
/// `shutdown` is cancelled; `run_as_leader` waits for `work` to return before campaigning again,
/// so `work` must return promptly once its token is cancelled.
///
/// Returns `Ok(())` when `shutdown` is cancelled, after `work` has returned and the lease has been
/// released (holder cleared, duration 1 s) so that another replica takes over at once. If `work`
/// returns on its own while this process leads, the lease is released and this returns too.
/// Transient API errors are logged and retried; only errors retrying cannot fix are returned.
pub async fn run_as_leader<F, Fut>(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: CancellationToken,
    work: F,
) -> Result<(), LeaderError>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    config.validate()?;
    let mut elector = Elector::new(client, &config);
    loop {
        let Some(acquired_at) = campaign(&mut elector, &config, &shutdown).await? else {
            return Ok(());
        };
        tracing::info!(lease = %config.name, identity = %config.identity, "became leader");
        config.state.set(true);
        let token = shutdown.child_token();
        let ended = lead(
            &mut elector,
            &config,
            acquired_at,
            &shutdown,
            &token,
            work(token.clone()),
        )
        .await;
        config.state.set(false);
        match ended {
            LeadEnded::Lost => {
                tracing::warn!(lease = %config.name, identity = %config.identity, "lost leadership");
            }
            LeadEnded::Shutdown | LeadEnded::WorkReturned => {
                // Bounded: a release that cannot reach the API must not hold up the shutdown.
                if tokio::time::timeout(config.lease_duration, elector.release())
                    .await
                    .is_err()
                {
                    tracing::warn!(lease = %config.name, "releasing the lease timed out");
                }
                return Ok(());
            }
        }
    }
}

/// Try to acquire the lease until it is ours (returns when we got it, with the instant the
/// successful attempt started) or `shutdown` is cancelled (returns `None`).
async fn campaign(
    elector: &mut Elector,
    config: &LeaseConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Instant>, LeaderError> {
    loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let started = Instant::now();
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(config.lease_duration, elector.try_acquire_or_renew(started)) => attempt,
            () = shutdown.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(Ok(true)) => return Ok(Some(started)),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => elector.tolerate(e)?,
            Err(_) => tracing::warn!(lease = %config.name, "acquiring the lease timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(config.retry_interval) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}

enum LeadEnded {
    /// The lease was taken or could not be renewed in time.
    Lost,
    /// `shutdown` was cancelled and the work has returned.
    Shutdown,
    /// The work returned without being asked to.
    WorkReturned,
}

/// Run the work and keep renewing until leadership is lost, `shutdown` is cancelled or the work
/// returns. The work is polled here rather than spawned because it need not be `'static`; the
/// renewals run concurrently with it in the same `select!`.
async fn lead(
    elector: &mut Elector,
    config: &LeaseConfig,
    acquired_at: Instant,
    shutdown: &CancellationToken,
    token: &CancellationToken,
    work: impl Future<Output = ()>,
) -> LeadEnded {
    let mut work = pin!(work);
    let mut renewing = pin!(keep_renewing(elector, config, acquired_at));
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut renewing => {
                token.cancel();
                // Leadership is gone: nothing may be renewed any more, only the work drained.
                work.await;
                return LeadEnded::Lost;
            }
            () = &mut work => {
                return if stopping { LeadEnded::Shutdown } else { LeadEnded::WorkReturned };
            }
            // Keep renewing while the work winds down, so a slow shutdown stays exclusive.
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                token.cancel();
            }
        }
    }
}

/// Renew the lease until it is taken or no renewal has succeeded within the renew deadline;
/// returns when leadership is lost.
async fn keep_renewing(elector: &mut Elector, config: &LeaseConfig, acquired_at: Instant) {
    let mut renewed_at = acquired_at;
    let mut next = acquired_at + config.renew_interval;
    loop {
        let deadline = renewed_at + config.renew_deadline();
        tokio::time::sleep_until(next.min(deadline)).await;
        let started = Instant::now();
        if started >= deadline {
            tracing::warn!(lease = %config.name, "no renewal succeeded within the renew deadline");
            return;
        }
        match tokio::time::timeout_at(deadline, elector.try_acquire_or_renew(started)).await {
            Ok(Ok(true)) => {
                renewed_at = started;
                next = started + config.renew_interval;
            }
            Ok(Ok(false)) => return,
            Ok(Err(e)) => {
                // Even an error that would stop a campaign only delays renewal here: the deadline
                // decides when leadership ends.
                tracing::warn!(lease = %config.name, error = %e, "renewing the lease failed");
                next = Instant::now() + config.retry_interval;
            }
            Err(_) => {
                tracing::warn!(lease = %config.name, "renewing the lease timed out");
                return;
            }
        }
    }
}

/// One candidate's view of the Lease.
struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration_seconds: i32,
    /// The Lease as last read or written by us; as holder, renewals PUT it directly with its
    /// resourceVersion, and a 409 sends us back to reading.
    cached: Option<Lease>,
    /// The last spec seen and when (by our clock) it was first seen: the basis of expiry.
    observed: Option<(LeaseSpec, Instant)>,
}

/// Outcome of a write that may lose a race.
enum Write {
    Done(Box<Lease>),
    Conflict,
}

impl Elector {
    fn new(client: kube::Client, config: &LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            identity: config.identity.clone(),
            lease_duration_seconds: config.lease_duration_seconds(),
            cached: None,
            observed: None,
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`: true when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self, now: Instant) -> Result<bool, LeaderError> {
        // Fast path for the holder: renew from the cached copy without reading first.
        if let Some(cached) = self.cached.clone()
            && holder(&cached) == Some(self.identity.as_str())
        {
            let renewed = self.renewed(cached, Timestamp::now());
            match self.replace(&renewed).await? {
                Write::Done(lease) => return Ok(self.wrote(*lease, now)),
                // Someone else wrote since (maybe only metadata): read and decide again.
                Write::Conflict => self.cached = None,
            }
        }

        let Some(current) = self.read().await? else {
            return self.create(now).await;
        };
        let spec = current.spec.clone().unwrap_or_default();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == spec => *at,
            _ => now,
        };
        self.observed = Some((spec.clone(), first_seen));
        self.cached = Some(current.clone());

        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        if let Some(holder) = holder
            && holder != self.identity
        {
            let seconds = spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .unwrap_or(self.lease_duration_seconds);
            let valid_for = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
            if now < first_seen + valid_for {
                return Ok(false);
            }
            tracing::info!(lease = %self.name, previous = holder, "taking over an expired lease");
        }

        let wall = Timestamp::now();
        let next = if holder == Some(self.identity.as_str()) {
            self.renewed(current, wall)
        } else {
            self.taken_over(current, wall)
        };
        match self.replace(&next).await? {
            Write::Done(lease) => Ok(self.wrote(*lease, now)),
            // Another candidate wrote between our read and our write, and won.
            Write::Conflict => {
                self.cached = None;
                Ok(false)
            }
        }
    }

    /// Give the lease up so that another replica takes it without waiting for it to expire.
    async fn release(&mut self) {
        for _ in 0..2 {
            let current = match self.cached.take() {
                Some(cached) => cached,
                None => match self.read().await {
                    Ok(Some(current)) => current,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "cannot read the lease to release it");
                        return;
                    }
                },
            };
            if holder(&current) != Some(self.identity.as_str()) {
                return;
            }
            let mut released = current;
            let now = MicroTime(Timestamp::now());
            let spec = released.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            match self.replace(&released).await {
                Ok(Write::Done(_)) => {
                    tracing::info!(lease = %self.name, "released the lease");
                    return;
                }
                // Our copy was stale (someone touched the Lease): read it and try once more.
                Ok(Write::Conflict) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "cannot release the lease");
                    return;
                }
            }
        }
    }

    /// Decide whether an error is worth retrying (logged, `Ok`) or ends the election.
    fn tolerate(&self, error: LeaderError) -> Result<(), LeaderError> {
        let fatal = match &error {
            LeaderError::InvalidConfig(_) => true,
            LeaderError::Lease { source, .. } => {
                matches!(source.as_ref(), kube::Error::Api(status) if matches!(status.code, 400 | 401 | 403 | 422))
            }
        };
        if fatal {
            return Err(error);
        }
        tracing::warn!(lease = %self.name, error = %error, "leader election attempt failed; retrying");
        Ok(())
    }

    fn renewed(&self, mut lease: Lease, now: Timestamp) -> Lease {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        if spec.acquire_time.is_none() {
            spec.acquire_time = Some(MicroTime(now));
        }
        lease
    }

    fn taken_over(&self, mut lease: Lease, now: Timestamp) -> Lease {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        lease
    }

    /// Remember a lease we wrote; our own write counts as an observation.
    fn wrote(&mut self, lease: Lease, now: Instant) -> bool {
        self.observed = Some((lease.spec.clone().unwrap_or_default(), now));
        self.cached = Some(lease);
        true
    }

    async fn read(&self) -> Result<Option<Lease>, LeaderError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|source| self.error("read", source))
    }

    async fn create(&mut self, now: Instant) -> Result<bool, LeaderError> {
        let wall = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_duration_seconds),
                acquire_time: Some(wall.clone()),
                renew_time: Some(wall),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => Ok(self.wrote(created, now)),
            // Another candidate created it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(self.error("create", source)),
        }
    }

    /// PUT with the resourceVersion the lease carries; a 409 means our copy was stale.
    async fn replace(&self, lease: &Lease) -> Result<Write, LeaderError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(written) => Ok(Write::Done(Box::new(written))),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Write::Conflict),
            Err(source) => Err(self.error("update", source)),
        }
    }

    fn error(&self, operation: &'static str, source: kube::Error) -> LeaderError {
        LeaderError::Lease {
            operation,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}
