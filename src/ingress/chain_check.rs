//! Checking uploaded chains without letting one tenant's uploads cost everyone else: every
//! piece of CPU work runs on the blocking pool in a slot of the process's CPU gate (the same
//! slots the worker makes keys in, where the process runs both), granted in fair-share order
//! and charged to the tenant in measured time, as keygen is. No database connection is held
//! meanwhile.
//!
//! The order is the cheap one first: every chain is parsed and checked against its CSR's key
//! and its bounds (microseconds each); if any item fails, the request is refused with every
//! such error and no signature is verified. Then the links the chains share (an intermediate
//! CA under ten thousand leaves) are pooled and checked once each, within a budget of
//! estimated CPU per request ([`budget_micros`]) refused before any of it is spent.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Refused;
use super::limits::BodyReservation;
use crate::crypto::chain::{self, ChainError, LeafFacts, Link, LinkKey, ParsedChain};
use crate::domain::Owner;
use crate::fairshare::{CpuSlots, Lane};

/// One chain to check, and the key (SubjectPublicKeyInfo) of the CSR it was issued for.
pub struct Candidate {
    pub certificate: String,
    pub csr_spki: Arc<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The refused items, by index, all of them (no signature was checked when any of them
    /// failed a cheap check).
    #[error("{} certificate chains were refused", .0.len())]
    Items(Vec<(usize, ChainError)>),
    #[error(
        "verifying these chains would take an estimated {estimated_ms} ms of CPU; a request may take {budget_ms} ms (1 ms per chain, plus 50 ms)"
    )]
    OverBudget { estimated_ms: u64, budget_ms: u64 },
    /// No room in the memory budget now for what the chains parse into (429: retry).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// What the chains parse into could never fit in the memory budget.
    #[error(
        "these certificates take more than {budget_mib} MiB of memory once parsed, more than a bulk upload may hold: send fewer per request"
    )]
    TooLarge { budget_mib: u64 },
    #[error("a chain check did not finish")]
    Panicked(#[from] tokio::task::JoinError),
}

/// Where the memory of what a request's chains parse into is reserved: the request body's
/// reservation, of which `covered` bytes already stand for the parsed chains (a bulk body is
/// charged three times its bytes; by the time its chains are parsed the body itself is gone
/// and each item's text goes as it is parsed, so two of the three are theirs). What parsing
/// takes beyond that (a leaf of a thousand short names holds fifteen times its bytes) is
/// reserved as it is found, before more is parsed: at once if there is room, else by waiting
/// only if no other request is waiting for memory
/// ([`Reservation::grow_holding`](super::memory_budget::Reservation::grow_holding)): two
/// requests that hold memory never wait for each other.
pub struct ParseMemory<'a> {
    pub reservation: &'a mut BodyReservation,
    pub covered: usize,
}

/// A request's parse tasks in flight, stopped when the request ends first.
struct Parsing<T>(std::collections::VecDeque<tokio::task::JoinHandle<T>>);

impl<T> Drop for Parsing<T> {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Slot-sized parse groups of one request in flight at once, at most: what is parsed before
/// its memory is reserved.
const PARSE_AHEAD: usize = 2;

/// Estimated CPU a request's signature checks may take, in microseconds: 1 ms per chain (a
/// leaf signed with P-384, the slowest common CA key, takes 0.5 ms; RSA-8192 with the largest
/// exponent ring takes 0.9 ms) and 50 ms besides, for the CA certificates the chains share (a
/// hundred links of the slowest common kind). Ten thousand leaves under a few intermediates
/// fit; ten thousand ten-certificate chains each of their own do not.
pub fn budget_micros(chains: usize) -> u64 {
    chains as u64 * 1_000 + 50_000
}

/// What one slot's task may hold it for, at most (estimated): short enough that another
/// tenant's single create waits at most this long behind it.
const TASK_MICROS: u64 = crate::fairshare::cpu::TURN.as_micros() as u64;

/// Parsing costs about 16 µs per KiB of PEM (base64, DER, the key-material scan).
fn parse_micros(pem_bytes: usize) -> u64 {
    (pem_bytes as u64 / 64).max(20)
}

#[derive(Clone)]
pub struct ChainChecker {
    cpu: CpuSlots,
}

impl ChainChecker {
    pub fn new(cpu: CpuSlots) -> Self {
        Self { cpu }
    }

    /// Checks every candidate of `owner`'s request; the facts come back in order.
    pub async fn check(
        &self,
        owner: &Owner,
        lane: Lane,
        candidates: Vec<Candidate>,
        now: DateTime<Utc>,
        memory: Option<ParseMemory<'_>>,
    ) -> Result<Vec<LeafFacts>, CheckError> {
        let count = candidates.len();
        let parsed = self.parse_all(owner, lane, candidates, now, memory).await?;
        let mut refused = Vec::new();
        let mut chains = Vec::with_capacity(count);
        for (i, outcome) in parsed.into_iter().enumerate() {
            match outcome {
                Ok(chain) => chains.push(chain),
                Err(e) => refused.push((i, e)),
            }
        }
        if !refused.is_empty() {
            return Err(CheckError::Items(refused));
        }
        let mut unique: HashMap<LinkKey, Link> = HashMap::new();
        let mut pending = Vec::with_capacity(chains.len());
        for chain in chains {
            let (rest, links) = chain.split();
            pending.push(rest);
            for link in links {
                unique.entry(link.key).or_insert(link);
            }
        }
        let estimated: u64 = unique.values().map(|l| u64::from(l.cost_micros)).sum();
        let budget = budget_micros(count);
        if estimated > budget {
            return Err(CheckError::OverBudget {
                estimated_ms: estimated.div_ceil(1000),
                budget_ms: budget / 1000,
            });
        }
        let outcomes = self.verify_all(owner, lane, unique).await?;
        let verified = |key: &LinkKey| outcomes.get(key).copied().unwrap_or(false);
        let mut facts = Vec::with_capacity(count);
        for (i, chain) in pending.into_iter().enumerate() {
            match chain.finish(verified) {
                Ok(f) => facts.push(f),
                Err(e) => refused.push((i, e)),
            }
        }
        if refused.is_empty() {
            Ok(facts)
        } else {
            Err(CheckError::Items(refused))
        }
    }

    /// Every chain parsed and given its cheap checks, in slot-sized groups, in order, a few
    /// groups at a time; what they hold is reserved in `memory` as they come.
    async fn parse_all(
        &self,
        owner: &Owner,
        lane: Lane,
        candidates: Vec<Candidate>,
        now: DateTime<Utc>,
        mut memory: Option<ParseMemory<'_>>,
    ) -> Result<Vec<Result<ParsedChain, ChainError>>, CheckError> {
        let mut groups: Vec<(u64, Vec<Candidate>)> = Vec::new();
        for candidate in candidates {
            let cost = parse_micros(candidate.certificate.len());
            match groups.last_mut() {
                Some((group_cost, group)) if *group_cost + cost <= TASK_MICROS => {
                    *group_cost += cost;
                    group.push(candidate);
                }
                _ => groups.push((cost, vec![candidate])),
            }
        }
        let count = groups.iter().map(|(_, g)| g.len()).sum();
        // Each group parses in a task of its own: it takes a CPU slot, parses and gives the
        // slot back whether or not this loop is polling, so a wait for memory below never
        // holds a slot (with a stream of futures, the next group's slot stayed taken, and its
        // time charged, for as long as the wait).
        let mut groups = groups.into_iter();
        let mut in_flight = Parsing(std::collections::VecDeque::new());
        let mut out = Vec::with_capacity(count);
        let mut held = 0usize;
        loop {
            while in_flight.0.len() < PARSE_AHEAD
                && let Some((cost, group)) = groups.next()
            {
                let (checker, owner) = (self.clone(), owner.clone());
                in_flight.0.push_back(tokio::spawn(async move {
                    checker
                        .in_slot(&owner, lane, cost, move || {
                            group
                                .into_iter()
                                .map(|c| chain::parse_chain(&c.certificate, &c.csr_spki, now))
                                .collect::<Vec<_>>()
                        })
                        .await
                }));
            }
            let Some(next) = in_flight.0.pop_front() else {
                break;
            };
            let group = next.await??;
            if let Some(m) = memory.as_mut() {
                let before = held.max(m.covered);
                held += group
                    .iter()
                    .map(|c| c.as_ref().map_or(0, ParsedChain::heap_bytes))
                    .sum::<usize>();
                if held > before {
                    let budget_mib = m.reservation.capacity() / (1024 * 1024);
                    m.reservation
                        .reserve_more(held - before)
                        .await
                        .map_err(|never| {
                            if never {
                                CheckError::TooLarge { budget_mib }
                            } else {
                                CheckError::Refused(Refused::BatchMemory)
                            }
                        })?;
                }
            }
            out.extend(group);
        }
        Ok(out)
    }

    /// Each link's signature checked once, in slot-sized groups.
    async fn verify_all(
        &self,
        owner: &Owner,
        lane: Lane,
        links: HashMap<LinkKey, Link>,
    ) -> Result<HashMap<LinkKey, bool>, CheckError> {
        let mut groups: Vec<(u64, Vec<Link>)> = Vec::new();
        for link in links.into_values() {
            let cost = u64::from(link.cost_micros);
            match groups.last_mut() {
                Some((group_cost, group)) if *group_cost + cost <= TASK_MICROS => {
                    *group_cost += cost;
                    group.push(link);
                }
                _ => groups.push((cost, vec![link])),
            }
        }
        let tasks = groups.into_iter().map(|(cost, group)| {
            self.in_slot(owner, lane, cost, move || {
                group
                    .into_iter()
                    .map(|link| (link.key, link.verify()))
                    .collect::<Vec<_>>()
            })
        });
        let verified = futures_util::future::try_join_all(tasks).await?;
        Ok(verified.into_iter().flatten().collect())
    }

    /// Runs `work` in one of `owner`'s fair turns on the CPU slots.
    async fn in_slot<T: Send + 'static>(
        &self,
        owner: &Owner,
        lane: Lane,
        estimated_micros: u64,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let estimate = std::time::Duration::from_micros(estimated_micros);
        let (done, took) = self.cpu.run(owner, lane, estimate, work).await?;
        crate::metrics::certificate_check_seconds(took.as_secs_f64());
        Ok(done)
    }

    /// The public keys (SubjectPublicKeyInfo) of the CSRs `pems`, read in a slot; a CSR that
    /// does not parse (csrd's bug) has none, and its items fail the key check.
    pub async fn csr_keys(
        &self,
        owner: &Owner,
        lane: Lane,
        pems: Vec<(uuid::Uuid, String)>,
    ) -> Result<HashMap<uuid::Uuid, Arc<Vec<u8>>>, CheckError> {
        let estimate = pems.iter().map(|(_, p)| parse_micros(p.len())).sum();
        Ok(self
            .in_slot(owner, lane, estimate, move || {
                pems.into_iter()
                    .filter_map(|(id, pem)| {
                        chain::csr_public_key(&pem).ok().map(|k| (id, Arc::new(k)))
                    })
                    .collect()
            })
            .await?)
    }
}
