//! Leader election against the real API server, in process, with real Leases.

use std::sync::atomic::AtomicUsize;

use devplane_apiserver::{ApiServer, ApiServerConfig};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::task::JoinHandle;

use super::*;

const NAMESPACE: &str = "default";
const LEASE: &str = "devplane-controller";

async fn in_process() -> (ApiServer, kube::Client) {
    let store = devplane_store::open("memory://")
        .await
        .expect("memory store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("API server");
    server.spawn_background();
    let client = kube::Client::new(
        server.in_process_router(crate::up::admin_identity()),
        NAMESPACE,
    );
    (server, client)
}

async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Poll `condition` every 20 ms until it holds, failing the test after `limit`.
async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    within(what, limit, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Poll an async `condition` every 20 ms until it holds, failing the test after `limit`.
async fn wait_for_lease(
    what: &str,
    limit: Duration,
    leases: &Api<Lease>,
    mut condition: impl FnMut(&Lease) -> bool,
) -> Lease {
    within(what, limit, async {
        loop {
            if let Some(lease) = leases.get_opt(LEASE).await.expect("read the lease")
                && condition(&lease)
            {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn fast(identity: &str, lease_duration: Duration) -> LeaseConfig {
    LeaseConfig {
        lease_duration,
        renew_interval: Duration::from_millis(300),
        retry_interval: Duration::from_millis(100),
        ..LeaseConfig::new(NAMESPACE, LEASE, identity)
    }
}

/// Counts how many candidates run their work at once, across every candidate of a test.
#[derive(Clone, Default)]
struct Exclusive {
    active: Arc<AtomicUsize>,
    overlaps: Arc<AtomicUsize>,
}

impl Exclusive {
    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }
}

/// Held while a candidate's work runs; dropping it (also when the task is aborted) ends the run.
struct Running {
    exclusive: Exclusive,
    mine: Arc<AtomicBool>,
}

impl Running {
    fn enter(exclusive: &Exclusive, mine: &Arc<AtomicBool>) -> Self {
        if exclusive.active.fetch_add(1, Ordering::SeqCst) > 0 {
            exclusive.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        mine.store(true, Ordering::SeqCst);
        Self {
            exclusive: exclusive.clone(),
            mine: Arc::clone(mine),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.mine.store(false, Ordering::SeqCst);
        self.exclusive.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A candidate running `run_as_leader` in its own task.
struct Candidate {
    state: LeaderState,
    shutdown: CancellationToken,
    working: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
    task: JoinHandle<Result<(), LeaderError>>,
}

impl Candidate {
    fn start(client: &kube::Client, config: LeaseConfig, exclusive: &Exclusive) -> Self {
        let state = config.state.clone();
        let shutdown = CancellationToken::new();
        let working = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicUsize::new(0));
        let work = {
            let exclusive = exclusive.clone();
            let working = Arc::clone(&working);
            let runs = Arc::clone(&runs);
            move |token: CancellationToken| {
                let running = Running::enter(&exclusive, &working);
                runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    token.cancelled().await;
                    drop(running);
                }
            }
        };
        let task = tokio::spawn(run_as_leader(
            client.clone(),
            config,
            shutdown.clone(),
            work,
        ));
        Self {
            state,
            shutdown,
            working,
            runs,
            task,
        }
    }

    fn working(&self) -> bool {
        self.working.load(Ordering::SeqCst)
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        within("the candidate stops", Duration::from_secs(10), self.task)
            .await
            .expect("the candidate's task")
            .expect("run_as_leader");
    }
}

fn spec(lease: &Lease) -> LeaseSpec {
    lease.spec.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_single_candidate_becomes_leader_runs_its_work_and_releases_on_shutdown() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let exclusive = Exclusive::default();
    let a = Candidate::start(&client, fast("a", Duration::from_secs(2)), &exclusive);

    wait_for("a leads and works", Duration::from_secs(10), || {
        a.state.is_leader() && a.working()
    })
    .await;
    let lease = leases.get(LEASE).await.expect("the lease exists");
    let held = spec(&lease);
    assert_eq!(held.holder_identity.as_deref(), Some("a"));
    assert_eq!(held.lease_duration_seconds, Some(2));
    assert_eq!(held.lease_transitions, Some(0));
    assert!(held.acquire_time.is_some() && held.renew_time.is_some());
    let raw = serde_json::to_value(&lease).expect("lease as JSON");
    let renew = raw["spec"]["renewTime"].as_str().expect("renewTime");
    assert_eq!(
        renew.split('.').nth(1).map(str::len),
        Some(7),
        "MicroTime has six fractional digits and a Z: {renew}"
    );

    let state = a.state.clone();
    a.stop().await;
    assert!(!state.is_leader());
    assert_eq!(exclusive.active(), 0, "the work returned");
    let released = spec(&leases.get(LEASE).await.expect("the lease"));
    assert_eq!(released.holder_identity, None, "released on shutdown");
    assert_eq!(released.lease_duration_seconds, Some(1));
}

#[tokio::test]
async fn of_two_candidates_exactly_one_runs_its_work_at_any_time() {
    let (_server, client) = in_process().await;
    let exclusive = Exclusive::default();
    let a = Candidate::start(&client, fast("a", Duration::from_secs(2)), &exclusive);
    let b = Candidate::start(&client, fast("b", Duration::from_secs(2)), &exclusive);

    wait_for("someone leads", Duration::from_secs(10), || {
        exclusive.active() == 1
    })
    .await;
    // Sample for several lease durations: renewals keep the same leader, the other stays idle.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(exclusive.active(), 1, "exactly one runs its work");
        assert_eq!(
            usize::from(a.state.is_leader()) + usize::from(b.state.is_leader()),
            1,
            "exactly one leads"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(exclusive.overlaps(), 0, "never two at once");
    assert_eq!(
        a.runs() + b.runs(),
        1,
        "no leadership change without a reason"
    );
    a.stop().await;
    b.stop().await;
    assert_eq!(
        exclusive.overlaps(),
        0,
        "never two at once, handover included"
    );
}

#[tokio::test]
async fn a_released_lease_is_taken_over_well_before_it_would_expire() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let exclusive = Exclusive::default();
    // A long lease: only the release can explain a quick takeover.
    let a = Candidate::start(&client, fast("a", Duration::from_secs(30)), &exclusive);
    wait_for("a leads", Duration::from_secs(10), || a.working()).await;
    let b = Candidate::start(&client, fast("b", Duration::from_secs(30)), &exclusive);
    // Let b campaign against a's live lease first; that b does not take it can only be
    // checked over a period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.working(), "b waits while a holds the lease");

    let released_at = Instant::now();
    a.stop().await;
    wait_for("b takes over", Duration::from_secs(5), || b.working()).await;
    assert!(
        released_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        released_at.elapsed()
    );
    let lease = leases.get(LEASE).await.expect("the lease");
    assert_eq!(spec(&lease).holder_identity.as_deref(), Some("b"));
    assert_eq!(spec(&lease).lease_transitions, Some(1));
    assert_eq!(exclusive.overlaps(), 0);
    b.stop().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_about_the_lease_duration() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let exclusive = Exclusive::default();
    let lease_duration = Duration::from_secs(2);
    let a = Candidate::start(&client, fast("a", lease_duration), &exclusive);
    wait_for("a leads", Duration::from_secs(10), || a.working()).await;
    let b = Candidate::start(&client, fast("b", lease_duration), &exclusive);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.working(), "b waits while a renews");

    // A crash: the task disappears without releasing anything.
    let crashed_at = Instant::now();
    a.task.abort();
    wait_for("b takes over", Duration::from_secs(10), || b.working()).await;
    let took = crashed_at.elapsed();
    assert!(
        took >= lease_duration - Duration::from_millis(800),
        "b must not take a lease renewed within its duration (took {took:?})"
    );
    assert!(took <= lease_duration * 2, "took {took:?}");
    let lease = leases.get(LEASE).await.expect("the lease");
    assert_eq!(spec(&lease).holder_identity.as_deref(), Some("b"));
    assert_eq!(spec(&lease).lease_transitions, Some(1));
    assert_eq!(exclusive.overlaps(), 0);
    b.stop().await;
}

#[tokio::test]
async fn a_stale_resource_version_on_renewal_is_retried_without_losing_leadership() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let exclusive = Exclusive::default();
    let a = Candidate::start(&client, fast("a", Duration::from_secs(2)), &exclusive);
    wait_for("a leads", Duration::from_secs(10), || a.working()).await;

    for round in 0..3 {
        // Someone else touches the Lease: a's cached resourceVersion is now stale, so its next
        // renewal PUT gets a 409 and must re-read rather than give up.
        let touched = leases
            .patch(
                LEASE,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"touched": round.to_string()}}})),
            )
            .await
            .expect("label the lease");
        let renewed_before = spec(&touched).renew_time;
        let touched_version = touched.metadata.resource_version.clone();
        wait_for_lease("a renews again", Duration::from_secs(5), &leases, |l| {
            spec(l).renew_time != renewed_before
        })
        .await;
        let lease = leases.get(LEASE).await.expect("the lease");
        assert_ne!(lease.metadata.resource_version, touched_version);
        assert_eq!(spec(&lease).holder_identity.as_deref(), Some("a"));
        assert_eq!(
            lease.metadata.labels.unwrap_or_default().get("touched"),
            Some(&round.to_string()),
            "the renewal kept the other writer's change"
        );
    }
    assert!(a.state.is_leader());
    assert_eq!(a.runs(), 1, "leadership was never lost");
    a.stop().await;
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_its_work_and_waits_for_it_to_expire() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let exclusive = Exclusive::default();
    let a = Candidate::start(&client, fast("a", Duration::from_secs(2)), &exclusive);
    wait_for("a leads", Duration::from_secs(10), || a.working()).await;

    let mut current = leases.get(LEASE).await.expect("the lease");
    let spec = current.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    leases
        .replace(LEASE, &PostParams::default(), &current)
        .await
        .expect("the intruder takes the lease");

    wait_for("a stops its work", Duration::from_secs(5), || {
        !a.working() && !a.state.is_leader()
    })
    .await;
    let lost_at = Instant::now();
    // The intruder never renews: a takes the lease back once it has expired.
    wait_for("a leads again", Duration::from_secs(10), || a.working()).await;
    assert!(
        lost_at.elapsed() >= Duration::from_millis(1200),
        "a waited for the intruder's lease to expire (took {:?})",
        lost_at.elapsed()
    );
    assert_eq!(a.runs(), 2);
    let lease = leases.get(LEASE).await.expect("the lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("a")
    );
    a.stop().await;
}

#[tokio::test]
async fn a_write_that_loses_a_race_backs_off_instead_of_failing() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let config = fast("a", Duration::from_secs(2));
    let mut a = Elector::new(client.clone(), &config);
    assert!(
        a.try_acquire_or_renew(Instant::now())
            .await
            .expect("acquire")
    );
    let stale = a.cached.clone().expect("a remembers its lease");

    // b takes the lease over (say a was partitioned long enough for it to expire).
    let mut taken = leases.get(LEASE).await.expect("the lease");
    taken
        .spec
        .get_or_insert_with(LeaseSpec::default)
        .holder_identity = Some("b".into());
    leases
        .replace(LEASE, &PostParams::default(), &taken)
        .await
        .expect("b takes the lease");

    // a still believes it holds the lease: its renewal from the stale copy gets a 409.
    a.cached = Some(stale);
    let renewed = a
        .try_acquire_or_renew(Instant::now())
        .await
        .expect("a conflict is not an error");
    assert!(!renewed, "a sees that b holds the lease");
    let lease = leases.get(LEASE).await.expect("the lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn work_that_returns_on_its_own_releases_the_lease_and_ends_the_election() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let ran = Arc::new(AtomicUsize::new(0));
    let work = {
        let ran = Arc::clone(&ran);
        move |_token: CancellationToken| {
            ran.fetch_add(1, Ordering::SeqCst);
            async {}
        }
    };
    within(
        "run_as_leader returns",
        Duration::from_secs(10),
        run_as_leader(
            client,
            fast("a", Duration::from_secs(2)),
            CancellationToken::new(),
            work,
        ),
    )
    .await
    .expect("run_as_leader");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let lease = leases.get(LEASE).await.expect("the lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), None);
}

#[tokio::test]
async fn an_unworkable_configuration_is_refused_before_touching_the_api() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let cases = [
        LeaseConfig {
            renew_interval: Duration::from_secs(15),
            ..LeaseConfig::new(NAMESPACE, LEASE, "a")
        },
        LeaseConfig::new(NAMESPACE, LEASE, ""),
        LeaseConfig {
            lease_duration: Duration::from_millis(500),
            renew_interval: Duration::from_millis(100),
            ..LeaseConfig::new(NAMESPACE, LEASE, "a")
        },
    ];
    for config in cases {
        let result = run_as_leader(
            client.clone(),
            config,
            CancellationToken::new(),
            |_token| async {},
        )
        .await;
        assert!(
            matches!(result, Err(LeaderError::InvalidConfig(_))),
            "{result:?}"
        );
    }
    assert!(leases.get_opt(LEASE).await.expect("read").is_none());
}

#[test]
fn the_lease_duration_is_written_in_whole_seconds_rounded_up() {
    let config = |millis| LeaseConfig {
        lease_duration: Duration::from_millis(millis),
        ..LeaseConfig::new(NAMESPACE, LEASE, "a")
    };
    assert_eq!(config(15_000).lease_duration_seconds(), 15);
    assert_eq!(config(1_500).lease_duration_seconds(), 2);
    assert_eq!(
        LeaseConfig::new(NAMESPACE, LEASE, "a").renew_deadline(),
        Duration::from_secs(10)
    );
}
