//! The simulated provider: organisations with teams, seats and members, held in memory and kept in
//! a directory in the data dir, one JSON file per organisation (written to a temp file and renamed,
//! so a crash never leaves half a file), so its state survives a restart of poolkeeper. Used by the
//! demo, the benchmark and tests.
//!
//! Organisations are keyed (and their files named) by the SHA-256 of the credential, so no file
//! holds a credential.
//! Faults can be injected per organisation: a random error rate, a rate limit every N calls, added
//! latency, and a revoked credential.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Account, Invited, Member, MemberStatus, Provider, ProviderError, ProviderFuture, ProviderTeam,
};
use crate::crypto::Credential;

/// Fault injection of one organisation. All off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of calls (0.0-1.0) that fail with a transient error.
    pub error_rate: f64,
    /// Every Nth call is rate limited (0 = never).
    pub rate_limit_every: u64,
    /// The `retry_after` a rate-limited call reports.
    pub retry_after_ms: i64,
    /// Added to every call.
    pub latency_ms: u64,
    /// The credential is rejected as unauthorized.
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimMember {
    pub email: String,
    pub name: String,
    pub status: MemberStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimTeam {
    pub id: String,
    pub name: String,
    pub seats: i64,
    pub members: Vec<SimMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimOrg {
    pub name: String,
    pub owner_email: String,
    pub teams: Vec<SimTeam>,
    #[serde(default)]
    pub faults: Faults,
    /// Calls made with this organisation's credential (drives `rate_limit_every`).
    #[serde(default)]
    pub calls: u64,
    /// Invitations sent (a re-sent invitation to a present address is not counted).
    #[serde(default)]
    pub invites_sent: u64,
    /// Renames done.
    #[serde(default)]
    pub renames: u64,
}

impl SimOrg {
    /// An organisation with one team of `seats` seats whose only member is the owner.
    pub fn new(name: &str, owner_email: &str, seats: i64) -> Self {
        Self {
            name: name.to_string(),
            owner_email: owner_email.to_string(),
            teams: vec![SimTeam {
                id: format!("{name}-team-1"),
                name: format!("{name} team"),
                seats,
                members: vec![SimMember {
                    email: owner_email.to_string(),
                    name: "Owner".into(),
                    status: MemberStatus::Active,
                }],
            }],
            faults: Faults::default(),
            calls: 0,
            invites_sent: 0,
            renames: 0,
        }
    }
}

/// The simulator; one per process, shared by every sim mother. Each organisation is a file of its
/// own in the state directory, so a change rewrites a few hundred bytes, not every organisation.
/// Files are written by one writer thread, in the order the changes were made, so provider calls
/// never block the async runtime on the disk; a call returns once its change is on disk.
pub struct SimProvider {
    dir: PathBuf,
    /// The organisations read so far, by key.
    orgs: Mutex<HashMap<String, SimOrg>>,
    /// The writer thread's queue, started on the first change.
    writer: OnceLock<mpsc::Sender<Write>>,
}

/// One organisation's new state for the writer thread, and who waits for it.
struct Write {
    path: PathBuf,
    bytes: Vec<u8>,
    done: Done,
}

/// Told the outcome of a write. The waiter may have gone (a cancelled call); the state is written
/// all the same.
type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

fn written(result: Option<Result<(), String>>) -> Result<(), ProviderError> {
    match result {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(ProviderError::Transient(e)),
        None => Err(ProviderError::Transient(
            "the simulator's writer stopped".into(),
        )),
    }
}

/// The writer thread: takes what is queued, writes the newest state of each file once, and tells
/// every waiter. Ends when the simulator is dropped.
fn run_writer(dir: PathBuf, queue: mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut newest: HashMap<&PathBuf, &[u8]> = HashMap::new();
        for w in &batch {
            newest.insert(&w.path, &w.bytes);
        }
        let results: HashMap<PathBuf, Result<(), String>> = newest
            .into_iter()
            .map(|(path, bytes)| (path.clone(), write_file(&dir, path, bytes)))
            .collect();
        for w in batch {
            let result = results.get(&w.path).cloned().unwrap_or(Ok(()));
            (w.done)(result);
        }
    }
}

/// Writes to a temporary file and renames it, so a crash never leaves half an organisation.
fn write_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing simulator state {}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn key_of(credential: &Credential) -> String {
    let digest = Sha256::digest(credential.expose().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    // Without randomness the error rate simply never fires.
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

impl SimProvider {
    /// A simulator keeping its organisations in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            orgs: Mutex::new(HashMap::new()),
            writer: OnceLock::new(),
        }
    }

    /// Runs `f` over the organisation of `key` (read from its file on first use). When `f` says
    /// it changed something, the new state is queued for the writer while the lock is still held,
    /// so files are written in the order of the changes, and `done` is told when it is on disk;
    /// the second value says whether it was queued.
    fn with_org<T>(
        &self,
        key: &str,
        done: Done,
        f: impl FnOnce(Option<&mut SimOrg>) -> (bool, Result<T, ProviderError>),
    ) -> Result<(Result<T, ProviderError>, bool), ProviderError> {
        let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        if !orgs.contains_key(key)
            && let Some(org) = self.load(key)?
        {
            orgs.insert(key.to_string(), org);
        }
        let (changed, out) = f(orgs.get_mut(key));
        let queued = match orgs.get(key) {
            Some(org) if changed => {
                self.queue(key, org, done)?;
                true
            }
            _ => false,
        };
        Ok((out, queued))
    }

    /// Queues `org`'s state for the writer thread (started on first use).
    fn queue(&self, key: &str, org: &SimOrg, done: Done) -> Result<(), ProviderError> {
        let bytes = serde_json::to_vec(org)
            .map_err(|e| ProviderError::Permanent(format!("encoding simulator state: {e}")))?;
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let dir = self.dir.clone();
            // Without a thread the receiver is dropped and the send below reports it.
            let _ = std::thread::Builder::new()
                .name("sim-writer".into())
                .spawn(move || run_writer(dir, rx));
            tx
        });
        writer
            .send(Write {
                path: self.path_of(key),
                bytes,
                done,
            })
            .map_err(|_| ProviderError::Transient("the simulator's writer is not running".into()))
    }

    /// `with_org` for callers outside a provider call (setup, tests, the demo): waits in place.
    fn with_org_blocking<T>(
        &self,
        key: &str,
        f: impl FnOnce(Option<&mut SimOrg>) -> (bool, Result<T, ProviderError>),
    ) -> Result<T, ProviderError> {
        let (tx, rx) = mpsc::channel();
        let (out, queued) = self.with_org(key, Box::new(move |r| drop(tx.send(r))), f)?;
        if queued {
            written(rx.recv().ok())?;
        }
        out
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn load(&self, key: &str) -> Result<Option<SimOrg>, ProviderError> {
        let path = self.path_of(key);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ProviderError::Permanent(format!(
                    "simulator state {} is unreadable: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProviderError::Transient(format!(
                "reading simulator state {}: {e}",
                path.display()
            ))),
        }
    }

    /// Creates (or replaces) the organisation reached with `credential`; returns once it is saved.
    pub fn put_org(&self, credential: &Credential, org: SimOrg) -> Result<(), ProviderError> {
        let key = key_of(credential);
        let (tx, rx) = mpsc::channel();
        {
            let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
            self.queue(&key, &org, Box::new(move |r| drop(tx.send(r))))?;
            orgs.insert(key, org);
        }
        written(rx.recv().ok())
    }

    /// The organisation reached with `credential`, as stored.
    pub fn org(&self, credential: &Credential) -> Result<Option<SimOrg>, ProviderError> {
        self.with_org_blocking(&key_of(credential), |org| (false, Ok(org.cloned())))
    }

    /// Changes the organisation reached with `credential`; `NotFound` when there is none.
    pub fn update_org(
        &self,
        credential: &Credential,
        f: impl FnOnce(&mut SimOrg),
    ) -> Result<(), ProviderError> {
        self.with_org_blocking(&key_of(credential), |org| match org {
            Some(org) => {
                f(org);
                (true, Ok(()))
            }
            None => (false, Err(ProviderError::NotFound("organisation".into()))),
        })
    }

    /// One provider call: latency, then faults, then `f` on the organisation.
    async fn call<T>(
        &self,
        credential: &Credential,
        f: impl FnOnce(&mut SimOrg) -> (bool, Result<T, ProviderError>),
    ) -> Result<T, ProviderError> {
        let key = key_of(credential);
        let latency = self.with_org_blocking(&key, |org| {
            (false, Ok(org.map_or(0, |o| o.faults.latency_ms)))
        })?;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (out, queued) = self.with_org(&key, Box::new(move |r| drop(tx.send(r))), |org| {
            let Some(org) = org else {
                return (
                    false,
                    Err(ProviderError::Unauthorized(
                        "the simulator knows no organisation for this credential".into(),
                    )),
                );
            };
            // The call counter lives in memory; it is saved with the next real change.
            org.calls += 1;
            if org.faults.revoked {
                return (
                    false,
                    Err(ProviderError::Unauthorized(
                        "the credential has been revoked".into(),
                    )),
                );
            }
            let every = org.faults.rate_limit_every;
            if every > 0 && org.calls % every == 0 {
                return (
                    false,
                    Err(ProviderError::RateLimited {
                        retry_after_ms: org.faults.retry_after_ms.max(0),
                    }),
                );
            }
            if org.faults.error_rate > 0.0 && random_unit() < org.faults.error_rate {
                return (
                    false,
                    Err(ProviderError::Transient("simulated failure".into())),
                );
            }
            f(org)
        })?;
        if queued {
            written(rx.await.ok())?;
        }
        out
    }
}

fn team_mut<'o>(org: &'o mut SimOrg, team_id: &str) -> Result<&'o mut SimTeam, ProviderError> {
    org.teams
        .iter_mut()
        .find(|t| t.id == team_id)
        .ok_or_else(|| ProviderError::NotFound(format!("team {team_id}")))
}

impl Provider for SimProvider {
    fn identify<'a>(&'a self, credential: &'a Credential) -> ProviderFuture<'a, Account> {
        Box::pin(self.call(credential, |org| {
            (
                false,
                Ok(Account {
                    organisation: org.name.clone(),
                    owner_email: org.owner_email.clone(),
                    seats: Some(org.teams.iter().map(|t| t.seats).sum()),
                }),
            )
        }))
    }

    fn list_teams<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> ProviderFuture<'a, Vec<ProviderTeam>> {
        Box::pin(self.call(credential, |org| {
            let teams = org
                .teams
                .iter()
                .map(|t| ProviderTeam {
                    id: t.id.clone(),
                    name: t.name.clone(),
                })
                .collect();
            (false, Ok(teams))
        }))
    }

    fn rename_team<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        name: &'a str,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(self.call(credential, move |org| {
            if org.teams.iter().any(|t| t.name == name && t.id != team_id) {
                return (
                    false,
                    Err(ProviderError::Conflict(format!(
                        "another team is named {name:?}"
                    ))),
                );
            }
            match team_mut(org, team_id) {
                Ok(team) => {
                    team.name = name.to_string();
                    org.renames += 1;
                    (true, Ok(()))
                }
                Err(e) => (false, Err(e)),
            }
        }))
    }

    fn list_members<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
    ) -> ProviderFuture<'a, Vec<Member>> {
        Box::pin(self.call(credential, move |org| {
            match team_mut(org, team_id) {
                Ok(team) => (
                    false,
                    Ok(team
                        .members
                        .iter()
                        .map(|m| Member {
                            email: m.email.clone(),
                            name: m.name.clone(),
                            status: m.status,
                        })
                        .collect()),
                ),
                Err(e) => (false, Err(e)),
            }
        }))
    }

    fn invite<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        email: &'a str,
        name: &'a str,
    ) -> ProviderFuture<'a, Invited> {
        Box::pin(self.call(credential, move |org| {
            let team = match team_mut(org, team_id) {
                Ok(t) => t,
                Err(e) => return (false, Err(e)),
            };
            if team
                .members
                .iter()
                .any(|m| m.email.eq_ignore_ascii_case(email))
            {
                return (false, Ok(Invited::AlreadyPresent));
            }
            if i64::try_from(team.members.len()).unwrap_or(i64::MAX) >= team.seats {
                return (
                    false,
                    Err(ProviderError::Conflict(format!(
                        "team {team_id} has no free seat"
                    ))),
                );
            }
            team.members.push(SimMember {
                email: email.to_string(),
                name: name.to_string(),
                status: MemberStatus::Invited,
            });
            org.invites_sent += 1;
            (true, Ok(Invited::Sent))
        }))
    }

    fn remove_member<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        email: &'a str,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(
            self.call(credential, move |org| match team_mut(org, team_id) {
                Ok(team) => {
                    let before = team.members.len();
                    team.members
                        .retain(|m| !m.email.eq_ignore_ascii_case(email));
                    (team.members.len() != before, Ok(()))
                }
                Err(e) => (false, Err(e)),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> (tempfile::TempDir, SimProvider) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim");
        (dir, SimProvider::new(path))
    }

    #[tokio::test]
    async fn state_survives_a_new_instance_and_holds_no_credential() {
        let (dir, sim) = sim();
        let cred = Credential::new("tok-secret-123");
        sim.put_org(&cred, SimOrg::new("acme", "owner@acme.test", 3))
            .unwrap();
        sim.invite(&cred, "acme-team-1", "a@x.test", "A")
            .await
            .unwrap();
        let again = SimProvider::new(dir.path().join("sim"));
        let members = again.list_members(&cred, "acme-team-1").await.unwrap();
        assert_eq!(members.len(), 2);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("sim"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            files.len(),
            1,
            "one file per organisation, no temp file: {files:?}"
        );
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("a@x.test"));
        assert!(!text.contains("tok-secret-123"));
        assert!(!files[0].to_string_lossy().contains("tok-secret-123"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_are_all_on_disk_when_their_calls_return() {
        let (dir, sim) = sim();
        let sim = std::sync::Arc::new(sim);
        let cred = Credential::new("c");
        sim.put_org(&cred, SimOrg::new("o", "owner@o.test", 60))
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (sim, cred) = (sim.clone(), cred.clone());
            tasks.push(tokio::spawn(async move {
                sim.invite(&cred, "o-team-1", &format!("k{i}@o.test"), "K")
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Invited::Sent);
        }
        // A fresh instance reads only the file: the last write holds every change.
        let again = SimProvider::new(dir.path().join("sim"));
        let members = again.list_members(&cred, "o-team-1").await.unwrap();
        assert_eq!(members.len(), 51);
        assert_eq!(again.org(&cred).unwrap().unwrap().invites_sent, 50);
    }

    #[tokio::test]
    async fn invite_is_idempotent_and_respects_seats() {
        let (_dir, sim) = sim();
        let cred = Credential::new("c");
        sim.put_org(&cred, SimOrg::new("o", "owner@o.test", 2))
            .unwrap();
        assert_eq!(
            sim.invite(&cred, "o-team-1", "a@o.test", "A")
                .await
                .unwrap(),
            Invited::Sent
        );
        assert_eq!(
            sim.invite(&cred, "o-team-1", "A@o.test", "A")
                .await
                .unwrap(),
            Invited::AlreadyPresent
        );
        assert!(matches!(
            sim.invite(&cred, "o-team-1", "b@o.test", "B").await,
            Err(ProviderError::Conflict(_))
        ));
        assert_eq!(sim.org(&cred).unwrap().unwrap().invites_sent, 1);
    }

    #[tokio::test]
    async fn faults_revoked_unknown_and_rate_limit() {
        let (_dir, sim) = sim();
        let cred = Credential::new("c");
        assert!(matches!(
            sim.identify(&cred).await,
            Err(ProviderError::Unauthorized(_))
        ));
        sim.put_org(&cred, SimOrg::new("o", "owner@o.test", 2))
            .unwrap();
        sim.update_org(&cred, |o| {
            o.faults.rate_limit_every = 2;
            o.faults.retry_after_ms = 70;
        })
        .unwrap();
        assert!(sim.identify(&cred).await.is_ok());
        assert_eq!(
            sim.identify(&cred).await,
            Err(ProviderError::RateLimited { retry_after_ms: 70 })
        );
        assert!(sim.identify(&cred).await.is_ok());
        sim.update_org(&cred, |o| o.faults.revoked = true).unwrap();
        assert!(matches!(
            sim.list_teams(&cred).await,
            Err(ProviderError::Unauthorized(_))
        ));
    }
}
